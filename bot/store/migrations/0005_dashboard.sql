-- 0006: the owner's dashboard (bot/dashboard). Rollups kept exact by triggers, and indexes for windowed reads.
--
-- A page must not scan a year of log to draw a chart, so the all-time and per-hour numbers are kept as they change:
-- every insert, delete (a user deleted a message, `forget`, retention) and rating/version change of a `messages` row
-- adjusts `dash_hourly` and `dash_model` in the same transaction. Nothing here names a person: a forgotten user's
-- rows leave the log and their counts leave the rollups with them. The backfill at the end covers rows logged before
-- this migration.

-- Messages per hour (unix time / 3600), platform and channel; user messages and the character's replies apart.
-- System rows (reset markers) are not conversation and are not counted.
CREATE TABLE dash_hourly (
    hour       INTEGER NOT NULL,
    platform   TEXT    NOT NULL,
    channel_id TEXT    NOT NULL,
    user_msgs  INTEGER NOT NULL DEFAULT 0,
    bot_msgs   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, platform, channel_id)
) WITHOUT ROWID;

-- Per served model version: replies, latency sum and count (rows with a latency), ratings.
CREATE TABLE dash_model (
    model_version TEXT    PRIMARY KEY,
    replies       INTEGER NOT NULL DEFAULT 0,
    latency_sum   INTEGER NOT NULL DEFAULT 0,
    latency_n     INTEGER NOT NULL DEFAULT 0,
    up            INTEGER NOT NULL DEFAULT 0,
    down          INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- When each version served (first/last reply): min/max over this index are two seeks.
CREATE INDEX dash_messages_model_time ON messages (model_version, created_at) WHERE model_version IS NOT NULL;
-- Active people, top speakers and the text samples for topics and sentiment in a time window, without table scans.
CREATE INDEX dash_messages_people ON messages (created_at, platform, author_id, author_name) WHERE role = 'user';
-- A story's turns, for its turn, vote and write-in counts (story_turns_live covers only the turns not taken back).
CREATE INDEX dash_story_turns_game ON story_turns (game_id);

CREATE TRIGGER dash_messages_insert AFTER INSERT ON messages WHEN NEW.role != 'system'
BEGIN
    INSERT INTO dash_hourly (hour, platform, channel_id, user_msgs, bot_msgs)
    VALUES (CAST(NEW.created_at / 3600 AS INTEGER), NEW.platform, NEW.channel_id,
            NEW.role = 'user', NEW.role != 'user')
    ON CONFLICT (hour, platform, channel_id) DO UPDATE
        SET user_msgs = user_msgs + excluded.user_msgs, bot_msgs = bot_msgs + excluded.bot_msgs;
    INSERT INTO dash_model (model_version, replies, latency_sum, latency_n, up, down)
    SELECT NEW.model_version, 1, coalesce(NEW.latency_ms, 0), NEW.latency_ms IS NOT NULL,
           coalesce(NEW.rating, 0) = 1, coalesce(NEW.rating, 0) = -1
    WHERE NEW.model_version IS NOT NULL AND NEW.role != 'user'
    ON CONFLICT (model_version) DO UPDATE
        SET replies = replies + 1, latency_sum = latency_sum + excluded.latency_sum,
            latency_n = latency_n + excluded.latency_n, up = up + excluded.up, down = down + excluded.down;
END;

CREATE TRIGGER dash_messages_delete AFTER DELETE ON messages WHEN OLD.role != 'system'
BEGIN
    UPDATE dash_hourly
        SET user_msgs = user_msgs - (OLD.role = 'user'), bot_msgs = bot_msgs - (OLD.role != 'user')
        WHERE hour = CAST(OLD.created_at / 3600 AS INTEGER) AND platform = OLD.platform
          AND channel_id = OLD.channel_id;
    DELETE FROM dash_hourly
        WHERE hour = CAST(OLD.created_at / 3600 AS INTEGER) AND platform = OLD.platform
          AND channel_id = OLD.channel_id AND user_msgs <= 0 AND bot_msgs <= 0;
    UPDATE dash_model
        SET replies = replies - 1, latency_sum = latency_sum - coalesce(OLD.latency_ms, 0),
            latency_n = latency_n - (OLD.latency_ms IS NOT NULL), up = up - (coalesce(OLD.rating, 0) = 1),
            down = down - (coalesce(OLD.rating, 0) = -1)
        WHERE OLD.model_version IS NOT NULL AND OLD.role != 'user' AND model_version = OLD.model_version;
    DELETE FROM dash_model WHERE model_version = OLD.model_version AND replies <= 0;
END;

-- A rating (👍/👎) or any other counted column changed: take the old row out and put the new one in.
CREATE TRIGGER dash_messages_update
AFTER UPDATE OF rating, latency_ms, model_version, role, platform, channel_id, created_at ON messages
BEGIN
    UPDATE dash_hourly
        SET user_msgs = user_msgs - (OLD.role = 'user'), bot_msgs = bot_msgs - (OLD.role != 'user')
        WHERE OLD.role != 'system' AND hour = CAST(OLD.created_at / 3600 AS INTEGER)
          AND platform = OLD.platform AND channel_id = OLD.channel_id;
    DELETE FROM dash_hourly
        WHERE hour = CAST(OLD.created_at / 3600 AS INTEGER) AND platform = OLD.platform
          AND channel_id = OLD.channel_id AND user_msgs <= 0 AND bot_msgs <= 0;
    UPDATE dash_model
        SET replies = replies - 1, latency_sum = latency_sum - coalesce(OLD.latency_ms, 0),
            latency_n = latency_n - (OLD.latency_ms IS NOT NULL), up = up - (coalesce(OLD.rating, 0) = 1),
            down = down - (coalesce(OLD.rating, 0) = -1)
        WHERE OLD.model_version IS NOT NULL AND OLD.role NOT IN ('user', 'system')
          AND model_version = OLD.model_version;
    DELETE FROM dash_model WHERE model_version = OLD.model_version AND replies <= 0;
    INSERT INTO dash_hourly (hour, platform, channel_id, user_msgs, bot_msgs)
    SELECT CAST(NEW.created_at / 3600 AS INTEGER), NEW.platform, NEW.channel_id,
           NEW.role = 'user', NEW.role != 'user'
    WHERE NEW.role != 'system'
    ON CONFLICT (hour, platform, channel_id) DO UPDATE
        SET user_msgs = user_msgs + excluded.user_msgs, bot_msgs = bot_msgs + excluded.bot_msgs;
    INSERT INTO dash_model (model_version, replies, latency_sum, latency_n, up, down)
    SELECT NEW.model_version, 1, coalesce(NEW.latency_ms, 0), NEW.latency_ms IS NOT NULL,
           coalesce(NEW.rating, 0) = 1, coalesce(NEW.rating, 0) = -1
    WHERE NEW.model_version IS NOT NULL AND NEW.role NOT IN ('user', 'system')
    ON CONFLICT (model_version) DO UPDATE
        SET replies = replies + 1, latency_sum = latency_sum + excluded.latency_sum,
            latency_n = latency_n + excluded.latency_n, up = up + excluded.up, down = down + excluded.down;
END;

-- Rows logged before this migration.
INSERT INTO dash_hourly (hour, platform, channel_id, user_msgs, bot_msgs)
SELECT CAST(created_at / 3600 AS INTEGER), platform, channel_id, sum(role = 'user'), sum(role != 'user')
FROM messages WHERE role != 'system'
GROUP BY 1, 2, 3;

INSERT INTO dash_model (model_version, replies, latency_sum, latency_n, up, down)
SELECT model_version, count(*), coalesce(sum(latency_ms), 0), count(latency_ms),
       sum(coalesce(rating, 0) = 1), sum(coalesce(rating, 0) = -1)
FROM messages WHERE model_version IS NOT NULL AND role NOT IN ('user', 'system')
GROUP BY model_version;
