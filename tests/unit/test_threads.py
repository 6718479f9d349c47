"""Work on a thread of its own: results and errors come back, and the thread is gone afterwards."""

from __future__ import annotations

import asyncio
import threading

import pytest

from models.threads import call_in_own_thread, in_own_thread


def _names() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_call_returns_the_result_from_another_thread_that_then_ends() -> None:
    seen: list[str] = []

    def work() -> int:
        seen.append(threading.current_thread().name)
        return 42

    assert call_in_own_thread(work, name="probe-thread") == 42
    assert seen == ["probe-thread"] and threading.current_thread().name != "probe-thread"
    assert "probe-thread" not in _names()


def test_call_raises_the_work_s_exception() -> None:
    def work() -> None:
        raise ValueError("bad card")

    with pytest.raises(ValueError, match="bad card"):
        call_in_own_thread(work)


async def test_await_keeps_the_loop_free_and_returns_the_result() -> None:
    release = threading.Event()
    ticks = 0

    def work() -> str:
        release.wait(5)
        return "loaded"

    task = asyncio.create_task(in_own_thread(work, name="load-thread"))
    while ticks < 3:  # the loop runs while the work waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert not task.done()
    release.set()
    assert await task == "loaded"
    for _ in range(100):
        if "load-thread" not in _names():
            break
        await asyncio.sleep(0.01)
    assert "load-thread" not in _names()


async def test_await_raises_the_work_s_exception() -> None:
    def work() -> None:
        raise RuntimeError("no GGUF")

    with pytest.raises(RuntimeError, match="no GGUF"):
        await in_own_thread(work)
