-- 0011: when training consent was given, and whether it covers what the person wrote before (cogs/privacy).
--
-- `consent on` used to say "from now on" while a retrain learnt from everything the person had ever written. Now a
-- person's messages count from `since` (the moment their current choice was made) unless `include_history` is 1:
-- they explicitly chose to include their earlier messages (`/privacy consent include_history:True`,
-- `!consent history`, `/consent on history`, `familiar privacy consent ... on --include-history`).
-- For a row with training = 0 nothing counts; `since` is then the moment they withdrew.
--
-- Rows from before keep their meaning: people who said `consent on` did so under the old rule, which used all their
-- messages, earlier ones included, so they get include_history = 1 and keep counting everything they wrote. Their
-- `since` is the moment of that choice (`updated_at`); people who said off stay off.
ALTER TABLE consent ADD COLUMN since REAL NOT NULL DEFAULT 0;
ALTER TABLE consent ADD COLUMN include_history INTEGER NOT NULL DEFAULT 0 CHECK (include_history IN (0, 1));

UPDATE consent SET since = updated_at, include_history = training;
