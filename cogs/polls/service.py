"""Polls, free of any platform: create, vote, close (by hand or at the deadline), results and announcements.

Adapters (console, Discord, Twitch) parse commands into calls here and show what comes back. A `PollError` carries
a message for the person; anything else is a bug or a database failure.

Votes are the hot path. `vote()` checks the rules against the open polls kept in memory, then hands the vote to a
batcher: one task drains every vote waiting and applies them in a single `Store.transaction` (state check + upserts),
and each caller's `vote()` returns only after the COMMIT that holds its vote. Many concurrent voters therefore share
one commit, which is what makes durable votes cheap.

Adapters learn about changes by listening: `on_created` (show a poll in linked channels), `on_changed` (live tallies;
called after every committed batch), `on_closed` (results plus an announcement in the character's voice). Each
platform announces a poll's results once; a platform registering `on_closed` after a restart also gets the polls that
closed while it was away (a deadline passed while the bot was down, or a crash before the announcement).

Safety: a question and options are cleaned (`clean_people_text`, in `make_draft`) and checked by the moderator before
the poll is stored or shown; a flagged poll is refused and kept for moderators. The announcement in the character's
voice comes through the moderation step (`cogs/common/safety.py`, see `announce.py`).

Privacy: `cogs/privacy` anonymises a person's votes and the polls they started (the "poll votes" and "polls created"
hooks in `cogs/polls/ballots.py`), keeping tallies intact. In a poll still open, a forgotten person's ballot is kept
under a keyed hash, so their next vote replaces it (one person, one vote); `forgotten` refreshes the open polls held
in memory so that live tallies stop naming a forgotten creator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.config import ConfigError, PollsConfig
from cogs.common.actor import Actor
from cogs.common.held import Place
from cogs.common.safety import SafeGenerator, Safety
from cogs.polls.announce import Announcement, Announcer
from cogs.polls.model import (
    MIN_DURATION_S,
    Display,
    InvalidPoll,
    NotAllowed,
    Poll,
    PollClosed,
    PollConflict,
    PollError,
    PollNotFound,
    PollStatus,
    format_duration,
    make_draft,
    resolve_choice,
)
from cogs.polls.results import Results
from cogs.polls.schedule import CloseSchedule
from cogs.polls.storage import PollStorage, VoteAction, VoteRow

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from bot.store import Store
    from models.backend import GenerationBackend
    from models.persona import Card

log = logging.getLogger(__name__)

MAX_OPEN_POLLS = 500  # across every channel; more is a runaway script, not an audience
MAX_VOTE_BATCH = 2_000  # votes applied in one transaction
MAX_PENDING_VOTES = 20_000  # votes waiting for the writer; beyond this, voters wait for room
MAX_CACHED_ANNOUNCEMENTS = 64
MAX_CLAIMS = 10_000  # (poll, platform) announcements remembered as done or in progress
ANNOUNCE_BACKLOG_S = 24 * 3600.0  # after a long downtime, results older than this are not announced any more
DEADLINE_RETRY_S = 30.0  # a close that failed (database trouble) is tried again this much later
EARLY_FIRE_TOLERANCE_S = 0.05  # a closing job that fires this much early (clock skew) still closes

CreatedListener = Callable[[Poll, tuple[Display, ...]], Awaitable[None]]
ChangedListener = Callable[[frozenset[int]], None]
ClosedListener = Callable[[Results, Announcement], Awaitable[None]]


@dataclass(frozen=True)
class VoteReceipt:
    """A committed vote: the poll, the option (1-based) and what happened to it."""

    poll: Poll
    option: int
    action: VoteAction

    @property
    def label(self) -> str:
        return self.poll.options[self.option - 1]

    def message(self) -> str:
        if self.action is VoteAction.REMOVED:
            return f"Vote taken back: {self.option}. {self.label} (poll #{self.poll.id})."
        return f"Vote counted: {self.option}. {self.label} (poll #{self.poll.id})."


@dataclass(eq=False)
class _PendingVote:
    row: VoteRow
    future: asyncio.Future[VoteAction]


_STOP = object()


def parse_links(entries: Iterable[str]) -> list[frozenset[tuple[str, str]]]:
    """`polls.links` entries ("discord:123 = twitch:name") into groups of places that show the same polls."""
    groups: list[frozenset[tuple[str, str]]] = []
    for entry in entries:
        places: set[tuple[str, str]] = set()
        for part in entry.split("="):
            platform, sep, channel = part.strip().partition(":")
            if not sep or not platform.strip() or not channel.strip():
                raise ConfigError(
                    f"polls.links entry {entry!r}: write places as platform:channel joined by '=', "
                    "e.g. 'discord:123456789 = twitch:mychannel'"
                )
            places.add((platform.strip().lower(), channel.strip()))
        if len(places) < 2:
            raise ConfigError(f"polls.links entry {entry!r} must join at least two different places")
        groups.append(frozenset(places))
    return groups


class PollService:
    def __init__(
        self,
        *,
        store: Store,
        scheduler: BaseScheduler,
        config: PollsConfig,
        backend: GenerationBackend | None = None,
        card: Card | None = None,
        clock: Callable[[], float] = time.time,
        min_duration_s: float = MIN_DURATION_S,
        safety: Safety | None = None,
    ) -> None:
        """`min_duration_s` exists for tests (a poll of one second); commands always use the 15 s rule."""
        self.config = config
        self._storage = PollStorage(store)
        self._schedule = CloseSchedule(scheduler, self._on_deadline)
        self._safety = safety if safety is not None else Safety.rules_only(card.char_name if card else "")
        self._announcer = Announcer(
            backend=SafeGenerator(backend, self._safety) if backend is not None else None,
            card=card,
            timeout_s=config.announce_timeout_s,
        )
        self._clock = clock
        self._min_duration_s = min_duration_s
        self._links = parse_links(config.links)
        self._open: dict[int, Poll] = {}
        self._here: dict[tuple[str, str], int] = {}  # (platform, channel) -> its open poll
        self._reserved: set[tuple[str, str]] = set()  # places whose poll is being created right now
        self._votes: asyncio.Queue[_PendingVote | object] = asyncio.Queue(MAX_PENDING_VOTES)
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._announcements: OrderedDict[int, Announcement] = OrderedDict()
        self._created: dict[str, list[CreatedListener]] = {}
        self._changed: list[ChangedListener] = []
        self._closed: dict[str, list[ClosedListener]] = {}
        self._claimed: OrderedDict[tuple[int, str], None] = OrderedDict()  # (poll, platform) being announced
        self._closing = False

    # ----------------------------------------------------------------------------------------------- lifetime
    async def start(self) -> None:
        """Start the vote batcher and recreate the closing jobs; close at once the polls already past due."""
        self._flusher = asyncio.create_task(self._flush_votes(), name="polls-votes")
        now = self._clock()
        for poll in await self._storage.open_polls():
            if poll.closes_at <= now:
                log.info("poll #%d passed its deadline while the bot was down; closing it now", poll.id)
                with contextlib.suppress(PollClosed):
                    await self._finish(poll.id, PollStatus.CLOSED, by="deadline")
                continue
            self._remember(poll)
            self._schedule.schedule(poll.id, poll.closes_at)
        log.info("polls: %d open", len(self._open))

    async def close(self) -> None:
        """Stop taking votes, commit the ones already queued, drop the closing jobs, finish announcements."""
        if self._closing:
            return
        self._closing = True
        self._schedule.cancel_all()
        if self._flusher is not None:
            await self._votes.put(_STOP)
            await self._flusher
        await self.drain()

    async def drain(self) -> None:
        """Wait for the listeners' work in flight (announcements, displays); for shutdown and tests."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ----------------------------------------------------------------------------------------------- listeners
    def on_created(self, platform: str, listener: CreatedListener) -> None:
        """`listener(poll, displays)` shows a new poll in the places on `platform` it was not created in."""
        self._created.setdefault(platform, []).append(listener)

    def on_changed(self, listener: ChangedListener) -> None:
        """`listener(poll_ids)` runs (synchronously) after each committed batch of votes."""
        self._changed.append(listener)

    def on_closed(self, platform: str, listener: ClosedListener) -> None:
        """`listener(results, announcement)` shows a closed poll's results in its places on `platform`.

        Called once per poll and platform; when it returns, those places count as announced. Registering also
        announces, in the background, the polls that closed on `platform` unannounced (while the bot was down).
        """
        self._closed.setdefault(platform, []).append(listener)
        self._spawn(self._announce_backlog(platform), f"{platform} announcement backlog")

    def remove_listener(self, listener: Callable[..., Any]) -> None:
        groups: list[list[Any]] = [self._changed, *self._created.values(), *self._closed.values()]
        for group in groups:
            while listener in group:
                group.remove(listener)

    # ----------------------------------------------------------------------------------------------- create
    def places_for(self, platform: str, channel_id: str) -> list[tuple[str, str]]:
        """The place itself first, then every place `polls.links` joins to it."""
        here = (platform, channel_id)
        places = [here]
        for group in self._links:
            if here in group:
                places.extend(sorted(p for p in group if p not in places))
        return places

    async def create(
        self,
        actor: Actor,
        question: str,
        options: Sequence[str],
        duration: str | float,
        *,
        channel_id: str,
        multi: bool = False,
    ) -> Poll:
        """Validate and store a new poll shown in `channel_id` on the actor's platform (and linked places)."""
        draft = make_draft(
            question, list(options), duration, multi=multi, min_duration_s=self._min_duration_s
        )
        typed = "\n".join((draft.question, *draft.options))
        author = Place("input", actor.platform, channel_id, actor.user_id, actor.name)
        if not (await self._safety.check_input(typed, author)).allowed:
            raise InvalidPoll("I can't post that poll; reword the question or the options.")
        if self._closing:
            raise PollError("I'm shutting down; start the poll again in a moment.")
        if len(self._open) + len(self._reserved) >= MAX_OPEN_POLLS:
            raise PollConflict(f"{MAX_OPEN_POLLS} polls are already open; close some first.")
        places = self.places_for(actor.platform, channel_id)
        for place in places:
            if place in self._here or place in self._reserved:
                where = "this channel" if place == places[0] else f"the linked {place[0]} channel"
                running = self._here.get(place)
                label = f"Poll #{running}" if running is not None else "Another poll"
                raise PollConflict(f"{label} is already running in {where}; close it first.")
        self._reserved.update(places)
        try:
            poll_id = await self._storage.create(
                draft,
                creator_platform=actor.platform,
                creator_id=actor.user_id,
                creator_name=actor.name,
                created_at=self._clock(),
                displays=[Display(p, c) for p, c in places],
            )
        finally:
            self._reserved.difference_update(places)
        poll = await self._storage.get(poll_id)
        assert poll is not None
        self._remember(poll)
        self._schedule.schedule(poll.id, poll.closes_at)
        log.info(
            "poll #%d created by %s:%s in %s, %d options, closes in %s",
            poll.id,
            actor.platform,
            actor.user_id,
            ", ".join(f"{p}:{c}" for p, c in places),
            len(poll.options),
            format_duration(draft.duration_s),
        )
        for platform, listeners in self._created.items():
            elsewhere = tuple(
                d for d in poll.displays if d.platform == platform and (d.platform, d.channel_id) != places[0]
            )
            if elsewhere:
                for listener in listeners:
                    self._spawn(listener(poll, elsewhere), f"poll #{poll.id} shown on {platform}")
        return poll

    async def set_message(self, poll_id: int, platform: str, channel_id: str, message_id: str) -> None:
        """Remember which message shows the poll in a place (the Discord message with the buttons)."""
        await self._storage.set_message(poll_id, platform, channel_id, message_id)
        poll = self._open.get(poll_id)
        if poll is not None:
            displays = tuple(
                Display(d.platform, d.channel_id, message_id)
                if (d.platform, d.channel_id) == (platform, channel_id)
                else d
                for d in poll.displays
            )
            if (platform, channel_id) not in {(d.platform, d.channel_id) for d in displays}:
                displays = (*displays, Display(platform, channel_id, message_id))
            self._open[poll_id] = replace(poll, displays=displays)

    # ----------------------------------------------------------------------------------------------- vote
    async def vote(
        self, voter: Actor, poll_id: int, choice: int | str, *, toggle: bool = False
    ) -> VoteReceipt:
        """Record `voter`'s choice; returns once the vote is committed. A new vote replaces the person's old one.

        `toggle=True` (buttons): choosing an option the person already picked takes that pick back.
        """
        poll = self._open.get(poll_id)
        if poll is None:
            raise await self._not_open(poll_id)
        if self._clock() >= poll.closes_at:
            raise PollClosed(f"Poll #{poll_id} has closed; votes are no longer counted.")
        option = resolve_choice(poll, choice)
        if self._closing:
            raise PollError("I'm shutting down; vote again in a moment.")
        row = VoteRow(poll_id, voter.platform, voter.user_id, option, poll.multi, toggle)
        future: asyncio.Future[VoteAction] = asyncio.get_running_loop().create_future()
        await self._votes.put(_PendingVote(row, future))
        action = await future
        if action is VoteAction.CLOSED:
            raise PollClosed(f"Poll #{poll_id} closed before your vote arrived; it was not counted.")
        return VoteReceipt(poll=poll, option=option, action=action)

    async def vote_in(
        self, voter: Actor, channel_id: str, choice: int | str, *, toggle: bool = False
    ) -> VoteReceipt:
        """Vote in the poll running in the voter's channel (Twitch `!vote 2`, console `/poll vote 2`)."""
        poll = await self.running_in(voter.platform, channel_id)
        return await self.vote(voter, poll.id, choice, toggle=toggle)

    async def choices_of(self, poll_id: int, voter: Actor) -> list[int]:
        """The options `voter` currently holds in a poll (committed votes)."""
        return await self._storage.choices_of(poll_id, voter.platform, voter.user_id)

    async def _flush_votes(self) -> None:
        stopping = False
        while not stopping:
            entry = await self._votes.get()
            batch: list[_PendingVote] = []
            while True:
                if entry is _STOP:
                    stopping = True
                else:
                    assert isinstance(entry, _PendingVote)
                    batch.append(entry)
                if len(batch) >= MAX_VOTE_BATCH:
                    break
                try:
                    entry = self._votes.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if batch:
                await self._apply(batch)

    async def _apply(self, batch: list[_PendingVote]) -> None:
        try:
            actions = await self._storage.apply_votes([p.row for p in batch], now=self._clock())
        except (
            Exception
        ) as exc:  # the database failed: every voter in the batch hears it, nobody is told "counted"
            log.exception("polls: a batch of %d votes failed", len(batch))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        changed: set[int] = set()
        for pending, action in zip(batch, actions, strict=True):
            if action is not VoteAction.CLOSED:
                changed.add(pending.row.poll_id)
            if not pending.future.done():  # a voter that gave up waiting: its vote still counts
                pending.future.set_result(action)
        if changed:
            self._notify_changed(frozenset(changed))

    def _notify_changed(self, poll_ids: frozenset[int]) -> None:
        for listener in self._changed:
            try:
                listener(poll_ids)
            except Exception:
                log.exception("polls: a change listener failed")

    async def forgotten(self, platform: str, user_id: str) -> None:
        """Privacy listener (after `forget` commits): open polls the person started stop naming them on screen."""
        started = [
            p.id for p in self._open.values() if (p.creator_platform, p.creator_id) == (platform, user_id)
        ]
        for poll_id in started:
            stored = await self._storage.get(poll_id)
            held = self._open.get(poll_id)
            if stored is not None and held is not None:
                self._open[poll_id] = replace(
                    held, creator_id=stored.creator_id, creator_name=stored.creator_name
                )
        if started:
            self._notify_changed(frozenset(started))  # live displays redraw without the name

    # ----------------------------------------------------------------------------------------------- close
    async def close_poll(self, actor: Actor, poll_id: int, *, cancel: bool = False) -> Results:
        """Close (or cancel) a poll early: its creator, or a moderator where the poll is shown."""
        poll = self._open.get(poll_id)
        if poll is None:
            raise await self._not_open(poll_id)
        self._check_may_close(actor, poll)
        status = PollStatus.CANCELLED if cancel else PollStatus.CLOSED
        return await self._finish(poll_id, status, by=f"{actor.platform}:{actor.user_id}")

    async def close_in(self, actor: Actor, channel_id: str, *, cancel: bool = False) -> Results:
        return await self.close_poll(actor, self.open_in(actor.platform, channel_id).id, cancel=cancel)

    @staticmethod
    def may_close(actor: Actor, poll: Poll) -> bool:
        if (actor.platform, actor.user_id) == (poll.creator_platform, poll.creator_id):
            return True
        shown_on = {d.platform for d in poll.displays} | {poll.creator_platform}
        return (actor.is_moderator or actor.is_admin) and actor.platform in shown_on

    def _check_may_close(self, actor: Actor, poll: Poll) -> None:
        if not self.may_close(actor, poll):
            raise NotAllowed(
                f"Only {poll.creator_name} (who started poll #{poll.id}) or a moderator can close or cancel it."
            )

    async def _on_deadline(self, poll_id: int) -> None:
        poll = self._open.get(poll_id)
        if poll is None:
            return
        early = poll.closes_at - self._clock()
        if (
            early > EARLY_FIRE_TOLERANCE_S
        ):  # the scheduler's clock ran ahead of ours: try again at the deadline
            self._schedule.schedule(poll_id, poll.closes_at)
            return
        try:
            await self._finish(poll_id, PollStatus.CLOSED, by="deadline")
        except PollClosed:
            pass
        except Exception:
            log.exception(
                "poll #%d: closing at the deadline failed; retrying in %gs", poll_id, DEADLINE_RETRY_S
            )
            self._schedule.schedule(poll_id, self._clock() + DEADLINE_RETRY_S)

    async def _finish(self, poll_id: int, status: PollStatus, *, by: str) -> Results:
        done = await self._storage.finish(poll_id, status, at=self._clock(), by=by)
        self._forget(poll_id)
        if not done:
            raise PollClosed(f"Poll #{poll_id} is already closed.")
        poll = await self._storage.get(poll_id)
        assert poll is not None
        results = await self._storage.results(poll)
        log.info("poll #%d %s by %s: %s", poll_id, status.value, by, list(results.counts))
        self._spawn(self._announce(results), f"poll #{poll_id} announcement")
        return results

    async def _announce(self, results: Results) -> None:
        platforms = sorted({d.platform for d in results.poll.displays} & set(self._closed))
        claimed = [p for p in platforms if self._claim(results.poll.id, p)]
        if not claimed:
            return
        announcement = await self.announcement(results)
        for platform in claimed:
            self._spawn(
                self._deliver(platform, results, announcement), f"poll #{results.poll.id} on {platform}"
            )

    async def _deliver(self, platform: str, results: Results, announcement: Announcement) -> None:
        for listener in self._closed.get(platform, []):
            await listener(results, announcement)
        await self._storage.mark_announced(results.poll.id, platform, None, at=self._clock())

    async def _announce_backlog(self, platform: str) -> None:
        now = self._clock()
        stale, due = await self._storage.unannounced(platform, since=now - ANNOUNCE_BACKLOG_S)
        for poll_id, channel_id in stale:
            await self._storage.mark_announced(poll_id, platform, channel_id, at=now)
        for poll_id in due:
            poll = await self._storage.get(poll_id)
            if poll is None or poll.is_open or not self._claim(poll_id, platform):
                continue
            results = await self._storage.results(poll)
            log.info("poll #%d closed unannounced on %s; announcing it now", poll_id, platform)
            await self._deliver(platform, results, await self.announcement(results))

    def _claim(self, poll_id: int, platform: str) -> bool:
        """True the first time a (poll, platform) announcement is claimed in this process."""
        key = (poll_id, platform)
        if key in self._claimed:
            return False
        self._claimed[key] = None
        while len(self._claimed) > MAX_CLAIMS:
            self._claimed.popitem(last=False)
        return True

    async def announcement(self, results: Results) -> Announcement:
        """The character's announcement of a closed poll (made once, then cached)."""
        cached = self._announcements.get(results.poll.id)
        if cached is not None:
            return cached
        announcement = await self._announcer.announce(results)
        self._announcements[results.poll.id] = announcement
        while len(self._announcements) > MAX_CACHED_ANNOUNCEMENTS:
            self._announcements.popitem(last=False)
        return announcement

    # ----------------------------------------------------------------------------------------------- read
    def open_poll(self, poll_id: int) -> Poll | None:
        return self._open.get(poll_id)

    def open_polls(self) -> list[Poll]:
        return sorted(self._open.values(), key=lambda p: p.id)

    def open_in(self, platform: str, channel_id: str) -> Poll:
        poll_id = self._here.get((platform, channel_id))
        if poll_id is None:
            raise PollNotFound("No poll is running here.")
        return self._open[poll_id]

    async def running_in(self, platform: str, channel_id: str) -> Poll:
        """The poll running in a channel; if there is none, say whether the last one has closed."""
        poll_id = self._here.get((platform, channel_id))
        if poll_id is not None:
            return self._open[poll_id]
        latest = await self._storage.latest_in(platform, channel_id)
        if latest is None:
            raise PollNotFound("No poll is running here.")
        raise await self._not_open(latest.id)

    async def get(self, poll_id: int) -> Poll:
        poll = self._open.get(poll_id) or await self._storage.get(poll_id)
        if poll is None:
            raise PollNotFound(f"There is no poll #{poll_id}.")
        return poll

    async def latest_in(self, platform: str, channel_id: str) -> Poll:
        """The poll running in a channel, else the last one shown there."""
        poll_id = self._here.get((platform, channel_id))
        if poll_id is not None:
            return self._open[poll_id]
        poll = await self._storage.latest_in(platform, channel_id)
        if poll is None:
            raise PollNotFound("No poll has run here yet.")
        return poll

    async def results(self, poll_id: int) -> Results:
        """Live tallies of an open poll, or the final results of a closed one (committed votes only)."""
        return await self._storage.results(await self.get(poll_id))

    async def results_in(self, platform: str, channel_id: str) -> Results:
        return await self._storage.results(await self.latest_in(platform, channel_id))

    # ----------------------------------------------------------------------------------------------- internals
    def _remember(self, poll: Poll) -> None:
        self._open[poll.id] = poll
        for d in poll.displays:
            self._here[(d.platform, d.channel_id)] = poll.id

    def _forget(self, poll_id: int) -> None:
        poll = self._open.pop(poll_id, None)
        self._schedule.cancel(poll_id)
        if poll is not None:
            for d in poll.displays:
                if self._here.get((d.platform, d.channel_id)) == poll_id:
                    del self._here[(d.platform, d.channel_id)]

    async def _not_open(self, poll_id: int) -> PollError:
        poll = await self._storage.get(poll_id)
        if poll is None:
            return PollNotFound(f"There is no poll #{poll_id}.")
        if poll.status is PollStatus.CANCELLED:
            return PollClosed(f"Poll #{poll_id} was cancelled; votes are no longer counted.")
        return PollClosed(f"Poll #{poll_id} has closed; votes are no longer counted.")

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        task = asyncio.create_task(_logged(coro, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _logged(coro: Awaitable[Any], what: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("polls: %s: a listener failed", what)
