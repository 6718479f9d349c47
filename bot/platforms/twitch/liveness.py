"""Whether Twitch chat reaches the bot right now, for the status the dashboard shows.

twitchio 3 announces a working EventSub socket (`event_websocket_welcome`) but not the loss of one: when a socket
drops, it reconnects in the background (with backoff, for as long as the outage lasts) and dispatches
`event_websocket_closed` for the old socket only once the replacement is open. So `ConnectionWatch` looks at the
sockets themselves: it reports the connection lost as soon as one of them is no longer open (checked every
`CHECK_INTERVAL_S`, and at once on a close event, which also catches a drop repaired within one check), and up again
at the next welcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Final, Protocol

log = logging.getLogger(__name__)

CHECK_INTERVAL_S: Final = 0.5  # how long a lost socket can go unreported at most
RECONNECTING: Final = "reconnecting"  # the detail shown while twitchio opens a replacement socket
NO_SOCKET: Final = "no connection"  # every socket was closed and none is being replaced

Report = Callable[[bool, str], None]  # (connected, detail)


class Socket(Protocol):
    """What the watch needs of a twitchio EventSub `Websocket`."""

    @property
    def connected(self) -> bool: ...


class ConnectionWatch:
    """Reports `report(True, "")` at each welcome and `report(False, detail)` once when the connection is lost."""

    def __init__(
        self, sockets: Callable[[], Iterable[Socket]], report: Report, *, interval_s: float = CHECK_INTERVAL_S
    ) -> None:
        self._sockets = sockets
        self._report = report
        self._interval_s = interval_s
        self._up = False  # reported connected, and no loss seen since
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._up

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="twitch-connection-watch")

    async def stop(self) -> None:
        """Stop watching (the bot is closing: what it reports from now on is its own business)."""
        self._up = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def welcomed(self) -> None:
        """A socket (new or replacing a lost one) got Twitch's welcome: chat arrives again."""
        self._up = True
        self._report(True, "")

    def check(self) -> None:
        """Report the connection lost if a socket is no longer open (or none is left)."""
        if not self._up:
            return  # not up yet, or the loss is reported already: nothing to look at until the next welcome
        sockets = list(self._sockets())
        if not sockets:
            self._lost(NO_SOCKET)
        elif not all(s.connected for s in sockets):
            self._lost(RECONNECTING)

    def closed(self, socket: Socket) -> None:
        """twitchio closed `socket`: if it still holds it, it is replacing it (however fast), so it was lost."""
        if any(s is socket for s in self._sockets()):
            self._lost(RECONNECTING)
        else:  # retired, or replaced after Twitch asked to move (the new socket was welcomed first)
            self.check()

    def _lost(self, detail: str) -> None:
        if not self._up:
            return  # not up yet, or the loss is reported already
        self._up = False
        log.warning("Twitch: the EventSub connection was lost (%s)", detail)
        self._report(False, detail)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.check()
