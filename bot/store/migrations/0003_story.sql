-- 0003: interactive story games (cogs/story). A game per channel, its turns (scenes), the ballot's options and
-- one row per vote.
--
-- Nothing is rewritten in place when the audience goes back: `undo` and `retry` mark turns 'undone' and add new rows,
-- so every scene and every vote ever cast stays on record. A person (platform, user_id) holds at most one vote row
-- per turn; a changed vote is an upsert of that row, so a tally is a GROUP BY and cannot double-count.

CREATE TABLE story_games (
    id              INTEGER PRIMARY KEY,
    platform        TEXT    NOT NULL CHECK (platform IN ('discord', 'twitch', 'console')),
    channel_id      TEXT    NOT NULL,
    guild_id        TEXT,
    premise         TEXT    NOT NULL,
    narrator        TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    started_by      TEXT    NOT NULL,
    started_by_name TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    ended_at        REAL,
    ended_reason    TEXT
);

-- One active story per channel, enforced by the database as well as by the service.
CREATE UNIQUE INDEX story_games_one_active ON story_games (platform, channel_id) WHERE status = 'active';

CREATE TABLE story_turns (
    id            INTEGER PRIMARY KEY,
    game_id       INTEGER NOT NULL REFERENCES story_games (id) ON DELETE CASCADE,
    number        INTEGER NOT NULL CHECK (number >= 1),
    -- What led here: 'start' (the opening), 'choice' (a ballot option won), 'do'/'say' (a write-in accepted).
    action_kind   TEXT    NOT NULL CHECK (action_kind IN ('start', 'choice', 'do', 'say')),
    action        TEXT    NOT NULL,
    action_by     TEXT,
    narration     TEXT    NOT NULL CHECK (length(narration) > 0),
    -- 'open': voting; 'paused': waiting for a vote without a timer; 'closed': decided; 'undone': taken back.
    status        TEXT    NOT NULL CHECK (status IN ('open', 'paused', 'closed', 'undone')),
    opened_at     REAL    NOT NULL,
    closes_at     REAL,
    closed_at     REAL,
    winner        INTEGER,
    resolution    TEXT,
    tie_seed      INTEGER,
    summary       TEXT,
    message_ref   TEXT,
    model_version TEXT
);

-- The live story: one turn per number among the turns not taken back.
CREATE UNIQUE INDEX story_turns_live ON story_turns (game_id, number) WHERE status != 'undone';
-- Start-up finds the open windows.
CREATE INDEX story_turns_open ON story_turns (status) WHERE status IN ('open', 'paused');

-- The ballot: the model's choices (kind 'choice') and the audience's write-ins ('do'/'say'), numbered from 1.
CREATE TABLE story_options (
    turn_id     INTEGER NOT NULL REFERENCES story_turns (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL CHECK (position BETWEEN 1 AND 9),
    kind        TEXT    NOT NULL CHECK (kind IN ('choice', 'do', 'say')),
    label       TEXT    NOT NULL CHECK (length(label) > 0),
    author_id   TEXT,
    author_name TEXT,
    PRIMARY KEY (turn_id, position)
) WITHOUT ROWID;

CREATE TABLE story_votes (
    turn_id   INTEGER NOT NULL REFERENCES story_turns (id) ON DELETE CASCADE,
    platform  TEXT    NOT NULL,
    user_id   TEXT    NOT NULL,
    user_name TEXT    NOT NULL,
    option    INTEGER NOT NULL,
    voted_at  REAL    NOT NULL,
    PRIMARY KEY (turn_id, platform, user_id)
) WITHOUT ROWID;

-- Privacy requests: every vote of one person.
CREATE INDEX story_votes_person ON story_votes (platform, user_id);
