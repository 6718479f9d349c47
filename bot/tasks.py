"""Handlers in flight: counted while they run, refused once the process stops, drained before the store closes.

A platform adapter wraps each event handler in `tracker.track()`. On a stop signal the platform first calls
`drain`: new events are refused from then on, the handlers already running get `DRAIN_TIMEOUT_S` to finish (a
reply being generated is sent and logged), and any still running after that are cancelled. Only then does the
platform disconnect and the runtime close the store, so nothing a handler acknowledged is lost to the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0  # how long a stop waits for handlers in flight before cancelling them
CANCEL_WAIT_S = 2.0  # how long cancelled handlers get to unwind
MAX_IN_FLIGHT = 500  # handlers running at once per platform; beyond this a new event is refused


class TaskTracker:
    """The handlers running now on one platform (a bounded set); `drain` closes it and waits for them."""

    def __init__(self, name: str, *, limit: int = MAX_IN_FLIGHT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.name = name
        self.limit = limit
        self._active: dict[object, asyncio.Task[object]] = {}  # one entry per `track()` scope
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._active)

    @property
    def accepting(self) -> bool:
        return not self._closed

    @contextlib.contextmanager
    def track(self) -> Iterator[bool]:
        """Count the current task while the block runs; yields False (run nothing) once closed or full."""
        task = asyncio.current_task()
        if self._closed or task is None:
            yield False
            return
        if len(self._active) >= self.limit:
            log.warning("%s: %d handlers already running; refusing a new event", self.name, self.limit)
            yield False
            return
        token = object()
        self._active[token] = task
        self._idle.clear()
        try:
            yield True
        finally:
            del self._active[token]
            if not self._active:
                self._idle.set()

    def close(self) -> None:
        """Refuse new handlers from now on (the first step of a stop)."""
        self._closed = True

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Close, wait up to `timeout` for the running handlers, then cancel what is left. Safe to call twice."""
        self.close()
        if not self._active:
            return
        log.info("%s: waiting up to %gs for %d handler(s) in flight", self.name, timeout, len(self._active))
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return
        except TimeoutError:
            pass
        tasks = set(self._active.values())
        log.warning("%s: cancelling %d handler(s) still running after %gs", self.name, len(tasks), timeout)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), CANCEL_WAIT_S)
