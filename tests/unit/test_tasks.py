"""TaskTracker: a bounded set of handlers in flight, refused once closed, drained (then cancelled) on a stop."""

from __future__ import annotations

import asyncio

import pytest

from bot.tasks import TaskTracker


async def _hold(tracker: TaskTracker, release: asyncio.Event, log: list[str], name: str) -> None:
    with tracker.track() as accepted:
        if not accepted:
            log.append(f"{name} refused")
            return
        await release.wait()
        log.append(f"{name} done")


async def test_drain_waits_for_handlers_in_flight_and_refuses_new_ones():
    tracker = TaskTracker("test")
    release = asyncio.Event()
    log: list[str] = []
    first = asyncio.create_task(_hold(tracker, release, log, "first"))
    await asyncio.sleep(0)
    assert len(tracker) == 1
    drain = asyncio.create_task(tracker.drain(timeout=5))
    await asyncio.sleep(0)
    assert not tracker.accepting and not drain.done()
    await _hold(tracker, release, log, "late")  # arrives while draining
    release.set()
    await drain
    await first
    assert log == ["late refused", "first done"]
    assert len(tracker) == 0


async def test_drain_cancels_what_outlives_the_grace_period():
    tracker = TaskTracker("test")
    stuck = asyncio.create_task(_hold(tracker, asyncio.Event(), [], "stuck"))
    await asyncio.sleep(0)
    await tracker.drain(timeout=0.01)
    assert stuck.cancelled()
    assert len(tracker) == 0
    await tracker.drain(timeout=0.01)  # twice is fine


async def test_the_set_is_bounded():
    tracker = TaskTracker("test", limit=2)
    release = asyncio.Event()
    log: list[str] = []
    held = [asyncio.create_task(_hold(tracker, release, log, f"h{i}")) for i in range(2)]
    await asyncio.sleep(0)
    await _hold(tracker, release, log, "third")
    assert log == ["third refused"]
    release.set()
    await asyncio.gather(*held)
    with tracker.track() as accepted:
        assert accepted  # room again once the others finished
    with pytest.raises(ValueError):
        TaskTracker("bad", limit=0)
