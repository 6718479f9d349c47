"""Model lifecycle commands for the local console (its user is the owner: an admin)."""

from __future__ import annotations

import asyncio

from bot.console import AUTHOR_ID, ConsoleCommand
from cogs.admin.service import ModelService
from cogs.common.actor import Actor

OWNER = Actor(platform="console", user_id=AUTHOR_ID, name="console", is_admin=True)
MAX_BACKGROUND_JOBS = 1  # the console starts retrains in the background so the chat goes on


def admin_commands(models: ModelService, *, notify) -> list[ConsoleCommand]:
    """`notify(line)` prints a line when the console is not waiting for it (progress, the result)."""
    tasks: set[asyncio.Task] = set()

    async def retrain(args: str) -> str | list[str]:
        action = args.strip()
        if action == "cancel":
            return await models.cancel(OWNER)
        if action == "status":
            return models.status()
        if action not in ("", "fresh"):
            return "Usage: /retrain [fresh|cancel|status]"
        if models.running or len(tasks) >= MAX_BACKGROUND_JOBS:
            return (
                "A retrain is already running; /retrain status shows its progress, /retrain cancel stops it."
            )

        async def run() -> None:
            result = await models.retrain(
                OWNER, on_progress=lambda line: notify(f"(retrain) {line}"), fresh=action == "fresh"
            )
            notify(f"(retrain) {result.message}")

        task = asyncio.create_task(run(), name="console-retrain")
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return "Retraining in the background; keep chatting. Progress follows."

    async def model(args: str) -> str | list[str]:
        action, _, rest = args.strip().partition(" ")
        if action in ("", "status"):
            return models.status()
        if action == "rollback":
            return await models.rollback(OWNER, rest.strip() or None)
        return "Usage: /model status | /model rollback [vNNNN|base]"

    return [
        ConsoleCommand(
            "retrain",
            "/retrain [fresh|cancel|status]",
            "teach the character from consenting conversations (an interrupted retrain resumes; fresh starts over)",
            retrain,
        ),
        ConsoleCommand(
            "model", "/model status|rollback [v]", "the served model version; go back to one", model
        ),
    ]
