"""StreamSource plugin for multibackend: the API client backend and a local emulator of the API."""
