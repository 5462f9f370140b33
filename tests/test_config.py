"""Configuration loading: every kind of mistake is a ConfigError that names the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from multibackend.config import (
    Config,
    JournalSettings,
    ManagerSettings,
    SyncSettings,
    accepted_keys,
    build_backends,
    load_config,
    resolve_sqlite_url,
)
from multibackend.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "multibackend.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def error_for(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return info.value


TWO = """
[backends.a]
plugin = "memory"
[backends.b]
plugin = "memory"
"""


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[backends.main]\nplugin = "memory"\n')
    assert list(config.backends) == ["main"]
    assert config.backends["main"].plugin == "memory"
    assert config.manager is None
    assert config.sync == SyncSettings()
    assert config.sync.max_attempts == 12
    assert config.sync.backoff_cap == 300.0
    assert config.sync.batch_size == 200
    # The default journal lives next to the configuration file, not in the working directory.
    assert config.journal.url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'journal.db'}"
    assert config.path == tmp_path / "multibackend.toml"


def test_full_file(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        TWO
        + """
        [manager]
        primary = "a"
        secondaries = ["b"]
        on_secondary_failure = "inline"
        read_from = "b"
        worker = "external"
        [journal]
        url = "postgresql+asyncpg://db.example/journal"
        [sync]
        max_attempts = 3
        backoff_base = 0.5
        backoff_cap = 10
        batch_size = 50
        """,
    )
    assert config.manager == ManagerSettings(
        primary="a",
        secondaries=("b",),
        on_secondary_failure="inline",
        read_from="b",
        worker="external",
    )
    assert config.journal == JournalSettings(url="postgresql+asyncpg://db.example/journal")
    assert config.sync == SyncSettings(
        max_attempts=3, backoff_base=0.5, backoff_cap=10.0, batch_size=50
    )


def test_mapping_input_resolves_against_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(
        {"backends": {"m": {"plugin": "memory"}}, "journal": {"url": "sqlite:///j.db"}}
    )
    assert config.path is None
    assert config.journal.url == f"sqlite:///{tmp_path.resolve() / 'j.db'}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///data/j.db", "sqlite+aiosqlite:///{base}/data/j.db"),
        ("sqlite:///j.db?mode=ro", "sqlite:///{base}/j.db?mode=ro"),
        ("sqlite+aiosqlite:////abs/j.db", "sqlite+aiosqlite:////abs/j.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
    ],
)
def test_relative_sqlite_urls_resolve_against_the_config_folder(
    tmp_path: Path, url: str, expected: str
) -> None:
    assert resolve_sqlite_url(url, tmp_path) == expected.format(base=tmp_path.resolve())


# --- mistakes ---------------------------------------------------------------------------------


def test_unknown_section(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[backends.m]\nplugin = "memory"\n[mananger]\nprimary = "m"\n')
    assert err.key == "mananger"
    assert "unknown section" in str(err)
    assert "manager" in str(err)  # lists what is accepted


def test_unknown_key_in_core_section(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[backends.m]\nplugin = "memory"\n[sync]\nmax_attempt = 3\n')
    assert err.key == "sync.max_attempt"
    assert str(err).startswith("sync.max_attempt: unknown option")
    assert "max_attempts" in str(err)


def test_unknown_plugin_option(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[backends.m]\nplugin = "memory"\ncolour = "blue"\n')
    assert err.key == "backends.m.colour"
    assert "unknown option" in str(err)


def test_unknown_plugin_lists_installed(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[backends.legacy]\nplugin = "sqll"\n')
    assert err.key == "backends.legacy.plugin"
    assert str(err).startswith("backends.legacy.plugin: 'sqll' is not an installed plugin")
    assert "installed: " in str(err)
    assert "memory" in str(err)


def test_missing_plugin_key(tmp_path: Path) -> None:
    err = error_for(tmp_path, "[backends.legacy]\n")
    assert err.key == "backends.legacy.plugin"
    assert "required" in str(err)


def test_plugin_not_a_string(tmp_path: Path) -> None:
    err = error_for(tmp_path, "[backends.legacy]\nplugin = 3\n")
    assert err.key == "backends.legacy.plugin"
    assert "expected a string" in str(err)


def test_no_backends(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[journal]\nurl = "sqlite:///j.db"\n')
    assert err.key == "backends"
    assert "[backends.NAME]" in str(err)


def test_backend_not_a_table(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[backends]\nm = "memory"\n')
    assert err.key == "backends.m"


@pytest.mark.parametrize(
    ("section", "expected_key", "expected_text"),
    [
        ("[sync]\nmax_attempts = 'many'\n", "sync.max_attempts", "expected an integer, got 'many'"),
        ("[sync]\nbackoff_base = true\n", "sync.backoff_base", "expected a number"),
        ("[sync]\nbatch_size = 0\n", "sync.batch_size", "must be greater than 0"),
        ("[sync]\nbackoff_cap = -1.5\n", "sync.backoff_cap", "must be greater than 0"),
        (
            "[sync]\nbackoff_base = 5\nbackoff_cap = 1\n",
            "sync.backoff_cap",
            "at least backoff_base",
        ),
        ("[journal]\nurl = 5\n", "journal.url", "expected a string"),
        ("[journal]\nurl = ''\n", "journal.url", "must not be empty"),
        ("[manager]\nsecondaries = ['b']\n", "manager.primary", "is required"),
        ("[manager]\nprimary = 'c'\n", "manager.primary", "'c' is not a configured backend"),
        ("[manager]\nprimary = 'a'\nsecondaries = 'b'\n", "manager.secondaries", "expected a list"),
        (
            "[manager]\nprimary = 'a'\nsecondaries = ['x']\n",
            "manager.secondaries",
            "'x' is not a configured backend (configured: a, b)",
        ),
        (
            "[manager]\nprimary = 'a'\nsecondaries = ['a']\n",
            "manager.secondaries",
            "cannot also be a secondary",
        ),
        (
            "[manager]\nprimary = 'a'\nsecondaries = ['b', 'b']\n",
            "manager.secondaries",
            "listed twice",
        ),
        (
            "[manager]\nprimary = 'a'\non_secondary_failure = 'ignore'\n",
            "manager.on_secondary_failure",
            "one of 'journal', 'inline', 'fail'",
        ),
        (
            "[manager]\nprimary = 'a'\nread_from = 'z'\n",
            "manager.read_from",
            "expected 'primary' or a configured backend",
        ),
        (
            "[manager]\nprimary = 'a'\nworker = 'thread'\n",
            "manager.worker",
            "one of 'embedded', 'external'",
        ),
        ("manager = 3\n", "manager", "expected a table"),
    ],
)
def test_section_mistakes_name_the_key(
    tmp_path: Path, section: str, expected_key: str, expected_text: str
) -> None:
    # Top-level keys must come before the tables in TOML.
    text = section + TWO if not section.startswith("[") else TWO + section
    err = error_for(tmp_path, text)
    assert err.key == expected_key, str(err)
    assert str(err).startswith(f"{expected_key}: ")
    assert expected_text in str(err)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[backends.m]\nplugin = "memory"\n\n[sync]\nmax_attempts = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:5: invalid TOML")
    assert "line 5" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


# --- interpolation ----------------------------------------------------------------------------


def test_interpolation_with_and_without_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_JOURNAL_DB", "set.db")
    monkeypatch.delenv("MB_UNSET_VAR", raising=False)
    config = load_text(
        tmp_path,
        """
        [backends.m]
        plugin = "${MB_PLUGIN:-memory}"
        [journal]
        url = "sqlite:///${MB_JOURNAL_DB}"
        [manager]
        primary = "${MB_UNSET_VAR:-m}"
        """,
    )
    assert config.backends["m"].plugin == "memory"
    assert config.journal.url == f"sqlite:///{tmp_path.resolve() / 'set.db'}"
    assert config.manager is not None
    assert config.manager.primary == "m"


def test_empty_variable_takes_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_EMPTY", "")
    config = load_text(tmp_path, '[backends.m]\nplugin = "${MB_EMPTY:-memory}"\n')
    assert config.backends["m"].plugin == "memory"


def test_dollar_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, '[backends.m]\nplugin = "memory"\n[journal]\nurl = "postgresql://h/$${x}"\n'
    )
    assert config.journal.url == "postgresql://h/${x}"


def test_missing_variable_names_key_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MB_NOT_SET", raising=False)
    err = error_for(tmp_path, '[backends.m]\nplugin = "memory"\n[journal]\nurl = "${MB_NOT_SET}"\n')
    assert err.key == "journal.url"
    assert "MB_NOT_SET is not set" in str(err)


def test_bad_variable_reference(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[backends.m]\nplugin = "memory"\n[journal]\nurl = "${1BAD}"\n')
    assert err.key == "journal.url"
    assert "not a valid variable reference" in str(err)


def test_values_from_the_environment_are_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_SECRET_PRIMARY", "hunter2-very-secret")
    err = error_for(tmp_path, TWO + '[manager]\nprimary = "${MB_SECRET_PRIMARY}"\n')
    assert err.key == "manager.primary"
    assert "hunter2" not in str(err)
    assert "${MB_SECRET_PRIMARY}" in str(err)


def test_plugin_option_from_the_environment_is_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_OWNER_ID", "s3cr3t-value")
    err = error_for(tmp_path, '[backends.m]\nplugin = "memory"\nowner_id = "${MB_OWNER_ID}"\n')
    assert err.key == "backends.m.owner_id"
    assert "expected an integer" in str(err)
    assert "s3cr3t" not in str(err)


# --- extensibility ----------------------------------------------------------------------------


def test_accepted_keys_enumerates_core_sections() -> None:
    keys = accepted_keys()
    assert keys[0] == "backends.<name>.plugin"
    for key in (
        "manager.primary",
        "manager.secondaries",
        "manager.on_secondary_failure",
        "manager.read_from",
        "manager.worker",
        "journal.url",
        "sync.max_attempts",
        "sync.backoff_base",
        "sync.backoff_cap",
        "sync.batch_size",
    ):
        assert key in keys
    assert len(keys) == len(set(keys))


def test_build_backends_gives_unopened_backends_by_name(tmp_path: Path) -> None:
    config = load_text(tmp_path, TWO)
    backends = build_backends(config)
    assert sorted(backends) == ["a", "b"]
    assert backends["a"].name == "a"
    assert backends["b"].name == "b"


def test_a_new_section_is_one_class_and_one_decorator(tmp_path: Path) -> None:
    import attrs

    from multibackend import config as config_module

    @config_module.section("shadowtest")
    @attrs.frozen(kw_only=True)
    class ShadowSettings:
        sample_rate: float = 0.1

    try:
        assert "shadowtest.sample_rate" in accepted_keys()
        loaded = load_text(
            tmp_path, '[backends.m]\nplugin = "memory"\n[shadowtest]\nsample_rate = 0.5\n'
        )
        assert loaded.section("shadowtest") == ShadowSettings(sample_rate=0.5)
        err = error_for(tmp_path, '[backends.m]\nplugin = "memory"\n[shadowtest]\nrate = 1\n')
        assert err.key == "shadowtest.rate"
    finally:
        config_module._SECTIONS.pop("shadowtest")


def test_configuration_reference_documents_every_key() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in accepted_keys() if f"`{key}`" not in doc]
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_plugin_path_options_and_sqlite_urls_resolve_against_the_config_folder(
    tmp_path: Path,
) -> None:
    import attrs

    from multibackend.config import PATH_OPTION, _resolve_paths

    @attrs.frozen(kw_only=True)
    class Options:
        url: str = "sqlite:///default.db"
        data_file: str | None = attrs.field(default=None, metadata=PATH_OPTION)
        label: str = ""

    resolved = _resolve_paths(
        Options,
        {"url": "sqlite+aiosqlite:///legacy.db", "data_file": "data/s.json", "label": "a.json"},
        tmp_path,
    )
    assert resolved == {
        "url": f"sqlite+aiosqlite:///{tmp_path.resolve() / 'legacy.db'}",
        "data_file": str(tmp_path.resolve() / "data" / "s.json"),
        "label": "a.json",  # not declared a path: left alone
    }


def test_memory_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[backends.m]\nplugin = "memory"\npath = "data/streams.json"\n')
    assert config.backends["m"].options["path"] == str(tmp_path.resolve() / "data" / "streams.json")


def test_repr_does_not_show_option_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_OWNER", "very-private@example.test")
    config = load_text(tmp_path, '[backends.m]\nplugin = "memory"\nowner_email = "${MB_OWNER}"\n')
    assert config.backends["m"].options["owner_email"] == "very-private@example.test"
    assert "very-private" not in repr(config)


# --- plugin options: every kind of mistake, through load_config and build_backends (issue 8) ---

SS = '[backends.ss]\nplugin = "streamsource"\nbase_url = "https://ss.example"\n'
SQL = '[backends.db]\nplugin = "sql"\nurl = "sqlite:///x.db"\n'


@pytest.mark.parametrize(
    ("text", "expected_key"),
    [
        # streamsource: types, ranges, shapes, pairs that go together
        (SS + 'email = "a@b.c"\npassword = "p"\ntimeout = "soon"\n', "backends.ss.timeout"),
        (SS + 'email = "a@b.c"\npassword = "p"\ntimeout = 0\n', "backends.ss.timeout"),
        (SS + 'email = "a@b.c"\npassword = "p"\nper_page = 101\n', "backends.ss.per_page"),
        (SS + 'email = "a@b.c"\npassword = "p"\nverify_tls = "no"\n', "backends.ss.verify_tls"),
        (SS + 'email = "a@b.c"\npassword = "p"\nmax_retries = -1\n', "backends.ss.max_retries"),
        (SS + 'email = ["a@b.c"]\npassword = "p"\n', "backends.ss.email"),
        (SS + 'email = "a@b.c"\n', "backends.ss"),  # password missing: the pair's table
        (SS + 'token = "t"\nrate_limit_requests = 5\n', "backends.ss"),
        ('[backends.ss]\nplugin = "streamsource"\ntoken = "t"\n', "backends.ss.base_url"),
        (
            '[backends.ss]\nplugin = "streamsource"\nbase_url = "ftp://x"\ntoken = "t"\n',
            "backends.ss.base_url",
        ),
        (
            '[backends.ss]\nplugin = "streamsource"\nbase_url = "https://x?a=1"\ntoken = "t"\n',
            "backends.ss.base_url",
        ),
        (SS + 'token = "t"\n[backends.ss.extra]\nx = 1\n', "backends.ss.extra"),
        # sql: enums, nested tables, identifiers, URLs
        (SQL + 'schema = "oracle"\n', "backends.db.schema"),
        (SQL + 'delete = "shred"\n', "backends.db.delete"),
        (SQL + 'columns = { is_archived = false }\ndelete = "soft"\n', "backends.db.delete"),
        (SQL + "create_schema = 1\n", "backends.db.create_schema"),
        (SQL + "busy_timeout_ms = 1.5\n", "backends.db.busy_timeout_ms"),
        (SQL + 'columns = "id"\n', "backends.db.columns"),
        (SQL + 'columns = { colour = "c" }\n', "backends.db.columns.colour"),
        (SQL + 'columns = { title = "" }\n', "backends.db.columns.title"),
        (SQL + 'columns = { title = "a", notes = "a" }\n', "backends.db.columns"),
        (SQL + 'table = "bad\\nname"\n', "backends.db.table"),
        ('[backends.db]\nplugin = "sql"\nurl = "mysql://x/y"\n', "backends.db.url"),
        ('[backends.db]\nplugin = "sql"\nurl = "::not a url::"\n', "backends.db.url"),
        ('[backends.db]\nplugin = "sql"\n', "backends.db.url"),
        # memory
        ('[backends.m]\nplugin = "memory"\npath = 5\n', "backends.m.path"),
    ],
)
def test_plugin_option_mistakes_name_the_key(tmp_path: Path, text: str, expected_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_backends(load_text(tmp_path, text))
    err = info.value
    assert err.key is not None
    assert err.key == expected_key or err.key.startswith(expected_key + "."), str(err)
    assert str(err).startswith(f"{err.key}: "), str(err)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe[backends.a]\n",  # not UTF-8
        b"[backends.a]\nplugin = 'memory'\nplugin = 'memory'\n",  # duplicate key
        b"[backends.a]\nplugin = 'memory'\n[backends.a]\n",  # duplicate table
        b"[backends.a\nplugin = 'memory'\n",  # unclosed header
        b'[backends.a]\nplugin = "memory\n',  # unclosed string
    ],
)
def test_unreadable_files_are_config_errors_naming_the_file(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "multibackend.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "multibackend.toml" in str(info.value)


def test_configuration_reference_documents_every_builtin_plugin_option_and_no_other() -> None:
    """Each built-in plugin's options appear in its table of docs/configuration.md, and every
    option a table names is accepted by that plugin."""
    import re

    from multibackend.options import option_names
    from multibackend.registry import plugin_class

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for plugin in ("memory", "sql", "streamsource"):
        heading = f"Options of the built-in `{plugin}` plugin"
        assert heading in doc, heading
        section = doc.split(heading, 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
        documented = set(re.findall(r"^\| `([a-z_]+)` \|", "|" + section, re.M))
        accepted = set(option_names(plugin_class(plugin).Options))
        assert documented == accepted, (plugin, documented ^ accepted)


def test_every_documented_core_key_is_accepted() -> None:
    import re

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", doc, re.M))
    assert documented
    assert documented <= set(accepted_keys())
