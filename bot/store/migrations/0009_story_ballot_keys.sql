-- 0009: forgotten voters' ballots in open story votes (cogs/story/ballots.py, cogs/common/ballot_keys.py).
--
-- As 0008 does for polls: when a person who voted on a scene whose vote is still open asks to be forgotten, their
-- vote stays (it still counts) but its user_id becomes a keyed one-way hash, HMAC-SHA256(secret, platform + user_id),
-- and its user_name 'someone', with a random secret kept here per scene (story turn). The bot can still recognise the
-- same person on that scene (a new vote replaces the ballot, it never counts twice), yet the row holds no platform id
-- or name. When the scene's vote closes (the scene is closed, taken back, or its story ends), the hashed keys are
-- replaced by random tokens and the scene's secret is deleted: the tallies remain, nothing links them to anyone.
-- A row exists only for open scenes on which someone was forgotten; votes of everyone else never look here.

CREATE TABLE story_ballot_keys (
    turn_id INTEGER PRIMARY KEY REFERENCES story_turns (id) ON DELETE CASCADE,
    secret  BLOB    NOT NULL CHECK (length(secret) = 32)
);
