"""The polls' SQL: reading polls and tallies, creating, closing, and applying a batch of votes in one transaction.

Writes go through the Store's single writer, so each call here is durable when it returns. Votes are applied in
batches (`apply_votes`) inside one `Store.transaction`: the poll's state is checked and the votes upserted in the
same transaction, so a vote is either counted before a close or refused after it, never both, and never twice.

A person forgotten while a poll was open keeps one ballot there under a hashed key (`cogs/polls/ballots.py`): their
votes are written under that key, so a new one replaces it; closing the poll turns such keys into random tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from cogs.polls.ballots import POLL_BALLOTS
from cogs.polls.model import Display, Poll, PollConflict, PollDraft, PollStatus
from cogs.polls.results import Results

if TYPE_CHECKING:
    import sqlite3

    from bot.store import Store
    from bot.store.db import WriteTx

UPSERT_VOTE = (
    "INSERT INTO poll_votes (poll_id, platform, user_id, slot, option, voted_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (poll_id, platform, user_id, slot) DO UPDATE SET option = excluded.option, voted_at = excluded.voted_at"
)
DELETE_VOTE = (
    "DELETE FROM poll_votes WHERE poll_id = ? AND platform = ? AND user_id = ? AND slot = ? AND option = ?"
)
_POLL_COLUMNS = "id, question, multi, creator_platform, creator_id, creator_name, created_at, closes_at, status, closed_at"


class VoteAction(StrEnum):
    RECORDED = "recorded"  # stored (new, or replacing the person's earlier choice)
    REMOVED = "removed"  # a toggle that took back an earlier pick (multiple choice)
    CLOSED = "closed"  # the poll had closed by the time the vote reached the database


@dataclass(frozen=True)
class VoteRow:
    """One vote as the writer applies it. `slot` is 0 for single choice, the option for multiple choice."""

    poll_id: int
    platform: str
    user_id: str
    option: int
    multi: bool
    toggle: bool = False

    @property
    def slot(self) -> int:
        return self.option if self.multi else 0


class PollStorage:
    def __init__(self, store: Store) -> None:
        self._store = store

    # ----------------------------------------------------------------------------------------------- reads
    async def get(self, poll_id: int) -> Poll | None:
        row = await self._store.fetchone(f"SELECT {_POLL_COLUMNS} FROM polls WHERE id = ?", (poll_id,))
        if row is None:
            return None
        return (await self._hydrate([row]))[0]

    async def open_polls(self) -> list[Poll]:
        rows = await self._store.fetchall(
            f"SELECT {_POLL_COLUMNS} FROM polls WHERE status = 'open' ORDER BY closes_at, id"
        )
        return await self._hydrate(rows)

    async def latest_in(self, platform: str, channel_id: str) -> Poll | None:
        """The most recent poll shown in a channel, open or not."""
        poll_id = await self._store.fetchval(
            "SELECT poll_id FROM poll_displays WHERE platform = ? AND channel_id = ? ORDER BY poll_id DESC LIMIT 1",
            (platform, channel_id),
        )
        return None if poll_id is None else await self.get(int(poll_id))

    async def results(self, poll: Poll) -> Results:
        counts = dict.fromkeys(range(1, len(poll.options) + 1), 0)
        for option, n in await self._store.fetchall(
            "SELECT option, COUNT(*) FROM poll_votes WHERE poll_id = ? GROUP BY option", (poll.id,)
        ):
            counts[int(option)] = int(n)
        by_platform = [
            (str(platform), int(n))
            for platform, n in await self._store.fetchall(
                "SELECT platform, COUNT(DISTINCT user_id) FROM poll_votes WHERE poll_id = ? "
                "GROUP BY platform ORDER BY platform",
                (poll.id,),
            )
        ]
        return Results(
            poll=poll,
            counts=tuple(counts[i] for i in sorted(counts)),
            voters=sum(n for _, n in by_platform),
            by_platform=tuple(by_platform),
        )

    async def choices_of(self, poll_id: int, platform: str, user_id: str) -> list[int]:
        voter = (poll_id, platform, user_id)
        key = (await POLL_BALLOTS.hashed(self._store, [voter])).get(voter, user_id)
        rows = await self._store.fetchall(
            "SELECT option FROM poll_votes WHERE poll_id = ? AND platform = ? AND user_id = ? ORDER BY option",
            (poll_id, platform, key),
        )
        return [int(r[0]) for r in rows]

    async def _hydrate(self, rows: Sequence[sqlite3.Row]) -> list[Poll]:
        if not rows:
            return []
        ids = [int(r[0]) for r in rows]
        marks = ",".join("?" * len(ids))
        options: dict[int, list[str]] = {i: [] for i in ids}
        for poll_id, label in await self._store.fetchall(
            f"SELECT poll_id, label FROM poll_options WHERE poll_id IN ({marks}) ORDER BY poll_id, position",
            ids,
        ):
            options[int(poll_id)].append(str(label))
        displays: dict[int, list[Display]] = {i: [] for i in ids}
        for poll_id, platform, channel_id, message_id in await self._store.fetchall(
            f"SELECT poll_id, platform, channel_id, message_id FROM poll_displays WHERE poll_id IN ({marks}) "
            "ORDER BY poll_id, platform, channel_id",
            ids,
        ):
            displays[int(poll_id)].append(Display(str(platform), str(channel_id), message_id))
        return [
            Poll(
                id=int(r[0]),
                question=str(r[1]),
                multi=bool(r[2]),
                creator_platform=str(r[3]),
                creator_id=str(r[4]),
                creator_name=str(r[5]),
                created_at=float(r[6]),
                closes_at=float(r[7]),
                status=PollStatus(r[8]),
                closed_at=None if r[9] is None else float(r[9]),
                options=tuple(options[int(r[0])]),
                displays=tuple(displays[int(r[0])]),
            )
            for r in rows
        ]

    # ----------------------------------------------------------------------------------------------- writes
    async def create(
        self,
        draft: PollDraft,
        *,
        creator_platform: str,
        creator_id: str,
        creator_name: str,
        created_at: float,
        displays: Sequence[Display],
    ) -> int:
        """Insert the poll, its options and displays in one transaction; refuse a place that already runs a poll."""

        async def run(tx: WriteTx) -> int:
            for d in displays:
                busy = await tx.fetchval(
                    "SELECT d.poll_id FROM poll_displays d JOIN polls p ON p.id = d.poll_id "
                    "WHERE d.platform = ? AND d.channel_id = ? AND p.status = 'open' LIMIT 1",
                    (d.platform, d.channel_id),
                )
                if busy is not None:
                    raise PollConflict(
                        f"Poll #{busy} is still running in this channel ({d.platform}); close it first."
                    )
            result = await tx.execute(
                "INSERT INTO polls (question, multi, creator_platform, creator_id, creator_name, created_at, "
                "closes_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    draft.question,
                    int(draft.multi),
                    creator_platform,
                    creator_id,
                    creator_name,
                    created_at,
                    created_at + draft.duration_s,
                ),
            )
            poll_id = result.lastrowid
            assert poll_id is not None
            await tx.executemany(
                "INSERT INTO poll_options (poll_id, position, label) VALUES (?, ?, ?)",
                [(poll_id, i, label) for i, label in enumerate(draft.options, 1)],
            )
            await tx.executemany(
                "INSERT INTO poll_displays (poll_id, platform, channel_id, message_id) VALUES (?, ?, ?, ?)",
                [(poll_id, d.platform, d.channel_id, d.message_id) for d in displays],
            )
            return poll_id

        return await self._store.transaction(run)

    async def set_message(self, poll_id: int, platform: str, channel_id: str, message_id: str) -> None:
        await self._store.write(
            "INSERT INTO poll_displays (poll_id, platform, channel_id, message_id) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (poll_id, platform, channel_id) DO UPDATE SET message_id = excluded.message_id",
            (poll_id, platform, channel_id, message_id),
        )

    async def unannounced(self, platform: str, *, since: float) -> tuple[list[tuple[int, str]], list[int]]:
        """Closed polls on `platform` with results not yet shown: (too old to announce, polls to announce)."""
        rows = await self._store.fetchall(
            "SELECT d.poll_id, d.channel_id, p.closed_at FROM poll_displays d JOIN polls p ON p.id = d.poll_id "
            "WHERE d.platform = ? AND d.announced_at IS NULL AND p.status != 'open' ORDER BY d.poll_id",
            (platform,),
        )
        stale = [(int(r[0]), str(r[1])) for r in rows if r[2] is not None and float(r[2]) < since]
        due = sorted({int(r[0]) for r in rows if r[2] is None or float(r[2]) >= since})
        return stale, due

    async def mark_announced(self, poll_id: int, platform: str, channel_id: str | None, *, at: float) -> None:
        """Record that the results were shown in one place (or, with `channel_id=None`, in every place on `platform`)."""
        if channel_id is None:
            await self._store.write(
                "UPDATE poll_displays SET announced_at = ? WHERE poll_id = ? AND platform = ? AND announced_at IS NULL",
                (at, poll_id, platform),
            )
        else:
            await self._store.write(
                "UPDATE poll_displays SET announced_at = ? WHERE poll_id = ? AND platform = ? AND channel_id = ?",
                (at, poll_id, platform, channel_id),
            )

    async def finish(self, poll_id: int, status: PollStatus, *, at: float, by: str) -> bool:
        """Mark an open poll closed or cancelled; False if it was not open any more.

        In the same transaction, forgotten voters' hashed keys become random tokens (nothing to recognise them by
        once no vote can change).
        """

        async def run(tx: WriteTx) -> bool:
            result = await tx.execute(
                "UPDATE polls SET status = ?, closed_at = ?, closed_by = ? WHERE id = ? AND status = 'open'",
                (status.value, at, by, poll_id),
            )
            if result.rowcount != 1:
                return False
            await POLL_BALLOTS.seal(tx, poll_id)
            return True

        return await self._store.transaction(run)

    async def apply_votes(self, votes: Sequence[VoteRow], *, now: float) -> list[VoteAction]:
        """Apply votes in order, in one transaction; votes on polls not open at `now` come back CLOSED."""

        async def run(tx: WriteTx) -> list[VoteAction]:
            return await apply_votes(tx, votes, now=now)

        return await self._store.transaction(run)


async def apply_votes(tx: WriteTx, votes: Sequence[VoteRow], *, now: float) -> list[VoteAction]:
    """The vote batch itself (runs on the writer): one state check, then upserts in order.

    Consecutive plain votes go through one `executemany` (the fast path); a toggle needs its own DELETE to know
    whether it takes a pick back or adds one. Polls without forgotten voters cost one extra indexed read per batch.
    """
    poll_ids = sorted({v.poll_id for v in votes})
    marks = ",".join("?" * len(poll_ids))
    rows = await tx.fetchall(
        f"SELECT id FROM polls WHERE status = 'open' AND closes_at > ? AND id IN ({marks})", (now, *poll_ids)
    )
    open_ids = {int(r[0]) for r in rows}
    # People forgotten in a poll while it runs vote under their hashed key there: the new vote replaces the ballot.
    hashed = await POLL_BALLOTS.hashed(
        tx, {(v.poll_id, v.platform, v.user_id) for v in votes if v.poll_id in open_ids}
    )
    actions: list[VoteAction] = []
    run: list[tuple[object, ...]] = []
    for v in votes:
        if v.poll_id not in open_ids:
            actions.append(VoteAction.CLOSED)
            continue
        key = hashed.get((v.poll_id, v.platform, v.user_id), v.user_id)
        params = (v.poll_id, v.platform, key, v.slot, v.option, now)
        if not v.toggle:
            run.append(params)
            actions.append(VoteAction.RECORDED)
            continue
        if run:
            await tx.executemany(UPSERT_VOTE, run)
            run = []
        deleted = await tx.execute(DELETE_VOTE, (v.poll_id, v.platform, key, v.slot, v.option))
        if deleted.rowcount:
            actions.append(VoteAction.REMOVED)
        else:
            await tx.execute(UPSERT_VOTE, params)
            actions.append(VoteAction.RECORDED)
    if run:
        await tx.executemany(UPSERT_VOTE, run)
    return actions
