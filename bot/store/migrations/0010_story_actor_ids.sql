-- 0010: who decided a story vote and who ended a story, by id as well as by name, so `forget` can find them
-- (cogs/story/actors.py).
--
-- `story_turns.decided_by` (0007, the moderator's name) and `story_games.ended_reason` ('ended by <name>') held a
-- display name only, which `forget`, given a platform and an id, could not tie to anyone. `decided_by_id` and
-- `ended_by` now hold that person's user id (the platform is the game's). On `forget` each becomes a random
-- `forgotten-` token, one per row, and the name "someone".
--
-- Rows from before: a vote a moderator decided with their own write-in names them on its winning option, and a story
-- ended by the person who started it names them as its starter; those rows get that id. A name that nothing ties to
-- an id could never be found by a `forget`, so it reads "someone" from now on (the decider of a closed scene is shown
-- nowhere; the dashboard shows such a story as "ended by someone").
ALTER TABLE story_turns ADD COLUMN decided_by_id TEXT;
ALTER TABLE story_games ADD COLUMN ended_by TEXT;

UPDATE story_turns SET decided_by_id = (
    SELECT o.author_id FROM story_options o
    WHERE o.turn_id = story_turns.id AND o.position = story_turns.winner AND o.kind != 'choice'
      AND o.author_name = story_turns.decided_by
      AND o.author_id NOT LIKE 'forgotten-%' AND o.author_id NOT LIKE 'hmac:%'
)
WHERE decided_by IS NOT NULL;
UPDATE story_turns SET decided_by = 'someone' WHERE decided_by IS NOT NULL AND decided_by_id IS NULL;

UPDATE story_games SET ended_by = started_by
WHERE ended_reason = 'ended by ' || started_by_name AND started_by NOT LIKE 'forgotten-%';
UPDATE story_games SET ended_reason = 'ended by someone' WHERE ended_reason LIKE 'ended by %' AND ended_by IS NULL;
