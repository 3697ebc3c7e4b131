"""engine/background.py: the one helper for tasks started and not awaited on the spot."""

from __future__ import annotations

import asyncio

from externalauth.engine.background import Background
from tests.unit.engine.rig import run


@run
async def test_wait_returns_when_every_task_is_done_those_started_meanwhile_included() -> None:
    background, done = Background(), []

    async def second() -> None:
        done.append("second")

    async def first() -> None:
        await asyncio.sleep(0)
        background.start(second())
        done.append("first")

    background.start(first())
    assert (True, ["first", "second"], 0) == (await background.wait(timeout=5.0), done, len(background))


@run
async def test_wait_says_so_when_the_timeout_passes_first() -> None:
    background, forever = Background(), asyncio.Event()
    task = background.start(forever.wait())
    assert (False, 1) == (await background.wait(timeout=0.01), len(background))
    task.cancel()


@run
async def test_a_finished_task_is_let_go() -> None:
    background = Background()

    async def nothing() -> int:
        return 7

    # Its done callback lets it go before the task awaiting it is woken.
    assert (7, 0) == (await background.start(nothing()), len(background))
