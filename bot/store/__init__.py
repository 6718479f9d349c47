"""The process's one SQLite database: `Store` (writer + reader), its migrations and the conversation log."""

from bot.store.db import (
    BUSY_TIMEOUT_MS,
    WRITE_BATCH_MAX,
    WRITE_QUEUE_MAX,
    Store,
    StoreStats,
    WriteTx,
)
from bot.store.log import ConversationLog
from bot.store.migrate import Migration, MigrationError, load_migrations
from bot.store.records import MessageRecord, Platform, Role, StoreError, WriteResult

__all__ = [
    "BUSY_TIMEOUT_MS",
    "WRITE_BATCH_MAX",
    "WRITE_QUEUE_MAX",
    "ConversationLog",
    "MessageRecord",
    "Migration",
    "MigrationError",
    "Platform",
    "Role",
    "Store",
    "StoreError",
    "StoreStats",
    "WriteResult",
    "WriteTx",
    "load_migrations",
]
