"""Convergence under chaos (issue 8): about 1,000 writes through the manager while the
secondaries fail, throttle, lag and go down, the emulator answers 500s (some after applying a
create), and the sync worker process is SIGKILLed three times. Afterwards every pair of backends
agrees, nothing is lost or duplicated, and only the injected permanent refusals are parked."""

from __future__ import annotations

from pathlib import Path

from multibackend_streamsource.emulator import UserSpec, run_emulator

from multibackend.testing.chaos import POISONED, ChaosPlan, run_chaos

EDITOR = UserSpec(email="chaos@example.com", password="Chaos-Passw0rd", role="editor")


async def test_converges_after_faults_and_worker_kills(tmp_path: Path) -> None:
    async with run_emulator(users=[EDITOR], localhost_exempt=True) as emu:
        plan = ChaosPlan(
            work=tmp_path,
            streamsource_url=emu.base_url,
            email=EDITOR.email,
            password=EDITOR.password,
            operations=1000,
            writers=4,
            write_rate=200.0,
            seed=8,
        )
        report = await run_chaos(plan, emu)

    assert report.outstanding == 0, "the journal did not drain"
    for pair, diffs in report.differences.items():
        assert diffs == [], f"{pair}: " + "\n".join(map(str, diffs[:20]))
    # Every kind of fault really happened, and the worker really was killed and resumed.
    assert sum(report.operations.values()) == 1000
    assert {"create", "update", "pin", "unpin", "delete"} <= set(report.operations)
    kinds = {key.split(":")[1] for key, n in report.faults.items() if n}
    assert {"unavailable", "rate_limited", "down", "spike", "permanent"} <= kinds, report.faults
    assert report.faults["streamsource:http_500"] > 0
    assert report.worker_stats["retries"] > 0
    assert report.kills == 3
    # The only parked entries are the poisoned entities on the target that refuses them.
    assert report.poisoned, "the run created no poisoned stream"
    assert report.parked == {(key, POISONED) for key in report.poisoned}
    assert report.poison_gaps >= len(report.poisoned)
