"""Every example under config/ loads and validates, with and without its environment set."""

from __future__ import annotations

from pathlib import Path

import pytest

from multibackend.config import build_backends, load_config

EXAMPLES = sorted((Path(__file__).parent.parent / "config").glob("*.toml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_loads_and_builds(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(path)
    assert config.manager is not None
    backends = build_backends(config)
    assert set(backends) == set(config.backends)
    assert config.manager.primary in backends
    # Secrets come from the environment, not the file.
    monkeypatch.setenv("STREAMSOURCE_PASSWORD", "s3cret-from-env")
    monkeypatch.setenv("STREAMSOURCE_TOKEN", "t0ken-from-env")
    again = load_config(path)
    assert "s3cret-from-env" not in repr(again)
    assert "t0ken-from-env" not in repr(again)
    text = path.read_text()
    assert "s3cret" not in text
