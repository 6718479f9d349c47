"""Closing jobs on the runtime's APScheduler: one date job per open poll, keyed by the poll's id.

The jobs live only in memory; the database is the truth. `PollService.start` recreates them from the open polls
at start-up, and a deadline already past runs at once (`misfire_grace_time=None`: late is still better than never).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.date import DateTrigger

log = logging.getLogger(__name__)

JOB_PREFIX = "polls:close:"


class CloseSchedule:
    def __init__(self, scheduler: BaseScheduler, on_due: Callable[[int], Awaitable[None]]) -> None:
        self._scheduler = scheduler
        self._on_due = on_due
        self._ids: set[int] = set()

    def schedule(self, poll_id: int, at: float) -> None:
        """(Re)schedule poll `poll_id` to close at the wall-clock time `at` (seconds since the epoch)."""
        self._scheduler.add_job(
            self._on_due,
            trigger=DateTrigger(run_date=datetime.fromtimestamp(at, tz=UTC)),
            args=(poll_id,),
            id=f"{JOB_PREFIX}{poll_id}",
            name=f"close poll #{poll_id}",
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )
        self._ids.add(poll_id)

    def cancel(self, poll_id: int) -> None:
        if poll_id not in self._ids:
            return
        self._ids.discard(poll_id)
        try:
            self._scheduler.remove_job(f"{JOB_PREFIX}{poll_id}")
        except JobLookupError:  # it already ran (that run is what calls cancel)
            pass

    def cancel_all(self) -> None:
        for poll_id in list(self._ids):
            self.cancel(poll_id)

    @property
    def scheduled(self) -> frozenset[int]:
        return frozenset(self._ids)
