"""Test kit for backends and their users: the conformance suite and fault injection.

* :class:`~multibackend.testing.conformance.BackendConformance` — subclass it in a test module
  with a ``backend`` fixture to run the protocol's conformance suite (needs pytest);
* :class:`~multibackend.testing.faulty.FaultyBackend` — wrap a backend to inject failures,
  throttling and latency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multibackend.testing.faulty import Fault, FaultyBackend

try:
    import pytest
except ImportError:  # pragma: no cover - the fault injector works without pytest
    pass
else:
    # The suite's assertions live in a library module, which pytest does not rewrite unless
    # asked before it is imported: without this a plugin author's failures would read as a bare
    # AssertionError instead of showing the values compared.
    pytest.register_assert_rewrite("multibackend.testing.conformance")

if TYPE_CHECKING:
    from multibackend.testing.conformance import BackendConformance

__all__ = ["BackendConformance", "Fault", "FaultyBackend"]


def __getattr__(name: str) -> Any:
    # Imported on demand: the suite needs pytest, the fault injector does not.
    if name == "BackendConformance":
        from multibackend.testing.conformance import BackendConformance

        return BackendConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
