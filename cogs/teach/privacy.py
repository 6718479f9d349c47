"""What `forget` and `export` do with teachings (`cogs/teach/service.py`): the privacy hook the runtime registers.

A teaching holds people in two places: its teacher (`teachings.teacher_id`) and everyone who speaks in its copied
context (`teaching_people`). Forgetting either deletes the whole teaching (its people rows go with it): a context
with a turn cut out would teach the character to answer something nobody said. An export lists the teachings the
person is in, with their own turns only: the other speakers' words are not theirs to take.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cogs.privacy.service import PrivacyHook

if TYPE_CHECKING:
    from bot.store import Store, WriteTx

# The teachings a person is in on a platform: binds (platform, user_id, platform, user_id).
_TEACHINGS_OF = (
    "SELECT id FROM teachings WHERE platform = ? AND teacher_id = ? "
    "UNION SELECT teaching_id FROM teaching_people WHERE platform = ? AND user_id = ?"
)


async def forget_teachings(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: delete every teaching the person taught or speaks in; returns teachings deleted."""
    del anonymous  # deleted, not anonymised
    result = await tx.execute(
        f"DELETE FROM teachings WHERE id IN ({_TEACHINGS_OF})", (platform, user_id, platform, user_id)
    )
    return int(result.rowcount)


async def export_teachings(store: Store, platform: str, user_id: str) -> list[dict[str, Any]]:
    """Privacy export: each teaching the person is in, with the reply, the correction and their own turns."""
    rows = await store.fetchall(
        "SELECT id, conversation_id, context, original, taught, teacher_id, teacher_name, created_at "
        f"FROM teachings WHERE id IN ({_TEACHINGS_OF}) ORDER BY id",
        (platform, user_id, platform, user_id),
    )
    found = []
    for row in rows:
        taught_by_them = row["teacher_id"] == user_id
        own = [
            turn["content"]
            for turn in json.loads(row["context"])
            if turn["role"] == "user" and turn["author_id"] == user_id
        ]
        found.append(
            {
                "id": row["id"],
                "conversation_id": row["conversation_id"],
                "created_at": row["created_at"],
                "taught_by_you": taught_by_them,
                **({"teacher_name": row["teacher_name"]} if taught_by_them else {}),
                "your_messages_in_its_context": own,
                "original_reply": row["original"],
                "taught_reply": row["taught"],
            }
        )
    return found


TEACHINGS_HOOK = PrivacyHook("teachings", forget=forget_teachings, export=export_teachings)
