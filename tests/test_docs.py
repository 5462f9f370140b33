"""The documentation quotes real code and states the real setup; these keep it honest."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def code_blocks(path: Path) -> list[str]:
    return code_blocks_of(path.read_text(encoding="utf-8"))


def test_plugin_guide_quotes_the_example_plugin_verbatim() -> None:
    blocks = code_blocks(ROOT / "docs" / "plugin-authors.md")
    example = ROOT / "tests" / "plugins" / "example"
    source = (example / "multibackend_example" / "__init__.py").read_text(encoding="utf-8")
    pyproject = (example / "pyproject.toml").read_text(encoding="utf-8")
    assert source in blocks
    assert pyproject in blocks


def test_plugin_guide_quotes_the_example_conformance_test() -> None:
    blocks = code_blocks(ROOT / "docs" / "plugin-authors.md")
    test = (ROOT / "tests" / "plugins" / "test_example_plugin.py").read_text(encoding="utf-8")
    quoted = next(b for b in blocks if "class TestExamplePluginConformance" in b)
    assert quoted.strip() in test


def test_readme_setup_is_exactly_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Setup", 1)[1].split("##", 1)[0]
    (block,) = code_blocks_of(setup)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def code_blocks_of(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)]


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), target


def test_links_between_the_docs_resolve() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
