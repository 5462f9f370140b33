"""The public API is exactly what ``multibackend.__all__`` lists; changing it is deliberate."""

from __future__ import annotations

import multibackend

EXPECTED = {
    # model
    "Kind",
    "Orientation",
    "Page",
    "Platform",
    "Role",
    "Sort",
    "Stream",
    "StreamDraft",
    "StreamId",
    "StreamPatch",
    "StreamQuery",
    "StreamStatus",
    "UNSET",
    "User",
    # protocol
    "BaseBackend",
    "BulkImportResult",
    "BulkItemError",
    "Capability",
    "ExportResult",
    "Health",
    "StreamAnalytics",
    "StreamBackend",
    # errors
    "AuthenticationFailed",
    "BackendError",
    "ConfigError",
    "Conflict",
    "FeatureUnavailable",
    "MultibackendError",
    "NotFound",
    "PermissionDenied",
    "PluginError",
    "RateLimited",
    "Unavailable",
    "ValidationFailed",
    # the manager
    "BackendManager",
    "DualWriteFailed",
    "SyncStatus",
    # migration tools
    "PHASES",
    "Backfill",
    "BackfillResult",
    "Cutover",
    "CutoverOutcome",
    "CutoverPolicy",
    "CutoverState",
    "Difference",
    "FieldDiff",
    "ShadowReader",
    "ShadowReport",
    "ShadowStats",
    "Verifier",
    "VerifyResult",
    "WriteFenced",
    "shadow_report",
    # configuration and plugins
    "Config",
    "PluginInfo",
    "available_plugins",
    "build_backends",
    "load_backend",
    "load_config",
    "__version__",
}


def test_all_is_pinned() -> None:
    assert set(multibackend.__all__) == EXPECTED
    assert len(multibackend.__all__) == len(EXPECTED)


def test_every_name_is_importable() -> None:
    for name in multibackend.__all__:
        assert getattr(multibackend, name) is not None, name


def test_reexports_are_the_originals() -> None:
    from multibackend import config, errors, model, registry

    assert multibackend.load_config is config.load_config
    assert multibackend.load_backend is registry.load_backend
    assert multibackend.available_plugins is registry.available_plugins
    assert multibackend.UNSET is model.UNSET
    assert multibackend.ValidationFailed is errors.ValidationFailed
