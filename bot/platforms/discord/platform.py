"""Run the Discord bot until the process stops; a failure to connect is reported plainly and stays contained."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import discord

from bot.platforms.discord.client import create_bot
from bot.platforms.lifecycle import serve_client
from bot.tasks import DRAIN_TIMEOUT_S

if TYPE_CHECKING:
    from bot.runtime import Runtime


class DiscordStartError(RuntimeError):
    """Discord could not be started (no token, token rejected, intent not enabled); the message says what to fix."""


async def run_discord(runtime: Runtime, stop_event: asyncio.Event, **bot_options: Any) -> None:
    """Log in with the token from the configured environment variable and serve until `stop_event` is set.

    Raises `DiscordStartError` with a message a person can act on when Discord cannot be used; the token itself
    never appears in a message or a log line. On a stop, new events are refused and the handlers in flight get
    `DRAIN_TIMEOUT_S` to finish (a reply being generated is sent and logged) before the connection closes.
    """
    env = runtime.config.discord.token_env
    token = os.environ.get(env, "").strip()
    if not token:
        raise DiscordStartError(
            f"Discord is enabled but the environment variable {env} is not set (the bot token)"
        )
    bot = create_bot(runtime, **bot_options)
    await serve_client(
        "Discord",
        bot.start(token),
        stop_event,
        drain=lambda: bot.handlers.drain(DRAIN_TIMEOUT_S),
        close=bot.close,
        explain=lambda exc: _explain(exc, env),
    )


def _explain(exc: BaseException, env: str) -> DiscordStartError:
    if isinstance(exc, discord.LoginFailure):
        return DiscordStartError(
            f"Discord login failed: the token in {env} was rejected. Copy the bot token again from the Developer "
            "Portal (Bot → Reset Token) into that variable."
        )
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return DiscordStartError(
            "Discord refused the connection: the Message Content intent is not enabled for this application. "
            "Enable it in the Developer Portal (Bot → Privileged Gateway Intents) or set discord.message_content "
            "= false in the config."
        )
    if isinstance(exc, discord.HTTPException):
        return DiscordStartError(
            f"Discord failed to start: HTTP {exc.status} from Discord ({exc.text or 'no detail'})"
        )
    return DiscordStartError(f"Discord failed to start: {type(exc).__name__}: {exc}")
