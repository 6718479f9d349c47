"""The conversation log: every turn on every platform, for memory after a restart, moderation, ratings, datasets.

All writes go through the store's single writer, so operations apply in the order they were called: deleting a
message whose log line is still queued deletes it, because the delete runs after the insert.
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields

from bot.store.db import Store
from bot.store.records import RATINGS, MessageRecord

_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(MessageRecord))
_COLUMN_LIST = ", ".join(_COLUMNS)
_INSERT = f"INSERT INTO messages ({_COLUMN_LIST}) VALUES ({', '.join('?' for _ in _COLUMNS)})"

RECENT_MAX = 1_000  # most rows one `recent` call returns; memory asks for a few dozen


class ConversationLog:
    """Conversation-log queries over a `Store`. Reads see committed rows only (see `Store.flush`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def log(self, rec: MessageRecord) -> None:
        """Queue `rec` for the writer and return without waiting for the disk (a failure is logged).

        Waits only if the write queue is full, which means the disk is far behind; nothing is dropped.
        """
        await self._store.write_nowait(_INSERT, _values(rec))

    async def log_durable(self, rec: MessageRecord) -> int:
        """Store `rec`, wait for the COMMIT, return its row id (to use as another record's `reply_to_id`)."""
        result = await self._store.write(_INSERT, _values(rec))
        assert result.lastrowid is not None  # an INSERT into a rowid table always has one
        return result.lastrowid

    async def delete_platform_message(self, platform: str, platform_message_id: str) -> int:
        """Delete the logged message(s) with this platform id (a user deleted theirs); return rows deleted."""
        result = await self._store.write(
            "DELETE FROM messages WHERE platform = ? AND platform_message_id = ?",
            (platform, platform_message_id),
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
            "UPDATE messages SET rating = ? WHERE platform = ? AND platform_message_id = ?",
            (rating, platform, platform_message_id),
        )
        return result.rowcount

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
