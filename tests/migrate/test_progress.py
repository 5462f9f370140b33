"""Progress: a redrawn bar with count, rate and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from multibackend.migrate import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_count_rate_and_eta() -> None:
    out = Terminal()
    progress = Progress("backfill", total=1000, stream=out)
    progress.advance(250)
    progress.finish()
    text = out.getvalue()
    assert "\r" in text
    assert "250/1,000 [======" in text
    assert "/s" in text
    assert "ETA" in text
    assert text.endswith("\n")


def test_a_log_gets_plain_periodic_lines() -> None:
    out = io.StringIO()
    progress = Progress("verify", total=None, stream=out, interval=3600)
    progress.advance(10)  # the first line is written at once
    progress.advance(10)  # then not again before the interval
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("verify: 10 done, ")
    assert lines[-1].startswith("verify: 20 done, ")
    assert len(lines) == 2
    assert "\r" not in out.getvalue()
    assert "ETA" not in out.getvalue()


def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    progress = Progress("x", stream=out, enabled=False)
    progress.advance(5)
    progress.finish()
    assert out.getvalue() == ""
    assert progress.done == 5
