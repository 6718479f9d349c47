"""Forgotten voters' ballots: one person, one vote, even after `forget` — without keeping who they are.

A vote row is keyed by the voter, `(poll_id, platform, user_id)`. When a person asks to be forgotten:

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

import hashlib
import hmac
import os
import secrets
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.store import Store, WriteTx

HASHED_PREFIX = "hmac:"  # a forgotten voter's key while the poll is open (platform ids never start like this)
ANONYMOUS_PREFIX = "forgotten-"  # a forgotten voter's key in a closed poll: random, linked to nothing
FORGOTTEN_NAME = "someone"  # what a forgotten creator is called in results and on the dashboard
SECRET_BYTES = 32
HASH_HEX_CHARS = 32  # 128 bits of the HMAC: unique per person and poll with room to spare, and short rows

Voter = tuple[int, str, str]  # (poll_id, platform, user_id)


def ballot_key(secret: bytes, platform: str, user_id: str) -> str:
    """The hashed key of a forgotten person's ballot in the poll whose secret this is."""
    digest = hmac.new(secret, f"{platform}\x00{user_id}".encode(), hashlib.sha256).hexdigest()
    return HASHED_PREFIX + digest[:HASH_HEX_CHARS]


def anonymous_key() -> str:
    return ANONYMOUS_PREFIX + secrets.token_hex(8)


async def poll_secrets(db: Store | WriteTx, poll_ids: Collection[int]) -> dict[int, bytes]:
    """The secrets of those polls that have one (someone was forgotten there while it was open)."""
    if not poll_ids:
        return {}
    marks = ",".join("?" * len(poll_ids))
    rows = await db.fetchall(
        f"SELECT poll_id, secret FROM poll_ballot_keys WHERE poll_id IN ({marks})", tuple(poll_ids)
    )
    return {int(r[0]): bytes(r[1]) for r in rows}


async def hashed_ballots(db: Store | WriteTx, voters: Iterable[Voter]) -> dict[Voter, str]:
    """For each voter who holds a hashed ballot in that poll (they were forgotten there): the key it is kept under.

    One read of the secrets and one of the hashed keys, whatever the number of voters: this runs in every vote batch.
    """
    wanted = set(voters)
    keys = await poll_secrets(db, {poll_id for poll_id, _, _ in wanted})
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    held = {
        (int(r[0]), str(r[1]), str(r[2]))
        for r in await db.fetchall(
            f"SELECT DISTINCT poll_id, platform, user_id FROM poll_votes WHERE poll_id IN ({marks}) "
            f"AND user_id LIKE '{HASHED_PREFIX}%'",
            tuple(keys),
        )
    }
    found: dict[Voter, str] = {}
    for poll_id, platform, user_id in wanted:
        if poll_id in keys:
            key = ballot_key(keys[poll_id], platform, user_id)
            if (poll_id, platform, key) in held:
                found[(poll_id, platform, user_id)] = key
    return found


async def seal(tx: WriteTx, poll_id: int) -> None:
    """The poll has closed: its hashed keys become random tokens and its secret is deleted."""
    if await tx.fetchval("SELECT 1 FROM poll_ballot_keys WHERE poll_id = ?", (poll_id,)) is None:
        return
    for platform, key in await tx.fetchall(
        f"SELECT DISTINCT platform, user_id FROM poll_votes WHERE poll_id = ? AND user_id LIKE '{HASHED_PREFIX}%'",
        (poll_id,),
    ):
        await tx.execute(
            "UPDATE poll_votes SET user_id = ? WHERE poll_id = ? AND platform = ? AND user_id = ?",
            (anonymous_key(), poll_id, platform, key),
        )
    await tx.execute("DELETE FROM poll_ballot_keys WHERE poll_id = ?", (poll_id,))


# --------------------------------------------------------------------------------------------------- privacy hooks
async def forget_voter(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: re-key the person's ballots (hashed in open polls, random in closed ones); returns rows."""
    del anonymous  # one token for every poll would link their ballots to each other: each poll gets its own
    polls = await tx.fetchall(
        "SELECT DISTINCT v.poll_id, p.status FROM poll_votes v JOIN polls p ON p.id = v.poll_id "
        "WHERE v.platform = ? AND v.user_id = ?",
        (platform, user_id),
    )
    changed = 0
    for poll_id, status in polls:
        if status == "open":
            await tx.execute(
                "INSERT OR IGNORE INTO poll_ballot_keys (poll_id, secret) VALUES (?, ?)",
                (poll_id, os.urandom(SECRET_BYTES)),
            )
            secret = bytes(
                await tx.fetchval("SELECT secret FROM poll_ballot_keys WHERE poll_id = ?", (poll_id,))
            )
            key = ballot_key(secret, platform, user_id)
        else:
            key = anonymous_key()
        # OR REPLACE: should a hashed pick already sit in the same slot, the newer vote (this one) wins, as always.
        result = await tx.execute(
            "UPDATE OR REPLACE poll_votes SET user_id = ? WHERE poll_id = ? AND platform = ? AND user_id = ?",
            (key, poll_id, platform, user_id),
        )
        changed += int(result.rowcount)
    return changed


async def export_voter(db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
    """Privacy hook: the person's votes, including ballots of open polls kept under their hashed key."""
    rows = [
        dict(r)
        for r in await db.fetchall(
            "SELECT poll_id, option, voted_at FROM poll_votes WHERE platform = ? AND user_id = ? ORDER BY poll_id",
            (platform, user_id),
        )
    ]
    for poll_id, secret in await db.fetchall("SELECT poll_id, secret FROM poll_ballot_keys ORDER BY poll_id"):
        rows.extend(
            dict(r)
            for r in await db.fetchall(
                "SELECT poll_id, option, voted_at FROM poll_votes WHERE poll_id = ? AND platform = ? AND user_id = ?",
                (poll_id, platform, ballot_key(bytes(secret), platform, user_id)),
            )
        )
    return rows


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
