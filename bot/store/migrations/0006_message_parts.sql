-- 0006: the platform messages of a reply that took several (Discord splits a reply over 2000 characters).
--
-- The reply is one `messages` row, logged under its last message's id (where its buttons are); this table maps
-- every part's id to that row, so deleting or rating any part finds the reply. The parts go with their row
-- (ON DELETE CASCADE): a deleted reply, a forgotten user or retention leaves nothing behind here.
-- A reply that fits in one message has no rows here.

CREATE TABLE message_parts (
    platform            TEXT    NOT NULL,
    platform_message_id TEXT    NOT NULL,
    message_id          INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    part                INTEGER NOT NULL,  -- 0 for the first message of the reply
    PRIMARY KEY (platform, platform_message_id)
) WITHOUT ROWID;

-- ON DELETE CASCADE looks up a row's parts; without this index every deleted message scans the table.
CREATE INDEX message_parts_message ON message_parts (message_id, part);
