"""Root pytest configuration, shared by tests/ and plugins/*/tests/.

Shared fixture modules live in ``multibackend.testing`` and are registered here.
"""

pytest_plugins: list[str] = ["multibackend.testing.postgres"]
