# multibackend — developer entry points. `make demo` and `make test` work on a fresh machine with
# only Python 3.11+: the virtualenv is bootstrapped here with pip from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
# Package folders only: an editable install leaves multibackend_*.egg-info beside them.
PLUGIN_PKGS := $(patsubst %/__init__.py,%,$(wildcard plugins/*/multibackend_*/__init__.py))
MYPYPATH := $(subst $(eval) ,:,$(patsubst %/,%,$(PLUGINS)))

.PHONY: install demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach p,$(PLUGINS),-e $(p))
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/multibackend demo

lint: $(STAMP)
	$(BIN)/ruff check multibackend plugins tests benchmarks scripts
	$(BIN)/ruff format --check multibackend plugins tests benchmarks scripts

typecheck: $(STAMP)
	MYPYPATH=$(MYPYPATH) $(BIN)/mypy --strict multibackend $(PLUGIN_PKGS)

# Tests start their own services: the emulator in-process, PostgreSQL as a throwaway cluster.
pytest: $(STAMP)
	XDG_CACHE_HOME=$$(mktemp -d) scripts/with-postgres $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
