"""A local emulator of the StreamSource API, faithful to the contract (streamsource-contract.md
§1.0–§1.2, §1.5, §2–§7), for tests, demos and local development.

In-process use (tests)::

    from multibackend_streamsource.emulator import UserSpec, run_emulator

    async with run_emulator(users=[UserSpec(email="ed@example.com", password="Passw0rd1")]) as emu:
        emu.base_url            # "http://127.0.0.1:PORT"
        await emu.set_flag("stream_tags", "all")
        emu.fail_next(3, method="POST", path="/api/v1/streams")
        emu.counters().throttled

Command line: ``multibackend emulator --port 0 --user ed@example.com:Passw0rd1:editor``.
Locations and ignore lists are not emulated (their routes answer 404); a ``location`` object
in a stream body is accepted and ignored.
"""

from multibackend_streamsource.emulator.config import EmulatorConfig, UserSpec
from multibackend_streamsource.emulator.control import EmulatorControl, EmulatorUser
from multibackend_streamsource.emulator.faults import FaultRule
from multibackend_streamsource.emulator.flags import FLAG_NAMES, SEEDED_DEFAULTS, FlagSetting
from multibackend_streamsource.emulator.server import Emulator, run_emulator
from multibackend_streamsource.emulator.state import Counters

__all__ = [
    "FLAG_NAMES",
    "SEEDED_DEFAULTS",
    "Counters",
    "Emulator",
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorUser",
    "FaultRule",
    "FlagSetting",
    "UserSpec",
    "run_emulator",
]
