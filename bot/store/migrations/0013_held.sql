-- 0013: texts the moderation step held (cogs/common/safety.py, models/moderation), for moderators to review.
--
-- What the character wrote and was not allowed to post (kind 'reply' for chat and announcements, 'story' for
-- narration and choices) and what people typed that failed the same rules ('input': a chat message, a story
-- write-in or premise, a poll question or option). None of it is ever posted, and none of it is a row of
-- `messages`, so no dataset can learn from it. `reasons` is the moderator's verdict, one reason per line;
-- `source` is who held it: 'rules', 'classifier', 'twitch-automod' or 'discord-automod'.
--
-- `author_id` is the person the text is about: who typed an input, or whom a held reply answered. `forget` deletes
-- their rows and `export` lists them (cogs/common/held.py). At most `safety.held_keep` rows are kept, newest first.
--
-- `messages.held` marks a logged viewer message the moderation step held (its reply was held): the dataset drops
-- it (models/dataset.py) and the chat memory does not re-read it after a restart.

CREATE TABLE held (
    id          INTEGER PRIMARY KEY,
    created_at  REAL    NOT NULL,
    platform    TEXT    NOT NULL,
    channel_id  TEXT    NOT NULL,
    kind        TEXT    NOT NULL,  -- reply | story | input
    text        TEXT    NOT NULL,
    reasons     TEXT    NOT NULL,
    source      TEXT    NOT NULL DEFAULT '',
    author_id   TEXT,
    author_name TEXT
);

-- The newest first (moderators' list, the dashboard) and pruning to `held_keep`.
CREATE INDEX held_created ON held (created_at);
-- `forget` and `export` of a person.
CREATE INDEX held_author ON held (platform, author_id);

ALTER TABLE messages ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
