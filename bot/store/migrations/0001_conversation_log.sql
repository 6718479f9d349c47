-- 0001: the conversation log and a small key/value table for settings and tokens.
--
-- A deleted message is removed outright (no tombstone), so nothing the user asked to forget stays on disk;
-- a reply pointing at it keeps its row and loses the link (ON DELETE SET NULL).
-- platform and role are validated by MessageRecord, not by CHECK constraints: SQLite can change a CHECK only by
-- rebuilding the table, and a new platform or role should not need that.

CREATE TABLE messages (
    id                   INTEGER PRIMARY KEY,
    platform             TEXT    NOT NULL,
    guild_id             TEXT,
    channel_id           TEXT    NOT NULL,
    thread_id            TEXT,
    conversation_id      TEXT    NOT NULL,
    platform_message_id  TEXT,
    author_id            TEXT    NOT NULL,
    author_name          TEXT    NOT NULL,
    role                 TEXT    NOT NULL,
    content              TEXT    NOT NULL,
    reply_to_id          INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    reply_to_platform_id TEXT,
    created_at           REAL    NOT NULL,
    model_version        TEXT,
    latency_ms           INTEGER,
    rating               INTEGER CHECK (rating IN (-1, 1))
);

-- Deleting and rating by the platform's message id.
CREATE INDEX messages_platform_message ON messages (platform, platform_message_id);
-- A conversation's tail, for memory rebuilt after a restart.
CREATE INDEX messages_conversation_time ON messages (conversation_id, created_at);
-- Moderators' "clear user messages" and privacy requests.
CREATE INDEX messages_platform_author ON messages (platform, author_id);
-- Datasets and retention by date.
CREATE INDEX messages_created_at ON messages (created_at);
-- ON DELETE SET NULL looks up referencing rows; without this index every delete scans the table.
CREATE INDEX messages_reply_to ON messages (reply_to_id);

CREATE TABLE kv (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
