"""Forgotten people on story ballots: one vote and one write-in per person per scene, even after `forget` — without
keeping who they are.

A story vote row is keyed by the voter, `(turn_id, platform, user_id)`, and holds their name; a write-in is a ballot
option with its author's id and name. When a person asks to be forgotten (the generic part, shared with polls, is
`cogs/common/ballot_keys.py`):

- on a scene whose vote is still open (the turn is 'open' or 'paused' in an active story; a decided scene whose next
  scene is not written yet counts, as its vote reopens if the narrator fails), their vote keeps counting, but its
  `user_id` becomes `hmac:` + HMAC-SHA256 of the platform and id under a random secret of that scene
  (`story_ballot_keys`) and its name "someone". A later vote of theirs on that scene is written under that key, so it
  replaces the ballot as any changed vote does. Their write-in there keeps its place on the ballot under the same
  kind of key, so they still cannot add a second one to that scene.
- on every other scene, and on an open one once its vote closes (`seal_scene`: the scene is closed, taken back by undo
  or retry, or its story ends), the key becomes a random `forgotten-` token, a different one per scene, and the
  scene's secret is deleted: the tallies and the write-ins remain, nothing links them to anyone.

A write-in that won led to a scene whose action quotes its author (`Ann says "…"`, see `Option.action`) and names
them (`action_by`); the extractive recap line of the scene it was written on quotes that action too. Those become
"someone" with the write-in. What the narrator wrote from it is story content and stays as it was written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cogs.common.ballot_keys import (
    ANONYMOUS_KEY_SQL,
    FORGOTTEN_NAME,
    HASHED_PREFIX,
    KeyedBallots,
)
from cogs.story.state import Option

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


async def forget_writer(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: the person's write-ins name "someone" under a hashed key (open scenes) or a random token (one
    per scene), and so do the actions they led to; returns write-ins changed."""
    del anonymous  # one token for every write-in would link them to each other
    rows = await tx.fetchall(
        "SELECT o.turn_id, o.position, o.kind, o.label, o.author_name, t.game_id, t.number,"
        f" o.turn_id IN ({STORY_BALLOTS.open_votes}) AS still_open FROM story_options o"
        " JOIN story_turns t ON t.id = o.turn_id JOIN story_games g ON g.id = t.game_id"
        " WHERE g.platform = ? AND o.author_id = ?",
        (platform, user_id),
    )
    for r in rows:
        turn_id = r["turn_id"]
        # Hashed on an open scene: the one-write-in rule still holds for them there.
        key = await STORY_BALLOTS.forgotten_key(
            tx, turn_id, platform, user_id, still_open=bool(r["still_open"])
        )
        was = Option(r["position"], r["kind"], r["label"], author_name=r["author_name"]).action
        now = Option(r["position"], r["kind"], r["label"], author_name=FORGOTTEN_NAME).action
        # The next scene, if this write-in won (undone and retried versions of it too).
        await tx.execute(
            "UPDATE story_turns SET action = ?, action_by = CASE WHEN action_by IS NULL THEN NULL ELSE ? END"
            " WHERE game_id = ? AND number = ? AND action_kind = ? AND action = ?"
            " AND (action_by IS NULL OR action_by = ?)",
            (now, FORGOTTEN_NAME, r["game_id"], r["number"] + 1, r["kind"], was, r["author_name"]),
        )
        if was != now:  # the recap line of the scene it was written on quotes it
            await tx.execute(
                "UPDATE story_turns SET summary = replace(summary, ?, ?)"
                " WHERE game_id = ? AND number = ? AND instr(summary, ?) > 0",
                (was, now, r["game_id"], r["number"], was),
            )
        await tx.execute(
            "UPDATE story_options SET author_id = ?, author_name = ? WHERE turn_id = ? AND position = ?",
            (key, FORGOTTEN_NAME, turn_id, r["position"]),
        )
    return len(rows)


async def export_writer(db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
    """Privacy hook: the person's write-ins, including those on open scenes kept under their hashed key."""
    query = (
        "SELECT o.turn_id, o.kind, o.label FROM story_options o JOIN story_turns t ON t.id = o.turn_id"
        " JOIN story_games g ON g.id = t.game_id WHERE g.platform = ? AND o.author_id = ?"
    )
    rows = [dict(r) for r in await db.fetchall(query, (platform, user_id))]
    for turn_id, key in await STORY_BALLOTS.hashed_keys(db, platform, user_id):
        rows.extend(
            dict(r) for r in await db.fetchall(f"{query} AND o.turn_id = ?", (platform, key, turn_id))
        )
    return rows


async def seal_scene(tx: WriteTx, turn_id: int) -> None:
    """The scene's vote has ended: hashed keys of its votes and write-ins become random tokens, its secret goes."""
    if not await STORY_BALLOTS.seal(tx, turn_id):  # nobody was forgotten on it: no hashed key anywhere
        return
    await tx.execute(
        f"UPDATE story_options SET author_id = {ANONYMOUS_KEY_SQL}"
        f" WHERE turn_id = ? AND author_id LIKE '{HASHED_PREFIX}%'",
        (turn_id,),
    )
