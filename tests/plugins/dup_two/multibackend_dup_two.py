"""Half of a name clash: registers "twin" like multibackend-dup-one does."""

from multibackend_memory import MemoryBackend


class TwinBackend(MemoryBackend):
    pass
