"""`/teach <better reply>` in the local console: correct the character's last reply (the console's user is the owner,
so they may teach)."""

from __future__ import annotations

from bot.console import AUTHOR_ID, CONVERSATION_ID, ConsoleCommand
from cogs.common.actor import Actor
from cogs.teach.service import TeachService, TeachStatus

USAGE = "/teach <better reply>"


def teach_commands(teach: TeachService, *, user_name: str) -> list[ConsoleCommand]:
    owner = Actor(platform="console", user_id=AUTHOR_ID, name=user_name, is_moderator=True, is_admin=True)

    async def teach_last(args: str) -> str:
        result = await teach.teach(owner, args, conversation_id=CONVERSATION_ID)
        if result.status is TeachStatus.EMPTY:
            return f"Usage: {USAGE} (the reply {teach.character} should have given to its last one)"
        return result.message

    return [
        ConsoleCommand(
            "teach",
            USAGE,
            f"the reply {teach.character} should have given to its last one (learnt at the next retrain)",
            teach_last,
        )
    ]
