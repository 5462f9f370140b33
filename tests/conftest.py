"""Fixtures shared by the tests under tests/.

``test_plugins`` makes the plugin distributions under ``tests/plugins/`` (an example third-party
plugin, a deliberately broken one, and two that register the same name) installed for the test
that asks for it. They are built and installed with pip once per session, into a fresh folder of
the session's temporary directory rather than into the venv: nothing is left behind for later
runs or for ``make demo``, and no test depends on what a previous run installed. The folder is put
on ``sys.path`` only for the requesting test, so every other test sees the venv as it is.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_PLUGINS_SRC = Path(__file__).parent / "plugins"
#: Distribution folders under tests/plugins/ that the fixture installs.
TEST_PLUGIN_DISTS = ("example", "broken", "dup_one", "dup_two")


@pytest.fixture(scope="session")
def test_plugins_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the test plugin distributions, installed by pip (once per session)."""
    work = tmp_path_factory.mktemp("test-plugins")
    sources = []
    for dist in TEST_PLUGIN_DISTS:
        # Build from a copy so the source tree gets no build/ or *.egg-info droppings.
        copy = work / "src" / dist
        shutil.copytree(
            TEST_PLUGINS_SRC / dist,
            copy,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
        sources.append(str(copy))
    site = work / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            *sources,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"pip could not install the test plugins:\n{done.stdout}\n{done.stderr}")
    return site


@pytest.fixture
def test_plugins(test_plugins_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Make the test plugin distributions visible to entry point discovery for this test."""
    monkeypatch.syspath_prepend(str(test_plugins_site))  # also invalidates import caches
    yield test_plugins_site
    # Forget modules imported from the folder, so later tests cannot reach them by accident.
    prefix = str(test_plugins_site)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]
    importlib.invalidate_caches()
