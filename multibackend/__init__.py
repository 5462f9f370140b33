"""multibackend: one async interface over a legacy SQL database and the StreamSource API.

The public API is re-exported here; ``tests/test_public_api.py`` pins ``__all__``.
"""

from multibackend.backend import (
    BaseBackend,
    BulkImportResult,
    BulkItemError,
    Capability,
    ExportResult,
    Health,
    StreamAnalytics,
    StreamBackend,
)
from multibackend.config import Config, build_backends, load_config
from multibackend.errors import (
    AuthenticationFailed,
    BackendError,
    ConfigError,
    Conflict,
    FeatureUnavailable,
    MultibackendError,
    NotFound,
    PermissionDenied,
    PluginError,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from multibackend.manager import BackendManager, DualWriteFailed, SyncStatus
from multibackend.model import (
    UNSET,
    Kind,
    Orientation,
    Page,
    Platform,
    Role,
    Sort,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
    User,
)
from multibackend.registry import PluginInfo, available_plugins, load_backend

__version__ = "0.1.0"

__all__ = [
    "UNSET",
    "AuthenticationFailed",
    "BackendError",
    "BackendManager",
    "BaseBackend",
    "BulkImportResult",
    "BulkItemError",
    "Capability",
    "Config",
    "ConfigError",
    "Conflict",
    "DualWriteFailed",
    "ExportResult",
    "FeatureUnavailable",
    "Health",
    "Kind",
    "MultibackendError",
    "NotFound",
    "Orientation",
    "Page",
    "PermissionDenied",
    "Platform",
    "PluginError",
    "PluginInfo",
    "RateLimited",
    "Role",
    "Sort",
    "Stream",
    "StreamAnalytics",
    "StreamBackend",
    "StreamDraft",
    "StreamId",
    "StreamPatch",
    "StreamQuery",
    "StreamStatus",
    "SyncStatus",
    "Unavailable",
    "User",
    "ValidationFailed",
    "__version__",
    "available_plugins",
    "build_backends",
    "load_backend",
    "load_config",
]
