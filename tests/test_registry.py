"""Plugin discovery and loading through the ``multibackend.backends`` entry points."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from multibackend.backend import Capability, StreamBackend
from multibackend.errors import ConfigError, PluginError
from multibackend.model import StreamDraft
from multibackend.registry import available_plugins, load_backend, plugin_class


def by_name(name: str) -> list:  # type: ignore[type-arg]
    return [info for info in available_plugins() if info.name == name]


def test_memory_plugin_is_listed_with_its_distribution_and_capabilities() -> None:
    (info,) = by_name("memory")
    assert info.ok
    assert info.error is None
    assert info.distribution == "multibackend-memory"
    assert info.version == "0.1.0"
    assert info.target == "multibackend_memory:MemoryBackend"
    assert info.backend_class is not None
    assert info.backend_class.__name__ == "MemoryBackend"
    assert {Capability.PIN, Capability.BULK_IMPORT, Capability.EXPORT} <= info.capabilities


async def test_load_backend_names_the_backend_after_the_plugin_by_default() -> None:
    backend = load_backend("memory")
    assert isinstance(backend, StreamBackend)
    assert backend.name == "memory"
    async with backend:
        stream = await backend.create_stream(StreamDraft(source="a", link="https://x.test/a"))
        assert (await backend.get_stream(stream.id)).source == "a"


async def test_load_backend_binds_options_and_uses_the_configured_name() -> None:
    backend = load_backend("memory", name="scratch", owner_email="owner@example.test")
    assert backend.name == "scratch"
    async with backend:
        stream = await backend.create_stream(StreamDraft(source="a", link="https://x.test/a"))
    assert stream.posted_by == "owner@example.test"


def test_unknown_option_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_backend("memory", name="scratch", colour="blue")
    assert info.value.key == "backends.scratch.colour"
    assert "owner_email" in str(info.value)  # the message lists what is accepted


def test_option_of_the_wrong_type_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_backend("memory", owner_id="seven")
    assert info.value.key == "backends.memory.owner_id"


def test_unknown_plugin_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError) as info:
        plugin_class("memroy")
    message = str(info.value)
    assert "'memroy' is not an installed plugin" in message
    assert "memory" in message.split("installed:")[1]
    assert info.value.plugin == "memroy"
    assert info.value.traceback is None


def test_plugins_are_sorted_by_name(test_plugins: Path) -> None:
    names = [info.name for info in available_plugins()]
    assert names == sorted(names)
    assert {"broken", "example", "memory", "not-a-backend", "twin"} <= set(names)


def test_broken_plugin_is_listed_with_its_traceback_while_others_load(
    test_plugins: Path,
) -> None:
    (broken,) = by_name("broken")
    assert not broken.ok
    assert broken.backend_class is None
    assert broken.capabilities == frozenset()
    assert broken.distribution == "multibackend-broken"
    assert broken.version == "0.0.1"
    assert broken.error is not None
    assert broken.error.startswith("Traceback (most recent call last):")
    assert "_load_driver" in broken.error  # the frame inside the plugin is kept
    assert "RuntimeError: multibackend-broken is broken on purpose" in broken.error
    for name in ("memory", "example"):
        (info,) = by_name(name)
        assert info.ok, info.error


def test_plugin_class_of_a_broken_plugin_raises_with_the_traceback(test_plugins: Path) -> None:
    with pytest.raises(PluginError) as info:
        plugin_class("broken")
    error = info.value
    assert error.plugin == "broken"
    assert "multibackend-broken 0.0.1" in str(error)
    assert "broken on purpose" in str(error)
    assert error.traceback is not None
    assert "_load_driver" in error.traceback
    with pytest.raises(PluginError):
        load_backend("broken")


def test_target_that_is_not_a_backend_class_is_reported(test_plugins: Path) -> None:
    (info,) = by_name("not-a-backend")
    assert not info.ok
    assert info.error is not None
    assert "not a subclass of multibackend.backend.BaseBackend" in info.error
    with pytest.raises(PluginError, match="BaseBackend"):
        plugin_class("not-a-backend")


def test_name_registered_by_two_distributions_is_reported_not_resolved(
    test_plugins: Path,
) -> None:
    twins = by_name("twin")
    assert [t.distribution for t in twins] == ["multibackend-dup-one", "multibackend-dup-two"]
    for twin in twins:
        assert not twin.ok
        assert twin.error is not None
        assert "multibackend-dup-one" in twin.error
        assert "multibackend-dup-two" in twin.error
    with pytest.raises(PluginError) as info:
        plugin_class("twin")
    assert "multibackend-dup-one 0.0.1 (multibackend_dup_one:TwinBackend)" in str(info.value)
    assert "multibackend-dup-two 0.0.1 (multibackend_dup_two:TwinBackend)" in str(info.value)
    # Neither side of the clash was imported: the registry did not pick one.
    assert "multibackend_dup_one" not in sys.modules
    assert "multibackend_dup_two" not in sys.modules


async def test_third_party_plugin_is_discovered_and_built(test_plugins: Path) -> None:
    (info,) = by_name("example")
    assert (info.distribution, info.version) == ("multibackend-example", "1.0.0")
    assert info.capabilities == frozenset({Capability.PIN})
    backend = load_backend("example", name="side", id_prefix="side-")
    async with backend:
        stream = await backend.create_stream(StreamDraft(source="a", link="https://x.test/a"))
    assert stream.id == "side-000001"


def test_plugins_installed_while_running_are_seen_on_the_next_call(
    test_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = str(test_plugins)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != site])
    importlib.invalidate_caches()
    assert by_name("example") == []
    monkeypatch.setattr(sys, "path", [site, *sys.path])
    importlib.invalidate_caches()
    assert [info.ok for info in by_name("example")] == [True]


@pytest.mark.parametrize(
    ("name", "last_line"),
    [
        ("asserting", "AssertionError: multibackend_asserting: configuration check failed"),
        ("exiting", "SystemExit: multibackend_exiting: gave up on purpose"),
    ],
)
def test_plugins_asserting_or_exiting_at_import_do_not_abort_discovery(
    test_plugins: Path, name: str, last_line: str
) -> None:
    (info,) = by_name(name)
    assert not info.ok
    assert info.error is not None
    assert info.error.splitlines()[-1].startswith(last_line)
    assert "_LoadFailed" not in info.error  # the plugin's own failure, not our wrapper
    with pytest.raises(PluginError) as raised:
        plugin_class(name)
    assert raised.value.traceback == info.error
    (memory,) = by_name("memory")
    assert memory.ok


def test_loading_one_plugin_does_not_import_the_others(test_plugins: Path) -> None:
    assert plugin_class("example").__name__ == "DictBackend"
    assert "multibackend_not_a_backend" not in sys.modules
    with pytest.raises(PluginError) as info:
        plugin_class("nope")
    assert "broken" in str(info.value)  # listed as installed, though it cannot load
