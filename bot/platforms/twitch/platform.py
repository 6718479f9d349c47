"""Run the Twitch bot until the process stops; a failure to log in is reported plainly and stays contained."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import twitchio

from bot.platforms.lifecycle import serve_client
from bot.platforms.twitch.client import FamiliarTwitchBot, TwitchLoginError
from bot.platforms.twitch.tokens import TwitchCredentialsError, read_credentials
from bot.tasks import DRAIN_TIMEOUT_S

if TYPE_CHECKING:
    from bot.runtime import Runtime


class TwitchStartError(RuntimeError):
    """Twitch could not be started (credentials missing or refused, no channel); the message says what to fix."""


def create_bot(runtime: Runtime, **bot_options: Any) -> FamiliarTwitchBot:
    """The bot, with credentials from the environment variables the config names."""
    try:
        credentials = read_credentials(runtime.config.twitch)
    except TwitchCredentialsError as exc:
        raise TwitchStartError(str(exc)) from None
    return FamiliarTwitchBot(runtime=runtime, credentials=credentials, **bot_options)


async def run_twitch(runtime: Runtime, stop_event: asyncio.Event, **bot_options: Any) -> None:
    """Log in and chat until `stop_event` is set; raises `TwitchStartError` when Twitch cannot be used."""
    await serve(create_bot(runtime, **bot_options), stop_event)


async def serve(bot: FamiliarTwitchBot, stop_event: asyncio.Event) -> None:
    """Run `bot` until `stop_event` is set or it fails; always closes it (pacer, sockets, HTTP sessions).

    On a stop, replies already being composed are sent and logged first (`drain`, at most `DRAIN_TIMEOUT_S`),
    while the connection still stands; waiting messages are dropped unanswered.
    """
    await serve_client(
        "Twitch",
        bot.start(with_adapter=False, load_tokens=True, save_tokens=True),
        stop_event,
        drain=lambda: drain(bot),
        close=bot.close,
        explain=lambda exc: _explain(exc, bot),
    )


async def drain(bot: FamiliarTwitchBot, timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Refuse new events, then let the handlers and replies in flight finish (bounded) before disconnecting."""
    bot.handlers.close()
    await asyncio.gather(bot.handlers.drain(timeout), bot.pacer.drain(timeout))


def _explain(exc: BaseException, bot: FamiliarTwitchBot) -> TwitchStartError:
    env = bot.settings
    if isinstance(exc, TwitchLoginError):
        return TwitchStartError(f"Twitch login failed: {exc}")
    if isinstance(exc, twitchio.HTTPException) and exc.status in (400, 401, 403):
        # The app token request: twitchio's own message would include the URL, and with it the client secret.
        return TwitchStartError(
            f"Twitch login failed: the application credentials were rejected (HTTP {exc.status}). Check "
            f"{env.client_id_env} and {env.client_secret_env} against the app in the Twitch developer console."
        )
    if isinstance(exc, twitchio.HTTPException):
        return TwitchStartError(f"Twitch failed to start: HTTP {exc.status} from Twitch")
    if isinstance(exc, OSError | TimeoutError):
        return TwitchStartError(f"Twitch failed to start: cannot reach Twitch ({type(exc).__name__})")
    return TwitchStartError(f"Twitch failed to start: {type(exc).__name__}")
