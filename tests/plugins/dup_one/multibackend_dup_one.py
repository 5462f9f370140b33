"""Half of a name clash: registers "twin" like multibackend-dup-two does."""

from multibackend_memory import MemoryBackend


class TwinBackend(MemoryBackend):
    pass
