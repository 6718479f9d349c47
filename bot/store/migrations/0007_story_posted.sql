-- 0007: story scenes survive a stop or a crash between "decided" and "shown" (cogs/story).
--
-- `posted_at`: when the scene's platform confirmed it showed the scene (Discord: its message was sent; Twitch: every
-- part of it went out; console: it was printed). A live scene without it was stored but never shown, because a stop
-- or a crash came first: the next start announces it, once. Scenes stored before this migration were announced by
-- the code of their time, so they count as posted.
-- `decided_by`: the moderator who decided the vote, if one did. A turn still 'open' or 'paused' whose `winner` is
-- set was decided, but the scene that follows was not stored yet: the next start writes it from this decision.
ALTER TABLE story_turns ADD COLUMN posted_at REAL;
ALTER TABLE story_turns ADD COLUMN decided_by TEXT;
UPDATE story_turns SET posted_at = opened_at;
