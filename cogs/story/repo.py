"""The story tables (migrations 0003, 0007, 0009, 0010): every scene, ballot option and vote, written durably; games
read back on start.

Each state change is one transaction, so a crash leaves either the old scene open or the new one, never half. Two
marks let a restart finish what a stop interrupted: a decision stored on a scene still open (`decide`) means its
next scene was being written; a live scene without `posted_at` was stored but never shown on its platform.

A person forgotten while a scene's vote was open keeps one ballot there under a hashed key (`cogs/story/ballots.py`),
and so does their write-in: `vote` writes their new vote under that key, so it replaces the ballot; the transaction
that ends the scene's vote (closed, taken back, story ended) turns such keys into random tokens and deletes the
scene's secret. Who decided a vote and who ended a story are stored by id as well as by name, so that `forget` finds
them (`cogs/story/actors.py`).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass

from bot.store import Store, WriteTx
from cogs.common.ballot_keys import FORGOTTEN_NAME
from cogs.story.actors import ended_reason
from cogs.story.ballots import STORY_BALLOTS, seal_scene
from cogs.story.state import ActionKind, Game, Option, Person, Turn
from cogs.story.voting import Ballot, Decision, Resolution, Voter


@dataclass(frozen=True)
class NewTurn:
    number: int
    action_kind: ActionKind
    action: str
    action_by: str | None
    narration: str
    options: list[Option]
    status: str
    opened_at: float
    closes_at: float | None
    model_version: str | None = None

    def live(self, turn_id: int) -> Turn:
        """The turn as a game holds it in memory once stored under `turn_id`: open, nobody voted yet."""
        return Turn(
            id=turn_id,
            number=self.number,
            action_kind=self.action_kind,
            action=self.action,
            narration=self.narration,
            options=list(self.options),
            status="open",
            opened_at=self.opened_at,
            closes_at=self.closes_at,
            ballot=Ballot(len(self.options)),
        )


@dataclass(frozen=True)
class Closing:
    turn_id: int
    decision: Decision
    closed_at: float
    by: Person | None = None  # the moderator who decided, if one did


class StoryRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writes ---------------------------------------------------------------------------------------------------
    async def create_game(
        self,
        *,
        platform: str,
        channel_id: str,
        guild_id: str | None,
        premise: str,
        narrator: str,
        started_by: Voter,
        started_by_name: str,
        created_at: float,
        turn: NewTurn,
    ) -> tuple[int, int]:
        """Insert the game and its opening scene together; (game id, turn id). Raises if the channel has one."""

        async def run(tx: WriteTx) -> tuple[int, int]:
            game = await tx.execute(
                "INSERT INTO story_games (platform, channel_id, guild_id, premise, narrator, started_by,"
                " started_by_name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    platform,
                    channel_id,
                    guild_id,
                    premise,
                    narrator,
                    started_by[1],  # the platform is the game's
                    started_by_name,
                    created_at,
                ),
            )
            assert game.lastrowid is not None
            turn_id = await _insert_turn(tx, game.lastrowid, turn)
            return game.lastrowid, turn_id

        return await self.store.transaction(run)

    async def advance(
        self, game_id: int, *, closing: Closing | None, undone: list[int], turn: NewTurn
    ) -> int:
        """Close (or take back) the current scenes and add the next one, all or nothing; the new turn's id."""

        async def run(tx: WriteTx) -> int:
            if closing is not None:
                await _close_turn(tx, closing)
            if undone:
                await tx.executemany(
                    "UPDATE story_turns SET status = 'undone' WHERE id = ?",
                    [(turn_id,) for turn_id in undone],
                )
                for turn_id in undone:  # taken back: their votes can no longer change
                    await seal_scene(tx, turn_id)
            return await _insert_turn(tx, game_id, turn)

        return await self.store.transaction(run)

    async def close_last(self, game_id: int, closing: Closing, *, ended_at: float, reason: str) -> None:
        """Decide the final scene and end the game in one transaction."""

        async def run(tx: WriteTx) -> None:
            await _close_turn(tx, closing)
            await tx.execute(
                "UPDATE story_games SET status = 'ended', ended_at = ?, ended_reason = ? WHERE id = ?",
                (ended_at, reason, game_id),
            )

        await self.store.transaction(run)

    async def end_game(self, game_id: int, *, ended_at: float, by: Person) -> None:
        """`by` ended the game; the votes of its open scene can no longer change (forgotten voters' keys are sealed)."""

        async def run(tx: WriteTx) -> None:
            ended = await tx.execute(
                "UPDATE story_games SET status = 'ended', ended_at = ?, ended_reason = ?, ended_by = ?"
                " WHERE id = ? AND status = 'active'",
                (ended_at, ended_reason(by.name), by.user_id, game_id),
            )
            if ended.rowcount:
                for (turn_id,) in await tx.fetchall(
                    "SELECT id FROM story_turns WHERE game_id = ? AND status IN ('open', 'paused')",
                    (game_id,),
                ):
                    await seal_scene(tx, turn_id)

        await self.store.transaction(run)

    async def vote(self, turn_id: int, voter: Voter, name: str, option: int, at: float) -> str:
        """Store the person's vote; returns the key it is stored under.

        That is their id, or the hashed key of a ballot they hold on this scene since they were forgotten: the new
        vote replaces it (and stays nameless), so they never count twice.
        """
        platform, user_id = voter

        async def run(tx: WriteTx) -> str:
            wanted = (turn_id, platform, user_id)
            hashed = (await STORY_BALLOTS.hashed(tx, [wanted])).get(wanted)
            key, shown = (hashed, FORGOTTEN_NAME) if hashed is not None else (user_id, name)
            await tx.execute(
                "INSERT INTO story_votes (turn_id, platform, user_id, user_name, option, voted_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (turn_id, platform, user_id) DO UPDATE SET"
                " option = excluded.option, user_name = excluded.user_name, voted_at = excluded.voted_at",
                (turn_id, platform, key, shown, option, at),
            )
            return key

        return await self.store.transaction(run)

    async def add_option(self, turn_id: int, option: Option) -> None:
        await self.store.write(
            "INSERT INTO story_options (turn_id, position, kind, label, author_id, author_name)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (turn_id, option.position, option.kind, option.label, option.author_id, option.author_name),
        )

    async def set_window(self, turn_id: int, *, status: str, closes_at: float | None) -> None:
        await self.store.write(
            "UPDATE story_turns SET status = ?, closes_at = ? WHERE id = ?", (status, closes_at, turn_id)
        )

    async def set_summary(self, turn_id: int, summary: str) -> None:
        await self.store.write("UPDATE story_turns SET summary = ? WHERE id = ?", (summary, turn_id))

    async def decide(self, closing: Closing) -> None:
        """Store a vote's decision while the scene stays open: the next scene is to be written from it."""
        await self.store.write(
            "UPDATE story_turns SET closed_at = ?, winner = ?, resolution = ?, tie_seed = ?, decided_by = ?,"
            " decided_by_id = ? WHERE id = ?",
            (*_decided(closing), closing.turn_id),
        )

    async def reopen(self, turn_id: int, *, closes_at: float | None) -> None:
        """The next scene could not be written: the vote is open again and its decision void."""
        await self.store.write(
            "UPDATE story_turns SET status = 'open', closes_at = ?, closed_at = NULL, winner = NULL,"
            " resolution = NULL, tie_seed = NULL, decided_by = NULL, decided_by_id = NULL WHERE id = ?",
            (closes_at, turn_id),
        )

    async def mark_posted(self, turn_id: int, at: float, ref: str | None) -> None:
        """The platform showed the scene (`ref`: its message there, when it is one to edit later)."""
        await self.store.write(
            "UPDATE story_turns SET posted_at = coalesce(posted_at, ?), message_ref = coalesce(?, message_ref)"
            " WHERE id = ?",
            (at, ref, turn_id),
        )

    # -- reads ----------------------------------------------------------------------------------------------------
    async def hashed_ballots(
        self, turn_ids: list[int], platform: str, user_id: str
    ) -> dict[int, tuple[str, bytes]]:
        """The scenes on which the person holds a hashed ballot (forgotten while the vote was open): key and secret."""
        voters = [(turn_id, platform, user_id) for turn_id in turn_ids]
        found = await STORY_BALLOTS.hashed(self.store, voters)
        if not found:
            return {}
        secrets = await STORY_BALLOTS.secrets_of(self.store, {turn_id for turn_id, _, _ in found})
        return {
            turn_id: (key, secrets[turn_id]) for (turn_id, _, _), key in found.items() if turn_id in secrets
        }

    async def authors(self, turn_ids: list[int]) -> dict[tuple[int, int], tuple[str | None, str | None]]:
        """`(turn_id, position) -> (author_id, author_name)` of those scenes' write-ins, as stored now."""
        if not turn_ids:
            return {}
        marks = ",".join("?" * len(turn_ids))
        rows = await self.store.fetchall(
            f"SELECT turn_id, position, author_id, author_name FROM story_options WHERE turn_id IN ({marks})"
            " AND kind != 'choice'",
            turn_ids,
        )
        return {(r["turn_id"], r["position"]): (r["author_id"], r["author_name"]) for r in rows}

    async def secrets(self, turn_ids: list[int]) -> dict[int, bytes]:
        """The secrets of those scenes that have one (someone was forgotten there while the vote was open)."""
        return await STORY_BALLOTS.secrets_of(self.store, turn_ids)

    async def deciders(self, turn_ids: list[int]) -> dict[int, Person | None]:
        """Who decided each of those scenes' votes (the moderator, if one did), as stored now."""
        if not turn_ids:
            return {}
        marks = ",".join("?" * len(turn_ids))
        rows = await self.store.fetchall(
            f"SELECT id, decided_by_id, decided_by FROM story_turns WHERE id IN ({marks})", turn_ids
        )
        return {r["id"]: _person(r["decided_by_id"], r["decided_by"]) for r in rows}

    async def starter(self, game_id: int) -> tuple[str, str] | None:
        """`(started_by, started_by_name)` of the game, as stored now."""
        row = await self.store.fetchone(
            "SELECT started_by, started_by_name FROM story_games WHERE id = ?", (game_id,)
        )
        return None if row is None else (row["started_by"], row["started_by_name"])

    async def load_active(self) -> list[Game]:
        """Every active game with its live scenes, ballots and votes, as they were when the process stopped."""
        games: list[Game] = []
        for g in await self.store.fetchall("SELECT * FROM story_games WHERE status = 'active' ORDER BY id"):
            turn_rows = await self.store.fetchall(
                "SELECT * FROM story_turns WHERE game_id = ? AND status != 'undone' ORDER BY number",
                (g["id"],),
            )
            if not turn_rows:
                continue
            ids = [row["id"] for row in turn_rows]
            marks = ",".join("?" * len(ids))
            options: dict[int, list[Option]] = defaultdict(list)
            for o in await self.store.fetchall(
                f"SELECT * FROM story_options WHERE turn_id IN ({marks}) ORDER BY turn_id, position", ids
            ):
                options[o["turn_id"]].append(
                    Option(o["position"], o["kind"], o["label"], o["author_id"], o["author_name"])
                )
            votes: dict[int, dict[Voter, tuple[int, str]]] = defaultdict(dict)
            for v in await self.store.fetchall(f"SELECT * FROM story_votes WHERE turn_id IN ({marks})", ids):
                votes[v["turn_id"]][(v["platform"], v["user_id"])] = (v["option"], v["user_name"])
            secrets = await STORY_BALLOTS.secrets_of(self.store, ids)
            games.append(
                Game(
                    id=g["id"],
                    platform=g["platform"],
                    channel_id=g["channel_id"],
                    guild_id=g["guild_id"],
                    premise=g["premise"],
                    narrator=g["narrator"],
                    started_by=(g["platform"], g["started_by"]),
                    started_by_name=g["started_by_name"],
                    turns=[
                        _turn(
                            row, g["platform"], options[row["id"]], votes[row["id"]], secrets.get(row["id"])
                        )
                        for row in turn_rows
                    ],
                )
            )
        return games


def _turn(
    row: sqlite3.Row,
    platform: str,
    options: list[Option],
    votes: dict[Voter, tuple[int, str]],
    secret: bytes | None,
) -> Turn:
    ballot = Ballot(len(options), {voter: option for voter, (option, _) in votes.items()})
    writers = {(platform, o.author_id) for o in options if o.author_id}
    decision = None
    if row["winner"] is not None:
        # Votes are refused once a vote is decided, so the stored votes are the tally it was decided on.
        decision = ballot.decided(row["winner"], Resolution(row["resolution"]), row["tie_seed"])
    return Turn(
        id=row["id"],
        number=row["number"],
        action_kind=row["action_kind"],
        action=row["action"],
        narration=row["narration"],
        options=options,
        status=row["status"],
        opened_at=row["opened_at"],
        closes_at=row["closes_at"],
        ballot=ballot,
        voter_names={voter: name for voter, (_, name) in votes.items()},
        writers=writers,
        summary=row["summary"],
        message_ref=row["message_ref"],
        decision=decision,
        decided_by=_person(row["decided_by_id"], row["decided_by"]),
        posted=row["posted_at"] is not None,
        secret=secret,
    )


def _person(user_id: str | None, name: str | None) -> Person | None:
    return None if name is None else Person(user_id, name)


def _decided(closing: Closing) -> tuple[object, ...]:
    """`closed_at, winner, resolution, tie_seed, decided_by, decided_by_id` of a decision."""
    d, by = closing.decision, closing.by
    return (
        closing.closed_at,
        d.option,
        str(d.resolution),
        d.seed,
        by.name if by else None,
        by.user_id if by else None,
    )


async def _close_turn(tx: WriteTx, closing: Closing) -> None:
    """The scene is decided and closed: no vote on it can change any more, so forgotten voters' keys are sealed.

    A decision stored beforehand (`decide`, before the next scene was written) keeps its decider as stored: a forget
    may have made them "someone" meanwhile.
    """
    await tx.execute(
        "UPDATE story_turns SET status = 'closed', closed_at = ?, winner = ?, resolution = ?, tie_seed = ?,"
        " decided_by = CASE WHEN winner IS NULL THEN ? ELSE decided_by END,"
        " decided_by_id = CASE WHEN winner IS NULL THEN ? ELSE decided_by_id END WHERE id = ?",
        (*_decided(closing), closing.turn_id),
    )
    await seal_scene(tx, closing.turn_id)


async def _insert_turn(tx: WriteTx, game_id: int, turn: NewTurn) -> int:
    result = await tx.execute(
        "INSERT INTO story_turns (game_id, number, action_kind, action, action_by, narration, status, opened_at,"
        " closes_at, model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            game_id,
            turn.number,
            turn.action_kind,
            turn.action,
            turn.action_by,
            turn.narration,
            turn.status,
            turn.opened_at,
            turn.closes_at,
            turn.model_version,
        ),
    )
    assert result.lastrowid is not None
    await tx.executemany(
        "INSERT INTO story_options (turn_id, position, kind, label, author_id, author_name) VALUES (?, ?, ?, ?, ?, ?)",
        [(result.lastrowid, o.position, o.kind, o.label, o.author_id, o.author_name) for o in turn.options],
    )
    return result.lastrowid
