"""A platform client's life, shared by Discord and Twitch: run it until the process stops, then stop it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0  # closing waits at most this long for the platform before giving up on a clean goodbye


async def serve_client(
    name: str,
    client: Coroutine[Any, Any, object],
    stop_event: asyncio.Event,
    *,
    drain: Callable[[], Awaitable[object]],
    close: Callable[[], Awaitable[object]],
    explain: Callable[[BaseException], Exception],
) -> None:
    """Run `client` (the platform's start coroutine) until `stop_event` is set or the client ends.

    A client that fails is raised as `explain(exc)`, a message a person can act on. Whatever happens, the handlers
    in flight get their `drain` while the connection still stands, then the connection is closed (`close`, at most
    `CLOSE_TIMEOUT_S`) and the client's task is ended.
    """
    runner = asyncio.create_task(client, name=f"{name.lower()}-client")
    stopper = asyncio.create_task(stop_event.wait(), name=f"{name.lower()}-stop")
    try:
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            exc = runner.exception()
            if exc is None:
                log.info("%s client stopped", name)
                return
            raise explain(exc) from None
    finally:
        stopper.cancel()
        with contextlib.suppress(BaseException):
            await stopper
        await drain()
        log.info("%s: disconnecting", name)
        try:
            await asyncio.wait_for(close(), CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.warning("%s: closing the client failed (%s)", name, type(exc).__name__)
        if not runner.done():
            runner.cancel()
        with contextlib.suppress(BaseException):
            await runner
