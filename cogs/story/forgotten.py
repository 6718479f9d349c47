"""What `forget` does to a game held in memory, once `cogs/privacy` has changed the database.

Memory follows the disk (`cogs/story/ballots.py`, `cogs/story/actors.py`): a forgotten person's vote on an open scene
moves to the hashed key it is now stored under, on a closed scene it becomes a token linked to nothing; their
write-ins, the actions those led to, the votes they decided and the stories they started read as stored ("someone").
"""

from __future__ import annotations

from cogs.common.ballot_keys import FORGOTTEN_NAME, anonymous_key
from cogs.story.repo import StoryRepo
from cogs.story.state import Game, Turn


async def forget_in_game(repo: StoryRepo, game: Game, platform: str, user_id: str) -> bool:
    """Make `game` stop naming the person; True when its open scene's ballot showed their write-in (redraw it)."""
    person = (platform, user_id)
    voted = [t.id for t in game.turns if person in t.ballot or person in t.voter_names]
    wrote = [t.id for t in game.turns if any(o.author_id == user_id for o in t.options)]
    decided = [t.id for t in game.turns if t.decided_by is not None and t.decided_by.user_id == user_id]
    started = game.started_by == person
    if not (voted or wrote or decided or started):
        return False
    # Every read first; then memory changes without an await, so no vote interleaves with the change.
    hashed = await repo.hashed_ballots(voted, platform, user_id)
    authors = await repo.authors(wrote)
    secrets = await repo.secrets(wrote)
    deciders = await repo.deciders(decided)
    starter = await repo.starter(game.id) if started else None
    for turn in game.turns:
        if turn.id in hashed:
            key, turn.secret = hashed[turn.id]
            turn.rekey(person, (platform, key))
        elif person in turn.ballot and turn.status not in ("open", "paused"):
            # A closed scene: a token linked to nothing, as on disk (not the same one, which is unknowable).
            turn.rekey(person, (platform, anonymous_key()))
        if person not in turn.ballot:
            turn.voter_names.pop(person, None)
        turn.writers.discard(person)
        if turn.id in secrets:
            turn.secret = secrets[turn.id]
        if turn.id in wrote:
            _rename_writer(game, turn, user_id, authors)
        stored = deciders.get(turn.id)
        if stored is not None and stored.user_id != user_id:
            turn.decided_by = stored
    if starter is not None:
        game.started_by, game.started_by_name = (platform, starter[0]), starter[1]
    current = game.current
    return current.id in wrote and current.status in ("open", "paused") and not current.closing


def _rename_writer(
    game: Game, turn: Turn, user_id: str, authors: dict[tuple[int, int], tuple[str | None, str | None]]
) -> None:
    """The person's write-ins on `turn` take their stored author; as on disk, so do the action a write-in led to
    ("someone says …", on the scene after) and the recap line quoting that action (on `turn` itself)."""
    for option in turn.options:
        if option.author_id != user_id:
            continue
        was = option.action
        option.author_id, option.author_name = authors.get((turn.id, option.position), (None, FORGOTTEN_NAME))
        now = option.action
        if now == was:
            continue
        for other in game.turns:
            if other.number == turn.number + 1 and other.action_kind == option.kind and other.action == was:
                other.action = now
            if other.number == turn.number and other.summary and was in other.summary:
                other.summary = other.summary.replace(was, now)
