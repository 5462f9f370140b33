"""A local emulator of the StreamSource API (contract in streamsource-contract.md)."""
