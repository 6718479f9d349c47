"""Forgotten voters' story votes: one person, one vote per scene, even after `forget` — without keeping who they are.

A story vote row is keyed by the voter, `(turn_id, platform, user_id)`, and holds their name. When a person asks to be
forgotten (the generic part, shared with polls, is `cogs/common/ballot_keys.py`):

- on a scene whose vote is still open (the turn is 'open' or 'paused' in an active story; a decided scene whose next
  scene is not written yet counts, as its vote reopens if the narrator fails), their vote keeps counting, but its
  `user_id` becomes `hmac:` + HMAC-SHA256 of the platform and id under a random secret of that scene
  (`story_ballot_keys`) and its name "someone". A later vote of theirs on that scene is written under that key, so it
  replaces the ballot as any changed vote does.
- on every other scene, and on an open one once its vote closes (`seal`: the scene is closed, taken back by undo or
  retry, or its story ends), the key becomes a random `forgotten-` token, a different one per scene, and the scene's
  secret is deleted: the tallies remain, nothing links them to anyone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cogs.common.ballot_keys import KeyedBallots

if TYPE_CHECKING:
    from bot.store import Store, WriteTx

STORY_BALLOTS = KeyedBallots(
    votes="story_votes",
    vote_id="turn_id",
    secrets="story_ballot_keys",
    open_votes=(
        "SELECT t.id FROM story_turns t JOIN story_games g ON g.id = t.game_id "
        "WHERE t.status IN ('open', 'paused') AND g.status = 'active'"
    ),
    names=("user_name",),
)


async def forget_voter(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: re-key the person's story votes (hashed on open scenes, random elsewhere); returns rows."""
    del anonymous  # one token for every scene would link their votes to each other: each scene gets its own
    return await STORY_BALLOTS.forget(tx, platform, user_id)


async def export_voter(db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
    """Privacy hook: the person's story votes, including those on open scenes kept under their hashed key."""
    return await STORY_BALLOTS.export(db, platform, user_id)
