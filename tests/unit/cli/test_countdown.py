"""The countdown while login waits: its face, when plain lines are due, and what a terminal
and a log see. Pure tables, and the Countdown driven by a fake clock."""

from __future__ import annotations

import io

import pytest

from externalauth.cli import countdown


@pytest.mark.parametrize(("seconds", "expected"), [
    pytest.param(521, "8:41", id="minutes and seconds"),
    pytest.param(60, "1:00", id="a whole minute"),
    pytest.param(59.2, "1:00", id="a fraction of a second rounds up, so 0:00 means really over"),
    pytest.param(0.4, "0:01", id="under a second left still shows a second"),
    pytest.param(0, "0:00", id="nothing left"),
    pytest.param(-5, "0:00", id="never negative"),
    pytest.param(3723, "1:02:03", id="hours past an hour"),
])
def test_clock_face(seconds: float, expected: str) -> None:
    assert expected == countdown.clock_face(seconds)


def test_the_line_reads_like_gh() -> None:
    assert "Waiting for approval: the code expires in 8:41" == countdown.line(
        doing="Waiting for approval", what="the code", left=521)


@pytest.mark.parametrize(("left", "last", "expected"), [
    pytest.param(539, None, True, id="the first line is always printed"),
    pytest.param(538, 539, False, id="not again within the same minute"),
    pytest.param(480, 539, True, id="again when the time left crosses a whole minute"),
    pytest.param(479, 480, False, id="just after a printed minute, nothing"),
    pytest.param(0, 30, True, id="when time is up"),
])
def test_plain_lines_once_a_minute(left: float, last: float | None, expected: bool) -> None:
    assert expected == countdown.plain_due(left, last=last)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_terminal_sees_one_line_redrawn_every_second_and_erased_at_the_end() -> None:
    clock, out = Clock(), io.StringIO()
    c = countdown.Countdown(out, doing="Waiting", what="the code", seconds=125, tty=True, clock=clock,
                            sleeper=clock.sleep)
    c.sleep(3)
    c.close()
    assert "\r\x1b[KWaiting: the code expires in 2:05\r\x1b[KWaiting: the code expires in 2:04" \
           "\r\x1b[KWaiting: the code expires in 2:03\r\x1b[KWaiting: the code expires in 2:02\r\x1b[K" \
           == out.getvalue()


def test_a_log_sees_a_plain_line_at_the_start_and_once_a_minute() -> None:
    """Four poll intervals of 30 s from 2:05 left: lines at 2:05, 2:00 and 1:00, nothing else."""
    clock, out = Clock(), io.StringIO()
    c = countdown.Countdown(out, doing="Waiting", what="the code", seconds=125, tty=False, clock=clock,
                            sleeper=clock.sleep)
    for _ in range(4):
        c.sleep(30)
    c.close()
    assert ["Waiting: the code expires in 2:05", "Waiting: the code expires in 2:00",
            "Waiting: the code expires in 1:00"] == out.getvalue().splitlines()
