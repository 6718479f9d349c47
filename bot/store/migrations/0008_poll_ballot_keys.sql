-- 0008: forgotten voters' ballots in open polls (cogs/polls/ballots.py).
--
-- When a person who voted in a still-open poll asks to be forgotten, their ballot stays (the vote still counts) but
-- its user_id becomes a keyed one-way hash, HMAC-SHA256(secret, platform + user_id), with a random secret kept here
-- per poll. The bot can still recognise the same person in that poll (a new vote replaces the ballot, it never
-- counts twice), yet the row holds no platform id or name. When the poll closes, the hashed keys are replaced by
-- random tokens and the poll's secret is deleted: the tallies remain, nothing links them to anyone.
-- A row exists only for open polls in which someone was forgotten; votes of everyone else never look here.

CREATE TABLE poll_ballot_keys (
    poll_id INTEGER PRIMARY KEY REFERENCES polls (id) ON DELETE CASCADE,
    secret  BLOB    NOT NULL CHECK (length(secret) = 32)
);
