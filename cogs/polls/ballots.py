"""Forgotten voters' ballots in polls: one person, one vote, even after `forget` — without keeping who they are.

A vote row is keyed by the voter, `(poll_id, platform, user_id)`. When a person asks to be forgotten (the generic
part, shared with story votes, is `cogs/common/ballot_keys.py`):

- in a poll still open, their ballot keeps counting, but its `user_id` becomes `hmac:` + HMAC-SHA256 of the platform
  and id under a random secret of that poll (`poll_ballot_keys`, created on the first forget in the poll). A later
  vote of theirs in the same poll is written under that hashed key, so it replaces the ballot as any changed vote
  does (and a toggle takes a pick back): never two ballots, never a lost one. The row itself holds no id or name.
- in a closed poll, and in an open poll when it closes, the key becomes a random `forgotten-` token (one per person
  and poll, so a multiple-choice ballot still counts as one voter) and the poll's secret is deleted: the tallies
  remain and nothing links them to anyone any more.

Only polls where someone was forgotten have a secret, so everybody else's votes take the usual path untouched.

The privacy hooks (`cogs/privacy` runs them inside `forget`'s transaction) live here too: the ballots above, and the
polls a person started or closed, which stop naming them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cogs.common.ballot_keys import (
    ANONYMOUS_PREFIX,
    FORGOTTEN_NAME,
    HASHED_PREFIX,
    KeyedBallots,
    ballot_key,
)

if TYPE_CHECKING:
    from bot.store import Store, WriteTx

__all__ = [
    "ANONYMOUS_PREFIX",
    "FORGOTTEN_NAME",
    "HASHED_PREFIX",
    "POLL_BALLOTS",
    "ballot_key",
    "export_creator",
    "forget_creator",
]

POLL_BALLOTS = KeyedBallots(
    votes="poll_votes",
    vote_id="poll_id",
    secrets="poll_ballot_keys",
    open_votes="SELECT id FROM polls WHERE status = 'open'",
)


# --------------------------------------------------------------------------------------------------- privacy hooks
async def forget_creator(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: the polls the person started (and closed) no longer name them; returns polls changed."""
    created = await tx.execute(
        "UPDATE polls SET creator_id = ?, creator_name = ? WHERE creator_platform = ? AND creator_id = ?",
        (anonymous, FORGOTTEN_NAME, platform, user_id),
    )
    # `closed_by` records "platform:user_id" of whoever closed a poll early.
    await tx.execute(
        "UPDATE polls SET closed_by = ? WHERE closed_by = ?", (anonymous, f"{platform}:{user_id}")
    )
    return int(created.rowcount)


async def export_creator(db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT id, question, created_at FROM polls WHERE creator_platform = ? AND creator_id = ?",
        (platform, user_id),
    )
    return [dict(r) for r in rows]
