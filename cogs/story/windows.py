"""Vote windows: when a scene's vote closes, and what its window is on disk.

A window ends on a timer (a job on the runtime's scheduler, `story.vote_seconds` after it opened; none when that is
0), or early once more than `story.majority` of the active audience has voted. A vote nobody cast may pause the
window until someone votes; a narrator failure opens it again for `RETRY_CLOSE_S`. At a stop no timer is set any
more: the next start sets them again from what is on disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bot.config import StoryConfig
from cogs.common.ballot_keys import is_anonymous
from cogs.story.repo import StoryRepo
from cogs.story.state import Game, Turn
from cogs.story.voting import Voter, majority_reached

RETRY_CLOSE_S: Final = (
    20.0  # when the narrator failed to write the next scene, the window closes again this later
)

GameKey = tuple[str, str]  # (platform, channel_id)
OnDue = Callable[[GameKey, int], Awaitable[None]]  # (the game, the turn id) whose window ended


class VoteWindows:
    def __init__(
        self,
        *,
        config: StoryConfig,
        repo: StoryRepo,
        scheduler: Any,
        clock: Callable[[], float],
        on_due: OnDue,
    ) -> None:
        self.config = config
        self._repo = repo
        self._scheduler = scheduler
        self._clock = clock
        self._on_due = on_due
        self._stopped = False

    def deadline(self, now: float) -> float | None:
        """When a window opened at `now` ends; None when windows have no timer."""
        return now + self.config.vote_seconds if self.config.vote_seconds > 0 else None

    def majority_voted(self, game: Game) -> bool:
        """More than `majority` of the active audience (previous scenes' voters and writers) has voted."""
        turn = game.current
        active: set[Voter] = set()
        for earlier in game.turns[-1 - self.config.active_turns : -1]:
            active |= earlier.participants
        # Forgotten people cannot be recognised from one scene to the next: they are not counted as the audience.
        active = {voter for voter in active if not is_anonymous(voter[1])}
        if not active:
            active = {game.started_by}
        voted = len(active & turn.ballot.voters)
        return majority_reached(voted, len(active), self.config.majority)

    # ----------------------------------------------------------------------------------------------- windows
    async def reopen(self, game: Game, turn: Turn) -> None:
        """Open the scene's vote for a whole window from now."""
        turn.status = "open"
        turn.closes_at = self.deadline(self._clock())
        await self._repo.set_window(turn.id, status="open", closes_at=turn.closes_at)
        self.schedule(game, turn)

    async def pause(self, turn: Turn) -> None:
        """Nobody voted: the window waits, with no timer, for the first vote (which `reopen`s it)."""
        turn.status = "paused"
        turn.closes_at = None
        await self._repo.set_window(turn.id, status="paused", closes_at=None)

    async def retry_later(self, game: Game, turn: Turn) -> None:
        """The narrator failed: the vote is open again and closes `RETRY_CLOSE_S` from now (votes may change it)."""
        turn.status = "open"
        if turn.closes_at is None:
            turn.closes_at = self._clock() + RETRY_CLOSE_S
        await self._repo.reopen(turn.id, closes_at=turn.closes_at)
        self._schedule_in(game, turn, RETRY_CLOSE_S)

    # ----------------------------------------------------------------------------------------------- timers
    def schedule(self, game: Game, turn: Turn) -> None:
        """Set the timer of an open window that has an end."""
        if turn.closes_at is None or turn.status != "open" or self._stopped:
            return
        self._schedule_in(game, turn, max(0.0, turn.closes_at - self._clock()))

    def _schedule_in(self, game: Game, turn: Turn, delay: float) -> None:
        if self._stopped:
            return  # stopping: the next start reschedules from what is on disk
        # The scheduler runs on wall time; the delay comes from our clock, so tests may use a fake one.
        self._scheduler.add_job(
            self._due,
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=delay),
            args=[game.key, turn.id],
            id=_job_id(turn.id),
            replace_existing=True,
            misfire_grace_time=None,  # a late timer still closes the vote
        )

    def unschedule(self, turn_id: int) -> None:
        with contextlib.suppress(Exception):  # apscheduler raises JobLookupError when it already ran
            self._scheduler.remove_job(_job_id(turn_id))

    def stop(self, open_turns: Iterable[int]) -> None:
        """Remove the timers of `open_turns` and set none from now on (the next start sets them from disk)."""
        self._stopped = True
        for turn_id in open_turns:
            self.unschedule(turn_id)

    async def _due(self, key: GameKey, turn_id: int) -> None:
        if not self._stopped:
            await self._on_due(key, turn_id)


def _job_id(turn_id: int) -> str:
    return f"story-vote-{turn_id}"
