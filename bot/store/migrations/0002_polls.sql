-- 0002: viewer polls (cogs/polls). A poll, its options, where it is shown, and one row per vote.
--
-- Exact tallies come from constraints, not from counters kept in memory: a person (platform, user_id) holds at most
-- one row per poll and slot (slot 0 for a single-choice poll; the option's number for a multiple-choice one), and a
-- changed vote is an upsert of that row. A tally is a GROUP BY over poll_votes, so concurrent votes cannot race.

CREATE TABLE polls (
    id               INTEGER PRIMARY KEY,
    question         TEXT    NOT NULL CHECK (length(question) BETWEEN 1 AND 300),
    multi            INTEGER NOT NULL DEFAULT 0 CHECK (multi IN (0, 1)),
    creator_platform TEXT    NOT NULL,
    creator_id       TEXT    NOT NULL,
    creator_name     TEXT    NOT NULL,
    created_at       REAL    NOT NULL,
    closes_at        REAL    NOT NULL CHECK (closes_at > created_at),
    status           TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'cancelled')),
    closed_at        REAL,
    closed_by        TEXT
);

-- Start-up re-schedules the open polls' closing jobs.
CREATE INDEX polls_open_closes_at ON polls (closes_at) WHERE status = 'open';

CREATE TABLE poll_options (
    poll_id  INTEGER NOT NULL REFERENCES polls (id) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK (position BETWEEN 1 AND 10),
    label    TEXT    NOT NULL CHECK (length(label) BETWEEN 1 AND 55),
    PRIMARY KEY (poll_id, position)
) WITHOUT ROWID;

-- Where a poll is shown: a Discord channel (message_id = the message with the buttons) or a Twitch chat.
-- One open poll per place is enforced by the service; this table lets a restart find the poll of a channel.
-- announced_at stays NULL until the platform has shown the final results there, so a restart announces the polls
-- that closed while the bot was down (or crashed between closing and announcing).
CREATE TABLE poll_displays (
    poll_id      INTEGER NOT NULL REFERENCES polls (id) ON DELETE CASCADE,
    platform     TEXT    NOT NULL,
    channel_id   TEXT    NOT NULL,
    message_id   TEXT,
    announced_at REAL,
    PRIMARY KEY (poll_id, platform, channel_id)
) WITHOUT ROWID;

CREATE INDEX poll_displays_channel ON poll_displays (platform, channel_id, poll_id);

CREATE TABLE poll_votes (
    id       INTEGER PRIMARY KEY,
    poll_id  INTEGER NOT NULL REFERENCES polls (id) ON DELETE CASCADE,
    platform TEXT    NOT NULL,
    user_id  TEXT    NOT NULL,
    slot     INTEGER NOT NULL,
    option   INTEGER NOT NULL,
    voted_at REAL    NOT NULL,
    CHECK (slot = 0 OR slot = option),
    UNIQUE (poll_id, platform, user_id, slot),
    FOREIGN KEY (poll_id, option) REFERENCES poll_options (poll_id, position)
);

-- Tallies: counts per option without touching the table rows.
CREATE INDEX poll_votes_tally ON poll_votes (poll_id, option);
-- Privacy requests: every vote of one person.
CREATE INDEX poll_votes_person ON poll_votes (platform, user_id);
