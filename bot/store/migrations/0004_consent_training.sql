-- 0004: training consent (cogs/privacy).
--
-- One row per person who said `consent on` or `consent off`; nobody else is listed. Whether an unlisted person's
-- messages may be learnt depends on the platform's mode in the config (opt-in: no; opt-out and all: yes).
-- A `forget` request deletes the person's log rows and sets their row to 0, so an opt-out platform does not start
-- learning from them again.

CREATE TABLE consent (
    platform   TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    training   INTEGER NOT NULL CHECK (training IN (0, 1)),
    updated_at REAL    NOT NULL,
    PRIMARY KEY (platform, user_id)
) WITHOUT ROWID;
