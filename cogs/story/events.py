"""Story events on their way to platforms: one listener per platform, each event handed over in a task of its own.

Events raised before a platform subscribed (at start-up, resumed games announce their scenes) wait for it, up to
`MAX_PENDING_EVENTS`. A listener that fails is logged; the game goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from cogs.story.state import StoryEvent

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS: Final = (
    200  # events kept for a platform that has not subscribed yet (start-up), per platform
)

Listener = Callable[[StoryEvent], Awaitable[None]]
Spawn = Callable[[Awaitable[Any]], asyncio.Task[Any]]  # starts a task the service waits for at its close


class StoryEvents:
    def __init__(self, spawn: Spawn) -> None:
        self._spawn = spawn
        self._listeners: dict[str, Listener] = {}
        self._pending: dict[str, deque[StoryEvent]] = defaultdict(lambda: deque(maxlen=MAX_PENDING_EVENTS))
        self._deliveries: set[asyncio.Task[Any]] = set()

    def subscribe(self, platform: str, listener: Listener) -> None:
        self._listeners[platform] = listener
        pending = self._pending.pop(platform, None)
        for event in pending or ():
            self._deliver_later(listener, event)

    def unsubscribe(self, platform: str, listener: Listener) -> None:
        if self._listeners.get(platform) is listener:
            del self._listeners[platform]

    async def flush(self) -> None:
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    def emit(self, event: StoryEvent) -> None:
        listener = self._listeners.get(event.platform)
        if listener is None:
            self._pending[event.platform].append(event)
            return
        self._deliver_later(listener, event)

    def _deliver_later(self, listener: Listener, event: StoryEvent) -> None:
        task = self._spawn(self._deliver(listener, event))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    @staticmethod
    async def _deliver(listener: Listener, event: StoryEvent) -> None:
        try:
            await listener(event)
        except Exception:
            log.exception("story listener failed on %s", type(event).__name__)
