"""Run the bot: every enabled platform concurrently over one runtime, until a signal or the console ends.

A stop (SIGINT, SIGTERM, the console's end) goes in this order: each platform refuses new events and lets the
handlers in flight finish (at most `DRAIN_TIMEOUT_S`, then they are cancelled), then disconnects; the console
finishes the line it is answering (same bound); then the runtime closes in reverse order of opening: the scheduler
stops (no job fires into a closing database), pending log writes are committed, the database is closed. A reply that
was sent is therefore always logged.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any

from bot.config import Config
from bot.console import Console, ConsoleCommand
from bot.dashboard import Sources, dashboard_secret, serve_dashboard
from bot.runtime import Runtime, open_runtime
from bot.tasks import DRAIN_TIMEOUT_S
from cogs.admin.console import admin_commands, safety_commands
from cogs.polls.console import poll_commands
from cogs.privacy.console import privacy_commands
from cogs.story.console import story_commands
from cogs.teach.console import teach_commands

log = logging.getLogger(__name__)


def console_commands(runtime: Runtime) -> Sequence[ConsoleCommand]:
    """Feature commands offered in the console besides /help, /reset and /quit."""
    return (
        *poll_commands(
            runtime.polls,
            user_name=runtime.config.console.user_name,
            character=runtime.card.name,
            notify=lambda line: print(line, flush=True),
        ),
        *story_commands(
            runtime.story,
            user_name=runtime.config.console.user_name,
            notify=lambda line: print(line, flush=True),
        ),
        *privacy_commands(
            runtime.privacy,
            export_dir=runtime.config.data_dir / "exports",
            on_forget=runtime.chat.forget_conversation_cache,
        ),
        *admin_commands(runtime.models, notify=lambda line: print(line, flush=True)),
        *safety_commands(runtime.safety),
        *teach_commands(runtime.teach, user_name=runtime.config.console.user_name),
    )


def dashboard_sources(runtime: Runtime) -> Sources:
    return Sources(
        config=runtime.config,
        store=runtime.store,
        character=runtime.card.char_name,
        metrics=runtime.metrics,
        backend=runtime.backend,
        models=runtime.models,
    )


def console_wanted(config: Config, platforms_enabled: bool) -> bool:
    mode = config.console.enabled
    return mode == "on" or (mode == "auto" and not platforms_enabled)


async def run_console(config: Config) -> int:
    """`familiar chat`: the console alone."""
    stop = _install_stop_signals()  # before the start-up: a signal during it still ends in a clean stop
    async with open_runtime(config) as runtime:
        console = Console(chat=runtime.chat, config=config.console, commands=console_commands(runtime))
        task = asyncio.create_task(_then_stop(console.run(stop), stop), name="console")
        await stop.wait()
        await _finish([task], DRAIN_TIMEOUT_S)
        if not task.cancelled():
            task.result()  # a console that failed fails the command, with its traceback
    return 0


async def run_bot(config: Config) -> int:
    """`familiar run`: every platform enabled in the config, or the console when none is."""
    dashboard_key = dashboard_secret(config)  # a dashboard without its secret fails before the slow start-up
    stop = _install_stop_signals()  # before the start-up: a signal during it still ends in a clean stop
    async with open_runtime(config) as runtime, serve_dashboard(dashboard_sources(runtime), dashboard_key):
        tasks: list[asyncio.Task[None]] = []
        platforms: list[asyncio.Task[bool]] = []
        if config.discord.enabled:
            from bot.platforms.discord.platform import run_discord

            platforms.append(
                asyncio.create_task(_run_platform("Discord", run_discord(runtime, stop)), name="discord")
            )
        if config.twitch.enabled:
            from bot.platforms.twitch.platform import run_twitch

            platforms.append(
                asyncio.create_task(_run_platform("Twitch", run_twitch(runtime, stop)), name="twitch")
            )
        if console_wanted(config, platforms_enabled=bool(platforms)):
            console = Console(chat=runtime.chat, config=config.console, commands=console_commands(runtime))
            tasks.append(asyncio.create_task(_then_stop(console.run(stop), stop), name="console"))
        elif platforms:
            tasks.append(asyncio.create_task(_stop_when_all_done(platforms, stop), name="platforms-watch"))
        await stop.wait()
        log.info("stopping: finishing the replies in flight (at most %gs)", DRAIN_TIMEOUT_S)
        await _finish(tasks, DRAIN_TIMEOUT_S)  # the platforms drain and disconnect meanwhile, on their own
        results = await asyncio.gather(*platforms, return_exceptions=True)
    return 0 if all(r is True for r in results) else 1


async def _finish(tasks: Sequence[asyncio.Task[None]], grace: float) -> None:
    """Let `tasks` end on their own within `grace` seconds (a console line being answered), then cancel them."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        log.warning("stopping: %s did not finish within %gs; cancelled", task.get_name(), grace)
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run_platform(name: str, coro: Coroutine[Any, Any, None]) -> bool:
    """Run one platform until the stop event; a failure is logged plainly and leaves the other platforms running."""
    try:
        await coro
    except Exception as exc:
        log.error("%s is not running: %s", name, exc)
        return False
    return True


async def _stop_when_all_done(platforms: Sequence[asyncio.Task[bool]], stop: asyncio.Event) -> None:
    """With no console, a process whose every platform failed has nothing left to do."""
    await asyncio.gather(*platforms, return_exceptions=True)
    if not stop.is_set():
        log.error("no platform is running; stopping")
        stop.set()


async def _then_stop(coro: Awaitable[object], stop: asyncio.Event) -> None:
    try:
        await coro
    finally:
        stop.set()


def _install_stop_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests) or no signal support
            pass
    return stop
