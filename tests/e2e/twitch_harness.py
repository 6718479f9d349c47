"""Run a real `FamiliarTwitchBot` against `FakeTwitch` over a runtime (the fixture lives in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import twitchio.eventsub.websockets
import twitchio.http

from bot.config import Config, config_from_dict
from bot.platforms.twitch.client import FamiliarTwitchBot
from bot.platforms.twitch.platform import create_bot, serve
from tests.e2e.fake_twitch import FakeTwitch, SentChat

READY_TIMEOUT_S = 10.0
ACCELERATION = 60.0  # pacer time runs this much faster than wall time: a 30-s window lasts 0.5 s


def twitch_config(data_dir: str, **twitch_options: Any) -> Config:
    """A config with Twitch on in the fake's channel and no chat cooldown unless asked."""
    chat = twitch_options.pop("chat", {})
    generation = twitch_options.pop("generation", {})
    raw = {
        "bot": {"data_dir": data_dir},
        "chat": {"cooldown_s": 0.0, **chat},
        "generation": generation,
        "twitch": {"enabled": True, "channels": ["streamer"], **twitch_options},
    }
    return config_from_dict(raw, source="<test>")


def credentials_env(fake: FakeTwitch, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWITCH_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", fake.client_secret)
    monkeypatch.setenv("TWITCH_BOT_ID", fake.bot.id)
    monkeypatch.setenv("TWITCH_BOT_TOKEN", "fake-bot-token-0123456789")
    monkeypatch.setenv("TWITCH_BOT_REFRESH_TOKEN", "fake-bot-refresh-0123456789")


@contextlib.contextmanager
def pointed_at(fake: FakeTwitch) -> Iterator[None]:
    """Point twitchio's Helix, OAuth and EventSub URLs at the fake; restore them afterwards."""
    route = twitchio.http.Route
    old = route.BASE, route.ID_BASE, twitchio.eventsub.websockets.WSS
    route.BASE = f"{fake.base}/helix/"
    route.ID_BASE = f"{fake.base}/"
    twitchio.eventsub.websockets.WSS = f"ws://127.0.0.1:{fake.port}/ws"
    try:
        yield
    finally:
        route.BASE, route.ID_BASE, twitchio.eventsub.websockets.WSS = old


def accelerated_clock(factor: float = ACCELERATION) -> dict[str, Any]:
    """Pacer options whose clock runs `factor` times faster than `time.monotonic` (windows shrink accordingly)."""

    def clock() -> float:
        return time.monotonic() * factor

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / factor)

    return {"clock": clock, "sleep": sleep}


@contextlib.asynccontextmanager
async def running_twitch(runtime: Any, fake: FakeTwitch, **options: Any) -> AsyncIterator[FamiliarTwitchBot]:
    """A logged-in bot subscribed to chat in the fake's channel; stopped (and every task awaited) on exit."""
    bot = create_bot(runtime, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(bot, stop), name="test-twitch")
    ready = asyncio.create_task(bot.wait_until_ready())
    try:
        done, _ = await asyncio.wait(
            {task, ready}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # raises what went wrong
        assert ready in done, "the bot did not become ready against the fake Twitch"
        await fake.wait_connected()
        yield bot
    finally:
        ready.cancel()
        stop.set()
        await asyncio.wait_for(task, READY_TIMEOUT_S)


async def wait_for_line(fake: FakeTwitch, predicate: Callable[[str], bool], within: float = 8.0) -> SentChat:
    """The latest chat line the bot sent whose text matches `predicate`, once there is one."""
    async with asyncio.timeout(within):
        while True:
            found = [s for s in fake.sent if predicate(s.message)]
            if found:
                return found[-1]
            await asyncio.sleep(0.02)
