"""multibackend-memory: an in-memory backend with the StreamSource server's semantics."""

from multibackend_memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
