"""The conversation log: every turn on every platform, for memory after a restart, moderation, ratings, datasets.

All writes go through the store's single writer, so operations apply in the order they were called: deleting a
message whose log line is still queued deletes it, because the delete runs after the insert.

A reply the platform showed as several messages (Discord's 2000-character limit) is one row, logged under its last
message's id, with every part's id in `message_parts`: deleting or rating any part finds the row.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import fields

from bot.store.db import Store, WriteTx
from bot.store.records import RATINGS, MessageRecord

logger = logging.getLogger(__name__)

_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(MessageRecord))
_COLUMN_LIST = ", ".join(_COLUMNS)
_INSERT = f"INSERT INTO messages ({_COLUMN_LIST}) VALUES ({', '.join('?' for _ in _COLUMNS)})"

_INSERT_PART = (
    "INSERT OR REPLACE INTO message_parts (platform, platform_message_id, message_id, part) "
    "VALUES (?, ?, ?, ?)"
)
# The row that shows a platform message: by its own id, or as one part of a longer reply.
_ROW_OF = (
    "SELECT id FROM messages WHERE platform = ? AND platform_message_id = ? "
    "UNION SELECT message_id FROM message_parts WHERE platform = ? AND platform_message_id = ?"
)

RECENT_MAX = 1_000  # most rows one `recent` call returns; memory asks for a few dozen


class ConversationLog:
    """Conversation-log queries over a `Store`. Reads see committed rows only (see `Store.flush`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def log(self, rec: MessageRecord, *, parts: Sequence[str] = ()) -> None:
        """Queue `rec` for the writer and return without waiting for the disk (a failure is logged).

        Waits only if the write queue is full, which means the disk is far behind; nothing is dropped.
        `parts`: the platform ids of every message that shows `rec`, in order, when there are several (`rec` itself
        carries the last one); such a record is stored with its parts in one transaction, waiting for the COMMIT.
        """
        if len(parts) < 2:
            await self._store.write_nowait(_INSERT, _values(rec))
            return
        ids = tuple(parts)

        async def insert_with_parts(tx: WriteTx) -> None:
            row = await tx.execute(_INSERT, _values(rec))
            await tx.executemany(
                _INSERT_PART, [(rec.platform, part_id, row.lastrowid, i) for i, part_id in enumerate(ids)]
            )

        try:
            await self._store.transaction(insert_with_parts)
        except sqlite3.Error as exc:  # as for a queued write: logged, not raised
            logger.error("logging a reply of %d parts failed: %s", len(ids), exc)

    async def log_durable(self, rec: MessageRecord) -> int:
        """Store `rec`, wait for the COMMIT, return its row id (to use as another record's `reply_to_id`)."""
        result = await self._store.write(_INSERT, _values(rec))
        assert result.lastrowid is not None  # an INSERT into a rowid table always has one
        return result.lastrowid

    async def mark_held(self, rec: MessageRecord) -> None:
        """Mark the logged `rec` as held by the moderation step (its reply was held): no dataset learns from it and
        memory does not re-read it. Queued like `log`, so it finds `rec` even while that insert still waits."""
        await self._store.write_nowait(
            "UPDATE messages SET held = 1 "
            "WHERE conversation_id = ? AND author_id = ? AND created_at = ? AND role = ? AND content = ?",
            (rec.conversation_id, rec.author_id, rec.created_at, rec.role, rec.content),
        )

    async def delete_platform_message(self, platform: str, platform_message_id: str) -> int:
        """Delete the logged message(s) with this platform id, or the reply it is a part of; return rows deleted."""
        result = await self._store.write(
            f"DELETE FROM messages WHERE id IN ({_ROW_OF})",
            (platform, platform_message_id, platform, platform_message_id),
        )
        return result.rowcount

    async def delete_user_messages(self, platform: str, author_id: str, channel_id: str | None = None) -> int:
        """Delete everything `author_id` wrote on `platform`; return rows deleted.

        With `channel_id`, only in that channel: messages posted there and in its threads, or, if it names a
        thread, in that thread (moderators' "clear user messages"). Without it, everywhere (a privacy request).
        """
        if channel_id is None:
            result = await self._store.write(
                "DELETE FROM messages WHERE platform = ? AND author_id = ?", (platform, author_id)
            )
        else:
            result = await self._store.write(
                "DELETE FROM messages WHERE platform = ? AND author_id = ? AND (channel_id = ? OR thread_id = ?)",
                (platform, author_id, channel_id, channel_id),
            )
        return result.rowcount

    async def set_rating(self, platform: str, platform_message_id: str, rating: int | None) -> int:
        """Record feedback (+1 / -1, or None to clear) on a logged message; return rows updated (0: not logged)."""
        if rating is not None and rating not in RATINGS:
            raise ValueError(f"rating must be +1, -1 or None, not {rating!r}")
        result = await self._store.write(
            f"UPDATE messages SET rating = ? WHERE id IN ({_ROW_OF})",
            (rating, platform, platform_message_id, platform, platform_message_id),
        )
        return result.rowcount

    async def message_parts(self, platform: str, platform_message_id: str) -> list[str]:
        """The platform ids of every message showing the logged row that this message belongs to, in order.

        `[platform_message_id]` for a row shown as one message; `[]` when the message is not (or no longer) logged.
        """
        row_id = await self._store.fetchval(
            _ROW_OF, (platform, platform_message_id, platform, platform_message_id)
        )
        if row_id is None:
            return []
        rows = await self._store.fetchall(
            "SELECT platform_message_id FROM message_parts WHERE message_id = ? ORDER BY part", (row_id,)
        )
        return [str(r[0]) for r in rows] or [platform_message_id]

    async def recent(self, conversation_id: str, limit: int) -> list[MessageRecord]:
        """The last `limit` committed messages of a conversation, oldest first."""
        limit = max(0, min(limit, RECENT_MAX))
        rows = await self._store.fetchall(
            f"SELECT {_COLUMN_LIST} FROM messages WHERE conversation_id = ? "
            # id breaks ties between turns logged within the same clock tick.
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (conversation_id, limit),
        )
        return [_record(row) for row in reversed(rows)]

    async def count(self, conversation_id: str | None = None) -> int:
        """Committed messages in the log, or in one conversation."""
        if conversation_id is None:
            value = await self._store.fetchval("SELECT count(*) FROM messages")
        else:
            value = await self._store.fetchval(
                "SELECT count(*) FROM messages WHERE conversation_id = ?", (conversation_id,)
            )
        return int(value)


def _values(rec: MessageRecord) -> tuple[object, ...]:
    return tuple(getattr(rec, name) for name in _COLUMNS)


def _record(row: sqlite3.Row) -> MessageRecord:
    return MessageRecord(**{name: row[name] for name in _COLUMNS})
