"""The held texts: what the moderation step kept from being posted (or from being answered), for moderators.

One table (`held`, migration 0013), newest first, at most `safety.held_keep` rows. Nothing here is ever posted or
logged as a served reply; the dashboard's "Held" list and `/admin safety`, `!safety`, `/safety` read it. A row names
the person it is about (who typed an input, whom a held reply answered): `forget` deletes those rows and `export`
lists them (`forget_held`, `export_held`: the privacy hook the runtime registers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bot.store import Store, WriteTx

log = logging.getLogger(__name__)

HeldKind = Literal["reply", "story", "input"]
MAX_HELD_CHARS = 2000  # a held text is kept up to this long (a reply is at most a few Discord messages)
RECENT_MAX = 50  # held texts one `recent` call returns at most
PRUNE_EVERY = 20  # held texts recorded between two prunings to `held_keep`


@dataclass(frozen=True)
class Place:
    """Where a text was going (or came from), and whom it is about, for the held record."""

    kind: HeldKind
    platform: str
    channel_id: str
    author_id: str | None = None
    author_name: str | None = None


@dataclass(frozen=True)
class HeldText:
    id: int
    created_at: float
    platform: str
    channel_id: str
    kind: str
    text: str
    reasons: tuple[str, ...]
    source: str
    author_name: str | None

    def line(self, *, show_text: bool = True, max_chars: int = 80) -> str:
        """One line for a moderator: when, where, what kind; the start of the text and why, with `show_text`.

        Without it (an answer the whole channel reads) only who held it: never its words, nor the blocked term a
        reason names.
        """
        when = time.strftime("%m-%d %H:%M", time.localtime(self.created_at))
        head = f"{when} {self.platform} {self.kind}"
        if not show_text:
            return f"{head}, held by {self.source or 'the rules'}"
        text = " ".join(self.text.split())
        if len(text) > max_chars:
            text = text[: max_chars - 1].rstrip() + "…"
        why = "; ".join(self.reasons) or self.source
        return f"{head}: {text!r} ({why})"


class HeldLog:
    """Reads and writes of the `held` table over the process's store."""

    def __init__(self, store: Store, *, keep: int, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._keep = keep
        self._clock = clock
        self._since_prune = 0

    async def record(self, place: Place, text: str, reasons: Sequence[str], source: str) -> None:
        """Keep `text` for moderators (committed before this returns); with `held_keep = 0`, only the log says it."""
        log.warning(
            "safety: held a %s on %s in %s (%s)",
            place.kind,
            place.platform,
            place.channel_id,
            "; ".join(reasons),
        )
        if self._keep <= 0:
            return
        await self._store.write(
            "INSERT INTO held (created_at, platform, channel_id, kind, text, reasons, source, author_id, "
            "author_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._clock(),
                place.platform,
                place.channel_id,
                place.kind,
                text[:MAX_HELD_CHARS],
                "\n".join(reasons),
                source,
                place.author_id,
                place.author_name,
            ),
        )
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            await self.prune()

    async def prune(self) -> int:
        """Keep the newest `held_keep` rows; returns rows deleted."""
        result = await self._store.write(
            "DELETE FROM held WHERE id NOT IN (SELECT id FROM held ORDER BY created_at DESC, id DESC LIMIT ?)",
            (max(0, self._keep),),
        )
        return result.rowcount

    async def recent(self, limit: int = 10) -> list[HeldText]:
        """The newest held texts, newest first (at most `held_keep`, and at most RECENT_MAX)."""
        limit = max(0, min(limit, RECENT_MAX, self._keep))
        rows = await self._store.fetchall(
            "SELECT id, created_at, platform, channel_id, kind, text, reasons, source, author_name FROM held "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [held_text(row) for row in rows]

    async def count(self) -> int:
        return int(await self._store.fetchval("SELECT count(*) FROM held"))


def held_text(row: Any) -> HeldText:
    return HeldText(
        id=row["id"],
        created_at=row["created_at"],
        platform=row["platform"],
        channel_id=row["channel_id"],
        kind=row["kind"],
        text=row["text"],
        reasons=tuple(r for r in str(row["reasons"]).split("\n") if r),
        source=row["source"],
        author_name=row["author_name"],
    )


async def forget_held(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: delete the held texts about the person (deleted, not anonymised: they may quote them)."""
    del anonymous
    result = await tx.execute("DELETE FROM held WHERE platform = ? AND author_id = ?", (platform, user_id))
    return int(result.rowcount)


async def export_held(store: Store, platform: str, user_id: str) -> list[dict[str, Any]]:
    """Privacy export: the held texts about the person (their own flagged messages, replies held for them)."""
    rows = await store.fetchall(
        "SELECT created_at, channel_id, kind, text, reasons, source FROM held "
        "WHERE platform = ? AND author_id = ? ORDER BY created_at",
        (platform, user_id),
    )
    return [
        {
            "created_at": row["created_at"],
            "channel_id": row["channel_id"],
            "kind": row["kind"],
            "text": row["text"],
            "reasons": [r for r in str(row["reasons"]).split("\n") if r],
            "held_by": row["source"],
        }
        for row in rows
    ]
