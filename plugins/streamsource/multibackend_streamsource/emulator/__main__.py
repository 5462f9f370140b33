"""``python -m multibackend_streamsource.emulator``: the emulator command without the core CLI."""

from multibackend_streamsource.emulator.cli import emulator

if __name__ == "__main__":
    emulator(prog_name="python -m multibackend_streamsource.emulator")
