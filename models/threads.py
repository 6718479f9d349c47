"""Run torch work that is not generation (loading, probing a model) on a thread that ends when the work does.

Why: OpenMP (torch's CPU thread pool) keeps a team of worker threads for every thread that has run parallel torch
code, for as long as that thread lives. With a second team alive, say on the event loop's default executor that
loaded the model, libgomp counts more threads than cores and stops spinning between parallel regions: the engine's
thread then pays a wake-up on every small decode matmul. Measured on the 2-core machine: a (1, 576) x (576, 1536)
bf16 matmul takes 60 us on the only team and 150 us with an idle second team; decoding ran at 16 instead of 27
tokens/s. A thread that ends takes its team with it, so the engine's worker keeps the cores to itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_in_own_thread(fn: Callable[[], T], *, name: str = "familiar-torch") -> T:
    """Run ``fn`` on a new thread, wait for it, and return its result or raise its exception."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller, whatever it is
            failure.append(exc)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


async def in_own_thread(fn: Callable[[], T], *, name: str = "familiar-torch") -> T:
    """:func:`call_in_own_thread` without blocking the event loop.

    Cancelling the awaiter does not stop ``fn`` (a thread cannot be interrupted); its result is then dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(settle: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(lambda: None if future.done() else settle())
        except RuntimeError:  # the loop closed while the work ran: nobody is waiting
            pass

    def body() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiter, whatever it is
            error = exc  # `exc` is unbound once the except block ends, before the loop runs the callback
            deliver(lambda: future.set_exception(error))
        else:
            deliver(lambda: future.set_result(result))

    threading.Thread(target=body, name=name, daemon=True).start()
    return await future
