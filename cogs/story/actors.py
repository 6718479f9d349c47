"""The people a story names besides its voters and writers (`cogs/story/ballots.py`): who started it, who decided a
vote as a moderator, who ended it; and what `forget` and `export` do with them.

Each is stored by user id (the platform is the game's) and by name: `story_games.started_by`/`started_by_name`,
`story_turns.decided_by_id`/`decided_by`, `story_games.ended_by` and `ended_reason` ("ended by <name>"). On `forget`
the id becomes a random `forgotten-` token, a different one per row, so the rows are not linked to each other, and
the name "someone": a story they started or ended reads "by someone", a scene they decided "someone chose …". None of
these needs to recognise the person again, so nothing hashed is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cogs.common.ballot_keys import ANONYMOUS_KEY_SQL, FORGOTTEN_NAME

if TYPE_CHECKING:
    from bot.store import Store, WriteTx

_GAMES_ON = "SELECT id FROM story_games WHERE platform = ?"


def ended_reason(name: str) -> str:
    """`story_games.ended_reason` of a story someone ended (the dashboard shows it as it is)."""
    return f"ended by {name}"


async def forget_starter(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: the stories the person started name "someone"; returns stories changed."""
    del anonymous  # one token for every story would link them to each other
    started = await tx.execute(
        f"UPDATE story_games SET started_by = {ANONYMOUS_KEY_SQL}, started_by_name = ?"
        " WHERE platform = ? AND started_by = ?",
        (FORGOTTEN_NAME, platform, user_id),
    )
    return int(started.rowcount)


async def forget_ender(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: the stories the person ended read "ended by someone"; returns stories changed."""
    del anonymous
    ended = await tx.execute(
        f"UPDATE story_games SET ended_by = {ANONYMOUS_KEY_SQL}, ended_reason = ?"
        " WHERE platform = ? AND ended_by = ?",
        (ended_reason(FORGOTTEN_NAME), platform, user_id),
    )
    return int(ended.rowcount)


async def forget_decider(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
    """Privacy hook: the votes the person decided as a moderator name "someone"; returns scenes changed."""
    del anonymous
    decided = await tx.execute(
        f"UPDATE story_turns SET decided_by_id = {ANONYMOUS_KEY_SQL}, decided_by = ?"
        f" WHERE decided_by_id = ? AND game_id IN ({_GAMES_ON})",
        (FORGOTTEN_NAME, user_id, platform),
    )
    return int(decided.rowcount)


async def export_starter(db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT id, premise, created_at FROM story_games WHERE platform = ? AND started_by = ? ORDER BY id",
        (platform, user_id),
    )
    return [dict(r) for r in rows]


async def export_ender(db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT id, ended_at FROM story_games WHERE platform = ? AND ended_by = ? ORDER BY id",
        (platform, user_id),
    )
    return [dict(r) for r in rows]


async def export_decider(db: Store | WriteTx, platform: str, user_id: str) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        f"SELECT id AS turn_id, winner, closed_at FROM story_turns WHERE decided_by_id = ? AND game_id IN ({_GAMES_ON})"
        " ORDER BY id",
        (user_id, platform),
    )
    return [dict(r) for r in rows]
