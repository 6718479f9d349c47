-- 0012: replies moderators taught the character (cogs/teach).
--
-- A moderator who finds a reply wrong or out of character gives the reply it should have given. The teaching keeps
-- its own copy of what the model saw (the conversation turns before the reply, up to 8, as JSON: role, author_id,
-- name, content), the original reply and the taught one, so it stays usable for tuning when the log rows are gone
-- (retention, a deleted message). `reply_row_id` is the log row of the corrected reply while it exists.
--
-- `forget` must find every person in a teaching: the teacher by `teacher_id`, everyone who speaks in the context by
-- `teaching_people` (one row per speaker, filled with the teaching). A forgotten teacher or speaker deletes the whole
-- teaching: a context without one of its turns would teach the wrong thing.

CREATE TABLE teachings (
    id              INTEGER PRIMARY KEY,
    platform        TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    reply_row_id    INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    context         TEXT    NOT NULL,  -- JSON list of {role, author_id, name, content}, oldest first
    original        TEXT    NOT NULL,
    taught          TEXT    NOT NULL,
    teacher_id      TEXT    NOT NULL,
    teacher_name    TEXT    NOT NULL,
    created_at      REAL    NOT NULL
);

-- A second teaching of the same reply replaces the first; ON DELETE SET NULL on a deleted reply looks here too.
CREATE INDEX teachings_reply ON teachings (reply_row_id);
-- `forget` and `export` of a teacher.
CREATE INDEX teachings_teacher ON teachings (platform, teacher_id);

CREATE TABLE teaching_people (
    platform    TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    teaching_id INTEGER NOT NULL REFERENCES teachings (id) ON DELETE CASCADE,
    PRIMARY KEY (platform, user_id, teaching_id)
) WITHOUT ROWID;

-- ON DELETE CASCADE looks up a teaching's people; without this index every deleted teaching scans the table.
CREATE INDEX teaching_people_teaching ON teaching_people (teaching_id);
