"""A countdown while ``externalauth login`` waits: "code expires in 8:41".

On a terminal the line is redrawn in place every second; in a log or a pipe a plain
line is printed at the start and then once a minute, so that CI output stays short.

:func:`clock_face`, :func:`line` and :func:`plain_due` are pure; :class:`Countdown`
writes to a stream and sleeps (both injectable).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TextIO

#: Seconds between plain (non-terminal) lines.
PLAIN_EVERY = 60.0
#: Longest single sleep, so that the terminal line moves every second.
STEP = 1.0
_REDRAW = "\r\x1b[K"  # back to column 0, erase the line


def clock_face(seconds: float) -> str:
    """``8:41`` (``m:ss``), ``1:02:03`` past an hour; never negative. Rounded up, so the
    face shows ``0:00`` only when the time is really up."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def line(*, doing: str, what: str, left: float) -> str:
    """``Waiting for approval: the code expires in 8:41``."""
    return f"{doing}: {what} expires in {clock_face(left)}"


def plain_due(left: float, *, last: float | None, every: float = PLAIN_EVERY) -> bool:
    """Whether a plain line is due: the first one, then whenever the time left crosses a
    multiple of ``every`` (9:00, 8:00, ... for ``every`` = 60 s)."""
    if last is None:
        return True
    return math.ceil(left / every) < math.ceil(last / every)


class Countdown:
    """Shows the time left until ``seconds`` from now. Use :meth:`sleep` to wait (it redraws),
    :meth:`show` to redraw at once, :meth:`close` when done (a terminal line is erased)."""

    def __init__(self, stream: TextIO, *, doing: str, what: str, seconds: float, tty: bool,
                 clock: Callable[[], float] = time.monotonic,
                 sleeper: Callable[[float], None] = time.sleep,
                 every: float = PLAIN_EVERY) -> None:
        self.stream = stream
        self.doing = doing
        self.what = what
        self.tty = tty
        self.clock = clock
        self.sleeper = sleeper
        self.every = every
        self.deadline = clock() + seconds
        self._last: float | None = None
        self._drawn = False

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def show(self) -> None:
        left = self.left()
        text = line(doing=self.doing, what=self.what, left=left)
        if self.tty:
            self.stream.write(_REDRAW + text)
            self._drawn = True
        elif plain_due(left, last=self._last, every=self.every):
            self.stream.write(text + "\n")
        else:
            return
        self._last = left
        self.stream.flush()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (a device-flow poll interval), redrawing at least every second."""
        end = self.clock() + seconds
        while True:
            self.show()
            rest = end - self.clock()
            if rest <= 0:
                return
            self.sleeper(min(STEP, rest))

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write(_REDRAW)
            self.stream.flush()
            self._drawn = False
