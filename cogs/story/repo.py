"""The story tables (migrations 0003, 0007): every scene, ballot option and vote, written durably; games read back on
start.

Each state change is one transaction, so a crash leaves either the old scene open or the new one, never half. Two
marks let a restart finish what a stop interrupted: a decision stored on a scene still open (`decide`) means its
next scene was being written; a live scene without `posted_at` was stored but never shown on its platform.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass

from bot.store import Store, WriteTx
from cogs.story.state import ActionKind, Game, Option, Turn
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


@dataclass(frozen=True)
class Closing:
    turn_id: int
    decision: Decision
    closed_at: float
    by: str | None = None  # the moderator who decided, if one did


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
            return await _insert_turn(tx, game_id, turn)

        return await self.store.transaction(run)

    async def close_last(
        self, game_id: int, closing: Closing, *, ended_at: float, reason: str, by: str | None
    ) -> None:
        """Decide the final scene and end the game in one transaction."""

        async def run(tx: WriteTx) -> None:
            await _close_turn(tx, closing)
            await tx.execute(
                "UPDATE story_games SET status = 'ended', ended_at = ?, ended_reason = ? WHERE id = ?",
                (ended_at, f"{reason} by {by}" if by else reason, game_id),
            )

        await self.store.transaction(run)

    async def end_game(self, game_id: int, *, ended_at: float, reason: str) -> None:
        await self.store.write(
            "UPDATE story_games SET status = 'ended', ended_at = ?, ended_reason = ? WHERE id = ? AND status = 'active'",
            (ended_at, reason, game_id),
        )

    async def vote(self, turn_id: int, voter: Voter, name: str, option: int, at: float) -> None:
        await self.store.write(
            "INSERT INTO story_votes (turn_id, platform, user_id, user_name, option, voted_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (turn_id, platform, user_id) DO UPDATE SET option = excluded.option,"
            " user_name = excluded.user_name, voted_at = excluded.voted_at",
            (turn_id, voter[0], voter[1], name, option, at),
        )

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
        d = closing.decision
        await self.store.write(
            "UPDATE story_turns SET closed_at = ?, winner = ?, resolution = ?, tie_seed = ?, decided_by = ?"
            " WHERE id = ?",
            (closing.closed_at, d.option, str(d.resolution), d.seed, closing.by, closing.turn_id),
        )

    async def reopen(self, turn_id: int, *, closes_at: float | None) -> None:
        """The next scene could not be written: the vote is open again and its decision void."""
        await self.store.write(
            "UPDATE story_turns SET status = 'open', closes_at = ?, closed_at = NULL, winner = NULL,"
            " resolution = NULL, tie_seed = NULL, decided_by = NULL WHERE id = ?",
            (closes_at, turn_id),
        )

    async def mark_posted(self, turn_id: int, at: float, ref: str | None) -> None:
        """The platform showed the scene (`ref`: its message there, when it is one to edit later)."""
        await self.store.write(
            "UPDATE story_turns SET posted_at = coalesce(posted_at, ?), message_ref = coalesce(?, message_ref)"
            " WHERE id = ?",
            (at, ref, turn_id),
        )

    async def forget_person(self, platform: str, user_id: str) -> int:
        """Privacy: remove one person's votes and anonymise their write-ins (the story itself stays)."""
        removed = await self.store.write(
            "DELETE FROM story_votes WHERE platform = ? AND user_id = ?", (platform, user_id)
        )
        await self.store.write(
            "UPDATE story_options SET author_id = NULL, author_name = 'someone' WHERE author_id = ? AND turn_id IN"
            " (SELECT t.id FROM story_turns t JOIN story_games g ON g.id = t.game_id WHERE g.platform = ?)",
            (user_id, platform),
        )
        return removed.rowcount

    # -- reads ----------------------------------------------------------------------------------------------------
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
                        _turn(row, g["platform"], options[row["id"]], votes[row["id"]]) for row in turn_rows
                    ],
                )
            )
        return games


def _turn(
    row: sqlite3.Row, platform: str, options: list[Option], votes: dict[Voter, tuple[int, str]]
) -> Turn:
    ballot = Ballot(len(options), {voter: option for voter, (option, _) in votes.items()})
    writers = {(platform, o.author_id) for o in options if o.author_id}
    decision = None
    if row["winner"] is not None:
        # Votes are refused once a vote is decided, so the stored votes are the tally it was decided on.
        counts = ballot.counts()
        best = max(counts.values(), default=0)
        resolution = Resolution(row["resolution"])
        tied = tuple(o for o, n in counts.items() if n == best) if resolution is Resolution.TIE else ()
        decision = Decision(row["winner"], resolution, counts, row["tie_seed"], tied)
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
        decided_by=row["decided_by"],
        posted=row["posted_at"] is not None,
    )


async def _close_turn(tx: WriteTx, closing: Closing) -> None:
    d = closing.decision
    await tx.execute(
        "UPDATE story_turns SET status = 'closed', closed_at = ?, winner = ?, resolution = ?, tie_seed = ?,"
        " decided_by = ? WHERE id = ?",
        (closing.closed_at, d.option, str(d.resolution), d.seed, closing.by, closing.turn_id),
    )


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
