"""Forgotten voters' ballots: one person, one vote, even after `forget` — without keeping who they are.

Shared by polls (`cogs/polls/ballots.py`) and story votes (`cogs/story/ballots.py`). A feature's vote rows are keyed
by the voter, `(vote, platform, user_id)`; its `KeyedBallots` names that table, the column naming the vote (a poll, a
scene), the table of secrets and which votes are still open. When a person asks to be forgotten:

- in a vote still open, their ballot keeps counting, but its `user_id` becomes `hmac:` + HMAC-SHA256 of the platform
  and id under a random secret of that vote (created on the first forget there). A later vote of theirs in the same
  vote is written under that hashed key (`hashed`), so it replaces the ballot as any changed vote does: never two
  ballots, never a lost one. The row itself holds no id or name.
- in a closed vote, and in an open one when it closes (`seal`), the key becomes a random `forgotten-` token (one per
  person and vote, so a voter count stays right, yet their ballots in different votes are not linked) and the vote's
  secret is deleted: the tallies remain and nothing links them to anyone any more.

Only votes where someone was forgotten have a secret, so everybody else's votes take the usual path untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.store import Store, WriteTx

HASHED_PREFIX = "hmac:"  # a forgotten voter's key while the vote is open (platform ids never start like this)
ANONYMOUS_PREFIX = "forgotten-"  # a forgotten voter's key in a closed vote: random, linked to nothing
# `anonymous_key()` in SQL: a new random token for each row an UPDATE touches (so the rows are not linked).
ANONYMOUS_KEY_SQL = f"'{ANONYMOUS_PREFIX}' || lower(hex(randomblob(8)))"
FORGOTTEN_NAME = "someone"  # what a forgotten person is called wherever a name is shown
SECRET_BYTES = 32
HASH_HEX_CHARS = 32  # 128 bits of the HMAC: unique per person and vote with room to spare, and short rows

Voter = tuple[int, str, str]  # (vote id, platform, user_id)


def ballot_key(secret: bytes, platform: str, user_id: str) -> str:
    """The hashed key of a forgotten person's ballot in the vote whose secret this is."""
    digest = hmac.new(secret, f"{platform}\x00{user_id}".encode(), hashlib.sha256).hexdigest()
    return HASHED_PREFIX + digest[:HASH_HEX_CHARS]


def anonymous_key() -> str:
    return ANONYMOUS_PREFIX + secrets.token_hex(8)


def is_anonymous(user_id: str) -> bool:
    """A key that stands for a forgotten person (hashed or random), not for a platform id."""
    return user_id.startswith((HASHED_PREFIX, ANONYMOUS_PREFIX))


@dataclass(frozen=True)
class KeyedBallots:
    """One feature's vote rows and the secrets of its open votes where someone was forgotten.

    The names below are trusted SQL (constants of the feature), never user input.
    """

    votes: str  # the vote rows' table: (<vote_id>, platform, user_id, ...)
    vote_id: str  # its column naming the vote; the secrets table has the same column as its primary key
    secrets: str  # (<vote_id> PRIMARY KEY, secret BLOB): one row per open vote where someone was forgotten
    open_votes: str  # a SELECT of the ids of the votes still open (their ballots may still change)
    names: tuple[str, ...] = ()  # columns of the vote rows naming the voter: FORGOTTEN_NAME once forgotten
    export_columns: tuple[str, ...] = ("option", "voted_at")  # what `export` shows of each ballot

    async def secrets_of(self, db: Store | WriteTx, vote_ids: Collection[int]) -> dict[int, bytes]:
        """The secrets of those votes that have one (someone was forgotten there while it was open)."""
        if not vote_ids:
            return {}
        marks = ",".join("?" * len(vote_ids))
        rows = await db.fetchall(
            f"SELECT {self.vote_id}, secret FROM {self.secrets} WHERE {self.vote_id} IN ({marks})",
            tuple(vote_ids),
        )
        return {int(r[0]): bytes(r[1]) for r in rows}

    async def secret(self, tx: WriteTx, vote_id: int) -> bytes:
        """The vote's secret, made now if nobody was forgotten there yet (inside `forget`'s transaction)."""
        await tx.execute(
            f"INSERT OR IGNORE INTO {self.secrets} ({self.vote_id}, secret) VALUES (?, ?)",
            (vote_id, os.urandom(SECRET_BYTES)),
        )
        return bytes(
            await tx.fetchval(f"SELECT secret FROM {self.secrets} WHERE {self.vote_id} = ?", (vote_id,))
        )

    async def hashed(self, db: Store | WriteTx, voters: Iterable[Voter]) -> dict[Voter, str]:
        """For each voter who holds a hashed ballot in that vote (they were forgotten there): the key it is kept under.

        One read of the secrets and (only where there are some) one of the hashed keys, whatever the number of
        voters: this runs on every vote.
        """
        wanted = set(voters)
        keys = await self.secrets_of(db, {vote_id for vote_id, _, _ in wanted})
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        held = {
            (int(r[0]), str(r[1]), str(r[2]))
            for r in await db.fetchall(
                f"SELECT DISTINCT {self.vote_id}, platform, user_id FROM {self.votes} "
                f"WHERE {self.vote_id} IN ({marks}) AND user_id LIKE '{HASHED_PREFIX}%'",
                tuple(keys),
            )
        }
        found: dict[Voter, str] = {}
        for vote_id, platform, user_id in wanted:
            if vote_id in keys:
                key = ballot_key(keys[vote_id], platform, user_id)
                if (vote_id, platform, key) in held:
                    found[(vote_id, platform, user_id)] = key
        return found

    async def forgotten_key(
        self, tx: WriteTx, vote_id: int, platform: str, user_id: str, *, still_open: bool
    ) -> str:
        """The key a forgotten person's row in that vote takes: their hashed key while it is open (its secret made
        now if need be), else a random token."""
        if still_open:
            return ballot_key(await self.secret(tx, vote_id), platform, user_id)
        return anonymous_key()

    async def hashed_keys(self, db: Store | WriteTx, platform: str, user_id: str) -> list[tuple[int, str]]:
        """`(vote id, the person's hashed key there)` for every vote that has a secret, in vote order."""
        return [
            (int(vote_id), ballot_key(bytes(secret), platform, user_id))
            for vote_id, secret in await db.fetchall(
                f"SELECT {self.vote_id}, secret FROM {self.secrets} ORDER BY {self.vote_id}"
            )
        ]

    async def seal(self, tx: WriteTx, vote_id: int) -> bool:
        """The vote has closed: its hashed keys become random tokens and its secret is deleted.

        False (and nothing done) when it had no secret: nobody was forgotten there while it was open.
        """
        if await tx.fetchval(f"SELECT 1 FROM {self.secrets} WHERE {self.vote_id} = ?", (vote_id,)) is None:
            return False
        for platform, key in await tx.fetchall(
            f"SELECT DISTINCT platform, user_id FROM {self.votes} "
            f"WHERE {self.vote_id} = ? AND user_id LIKE '{HASHED_PREFIX}%'",
            (vote_id,),
        ):
            await tx.execute(
                f"UPDATE {self.votes} SET user_id = ? WHERE {self.vote_id} = ? AND platform = ? AND user_id = ?",
                (anonymous_key(), vote_id, platform, key),
            )
        await tx.execute(f"DELETE FROM {self.secrets} WHERE {self.vote_id} = ?", (vote_id,))
        return True

    async def forget(self, tx: WriteTx, platform: str, user_id: str) -> int:
        """Re-key the person's ballots: hashed in open votes, a random token per vote in closed ones; rows changed.

        A privacy hook runs this inside `forget`'s transaction.
        """
        votes = await tx.fetchall(
            f"SELECT DISTINCT v.{self.vote_id}, v.{self.vote_id} IN ({self.open_votes}) FROM {self.votes} v "
            "WHERE v.platform = ? AND v.user_id = ?",
            (platform, user_id),
        )
        named = "".join(f", {column} = '{FORGOTTEN_NAME}'" for column in self.names)
        changed = 0
        for vote_id, still_open in votes:
            key = await self.forgotten_key(tx, vote_id, platform, user_id, still_open=bool(still_open))
            # OR REPLACE: should a hashed ballot already sit in the same slot, the newer vote (this one) wins.
            result = await tx.execute(
                f"UPDATE OR REPLACE {self.votes} SET user_id = ?{named} "
                f"WHERE {self.vote_id} = ? AND platform = ? AND user_id = ?",
                (key, vote_id, platform, user_id),
            )
            changed += int(result.rowcount)
        return changed

    async def forget_hook(self, tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
        """:meth:`forget` as a privacy hook. The hook's one ``anonymous`` id is not used: the same token in every vote
        would link the person's ballots to each other, so each vote gets its own."""
        del anonymous
        return await self.forget(tx, platform, user_id)

    async def export(self, db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
        """The person's ballots, including those of open votes kept under their hashed key."""
        columns = ", ".join((self.vote_id, *self.export_columns))
        rows = [
            dict(r)
            for r in await db.fetchall(
                f"SELECT {columns} FROM {self.votes} WHERE platform = ? AND user_id = ? ORDER BY {self.vote_id}",
                (platform, user_id),
            )
        ]
        for vote_id, key in await self.hashed_keys(db, platform, user_id):
            rows.extend(
                dict(r)
                for r in await db.fetchall(
                    f"SELECT {columns} FROM {self.votes} WHERE {self.vote_id} = ? AND platform = ? AND user_id = ?",
                    (vote_id, platform, key),
                )
            )
        return rows
