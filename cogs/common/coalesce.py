"""Many updates, few platform calls: run an action at most once per interval per key, never losing the last update.

The first `mark(key)` acts at once; marks that arrive while the key is waiting out its interval fold into a single
trailing run, which sees the latest state. Live tallies (one Discord message edit per poll every few seconds) and
Twitch vote confirmations (one chat line per channel every few seconds) both ride on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
MAX_KEYS = 1_000  # keys whose last run time is remembered; the oldest are forgotten first


class Coalescer(Generic[K]):
    def __init__(
        self,
        action: Callable[[K], Awaitable[None]],
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "coalescer",
    ) -> None:
        self._action = action
        self._interval_s = interval_s
        self._clock = clock
        self._name = name
        self._last: OrderedDict[K, float] = OrderedDict()
        self._dirty: set[K] = set()
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._closed = False

    def mark(self, key: K) -> None:
        """Something about `key` changed: act now, or once the interval since the last run has passed."""
        if self._closed:
            return
        self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"{self._name}:{key}")

    def forget(self, key: K) -> None:
        """Drop a key's pending run and its timing (the thing it tracked is gone)."""
        self._dirty.discard(key)
        self._last.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def flush(self) -> None:
        """Wait for the runs now pending (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, key: K) -> None:
        try:
            while key in self._dirty:
                last = self._last.get(key)
                if last is not None:
                    wait = last + self._interval_s - self._clock()
                    if wait > 0:
                        await asyncio.sleep(wait)
                self._dirty.discard(key)
                try:
                    await self._action(key)
                except Exception:
                    log.exception("%s: update for %s failed", self._name, key)
                self._last[key] = self._clock()
                self._last.move_to_end(key)
                while len(self._last) > MAX_KEYS:
                    self._last.popitem(last=False)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
