"""Model lifecycle commands for the local console (its user is the owner: an admin)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.console import AUTHOR_ID, ConsoleCommand
from cogs.admin.service import ModelService
from cogs.common.actor import Actor
from cogs.common.safety import Safety

OWNER = Actor(platform="console", user_id=AUTHOR_ID, name="console", is_admin=True)
MAX_BACKGROUND_JOBS = 1  # the console starts tunes and retrains in the background so the chat goes on


def admin_commands(models: ModelService, *, notify, actor: Actor = OWNER) -> list[ConsoleCommand]:
    """`notify(line)` prints a line when the console is not waiting for it (progress, the result). `actor` is who
    types (the owner, an admin: anyone else is refused `/tune` and `/retrain`)."""
    tasks: set[asyncio.Task] = set()

    def training(kind: str) -> Callable[[str], Awaitable[str | list[str]]]:
        """`/tune` or `/retrain`: start one in the background, cancel it, or show the status."""
        train = models.tune if kind == "tune" else models.retrain

        async def command(args: str) -> str | list[str]:
            action = args.strip()
            if action == "cancel":
                return await models.cancel(actor)
            if action == "status":
                return models.status()
            if action not in ("", "fresh"):
                return f"Usage: /{kind} [fresh|cancel|status]"
            if not actor.is_admin:
                return f"Only an admin can {kind} the character."
            if models.running or len(tasks) >= MAX_BACKGROUND_JOBS:
                return f"A retrain is already running; /{kind} status shows its progress, /{kind} cancel stops it."

            async def run() -> None:
                result = await train(
                    actor, on_progress=lambda line: notify(f"({kind}) {line}"), fresh=action == "fresh"
                )
                notify(f"({kind}) {result.message}")

            task = asyncio.create_task(run(), name=f"console-{kind}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return f"{'Tuning' if kind == 'tune' else 'Retraining'} in the background; keep chatting. Progress follows."

        return command

    async def model(args: str) -> str | list[str]:
        action, _, rest = args.strip().partition(" ")
        if action in ("", "status"):
            return models.status()
        if action == "rollback":
            return await models.rollback(actor, rest.strip() or None)
        return "Usage: /model status | /model rollback [vNNNN|base]"

    return [
        ConsoleCommand(
            "tune",
            "/tune [fresh|cancel|status]",
            "train the character on its card, dialogue files and teachings (and the log when there is enough); "
            "promoted only if better",
            training("tune"),
        ),
        ConsoleCommand(
            "retrain",
            "/retrain [fresh|cancel|status]",
            "teach the character from consenting conversations (an interrupted retrain resumes; fresh starts over)",
            training("retrain"),
        ),
        ConsoleCommand(
            "model", "/model status|rollback [v]", "the served model version; go back to one", model
        ),
    ]


def safety_commands(safety: Safety, *, actor: Actor = OWNER) -> list[ConsoleCommand]:
    """`/safety`: the settings and the last held texts (with their words: the console is the owner's); `/safety
    block <word>` blocks a word from now on."""

    async def command(args: str) -> str | list[str]:
        action, _, rest = args.strip().partition(" ")
        if action == "block":
            return safety.block(actor, rest)
        if action:
            return "Usage: /safety [block <word>]"
        return await safety.status_lines(show_text=True)

    return [
        ConsoleCommand(
            "safety",
            "/safety [block <word>]",
            "what is checked before the character speaks, the last held texts; block a word",
            command,
        )
    ]
