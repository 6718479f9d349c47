"""Run a real `FamiliarDiscordBot` against `FakeDiscord` over a runtime (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import discord
import yarl
from discord.gateway import DiscordWebSocket

from bot.config import config_from_dict
from bot.platforms.discord.client import FamiliarDiscordBot, create_bot
from bot.runtime import Runtime, open_runtime
from models.backend import GenerationBackend
from tests.e2e.fake_discord import FakeDiscord

READY_TIMEOUT_S = 10.0


def discord_config(data_dir: str, **discord_options: Any) -> Any:
    """A config with Discord on, the fake's guild for command sync, no cooldown unless asked."""
    chat = discord_options.pop("chat", {})
    safety = discord_options.pop("safety", {})
    raw = {
        "bot": {"data_dir": data_dir},
        "chat": {"cooldown_s": 0.0, **chat},
        "discord": {"enabled": True, "guild_ids": [900000000000000100], **discord_options},
        "safety": safety,
    }
    return config_from_dict(raw, source="<test>")


@contextlib.contextmanager
def pointed_at(fake: FakeDiscord) -> Any:
    """Point discord.py's REST base and default gateway at the fake; restore them afterwards."""
    old_base, old_gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway


@contextlib.asynccontextmanager
async def running_bot(
    runtime: Runtime, fake: FakeDiscord, **options: Any
) -> AsyncIterator[FamiliarDiscordBot]:
    """A logged-in bot that has seen READY and the guild; closed (and its task awaited) on exit."""
    options.setdefault("guild_ready_timeout", 0.1)  # discord.py waits this long for more guilds after READY
    bot = create_bot(runtime, **options)
    task = asyncio.create_task(bot.start(fake.token))
    ready = asyncio.create_task(bot.wait_until_ready())
    try:
        done, _ = await asyncio.wait(
            {task, ready}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # raises what went wrong
        assert ready in done, (
            f"the bot did not become ready against the fake Discord: {fake.identifies} identifies, "
            f"requests {[(r.method, r.path, r.status) for r in fake.requests]}"
        )
        yield bot
    finally:
        ready.cancel()
        await bot.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@contextlib.asynccontextmanager
async def discord_runtime(
    data_dir: str, backend: GenerationBackend, **discord_options: Any
) -> AsyncIterator[Runtime]:
    async with open_runtime(discord_config(data_dir, **discord_options), backend=backend) as runtime:
        yield runtime
