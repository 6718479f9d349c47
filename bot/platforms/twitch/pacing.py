"""Outbound Twitch chat that Twitch will not punish: a rate window, no repeats, and bounded per-channel queues.

Twitch ignores a bot for 30 minutes once it sends more than 20 messages in 30 s (100 where it is moderator or
broadcaster), and drops a message identical to one sent in the last 30 s. Every outbound message goes through one
`OutboundPacer` per bot, as one of two kinds of `Job`, each with its own queue per channel:

- A *reply* answers a viewer (`Job.reply`, the chat component's jobs); in a burst the newest questions matter. The
  reply queue holds at most `queue_per_channel` (a full queue forgets its oldest reply). The channel's
  `workers_per_channel` reply workers take the *freshest* reply only when the bot may send again, so the engine
  answers the newest questions and never spends time on answers that could not be sent. Replies older than
  `max_age_s` are dropped unanswered.
- An *announcement* is what the bot says on its own (`Job.say`, `Job.announce`: story scenes and decisions, poll
  announcements and results, vote tallies); it is the show. Announcements go out in the order submitted, one at a
  time per channel: the channel's one announcer starts the next only once the previous was sent (and its `on_sent`
  ran) or definitively failed, so the parts of a scene never overtake or race each other. They are never dropped
  for age, and while one waits for a send slot no reply takes a slot it needs, so under a full window they go
  first. The queue holds at most `announcements_per_channel` (`ANNOUNCEMENTS_PER_CHANNEL` says why that is safe);
  past it the oldest is forgotten, with a warning and `PacerStats.dropped_announcements`.

Both kinds then:

1. are cut to one line of at most 500 characters;
2. are varied when the channel saw the same text in the last 30 s: a reply gets the viewer's @name in front (or is
   dropped); an announcement gets an invisible mark at its end (`DUPLICATE_MARK`, one more for each further repeat)
   and is never dropped;
3. count in the window from the moment the send starts until 30 s after Twitch answered it, so the limit holds for
   the times Twitch receives the messages, whatever the network does. A 429 waits and retries;
4. may be held back by the send function (`MessageHeld`: Twitch AutoMod would not permit the line). Nothing was
   sent and nothing counts; the pacer's `on_held` hook records it, and the job's own `on_held` may give one line
   to send instead (a reply's deflection), which is never replaced again.

The clock and the sleep are injectable so tests run the 30-s windows on a virtual or accelerated clock.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.tasks import DRAIN_TIMEOUT_S, TaskTracker
from models.cleaning import trim_to_limit

if TYPE_CHECKING:
    import twitchio

log = logging.getLogger(__name__)

TWITCH_MAX_CHARS = 500  # Twitch's limit for one chat message
RATE_WINDOW_S = 30.0
RATE_LIMIT = 20  # messages per window for an ordinary bot account
ELEVATED_RATE_LIMIT = 100  # where the bot is moderator or broadcaster
DUPLICATE_WINDOW_S = 30.0  # Twitch drops a message identical to one sent this recently
MAX_AGE_S = 60.0  # a directed message waiting longer than this is not answered (announcements never go stale)
QUEUE_PER_CHANNEL = 20  # replies waiting per channel; the oldest is forgotten first
ANNOUNCEMENTS_PER_CHANNEL = 50  # the bot's own lines waiting per channel; why this is safe: `ChannelLane`
DUPLICATE_MARK = "\U000e0000"  # invisible (a tag character); chat clients add it to repeat a line past Twitch
MAX_DUPLICATE_MARKS = 8  # tried on a repeated announcement; with all taken it waits for the duplicate window
WORKERS_PER_CHANNEL = 2  # replies composed at once per channel (the engine batches across them)
MAX_CHANNELS = 200  # lanes the pacer keeps; the bot only receives chat from its configured channels
MAX_SEND_ATTEMPTS = 3  # a send that meets HTTP 429 is retried this many times in all
RETRY_AFTER_S = 2.0  # wait after a 429 that carries no hint

SendFn = Callable[
    [str, str, str | None], Awaitable[str | None]
]  # (channel id, text, reply-to id) -> message id
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# "/ban x", ".timeout x": never let the model type a chat command (an ellipsis is fine).
_COMMAND_PREFIX = re.compile(r"^[/.]++(?=\w)")
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


class MessageHeld(Exception):
    """The send function held a line back before posting it (Twitch AutoMod would not permit it)."""

    def __init__(self, reasons: tuple[str, ...], source: str) -> None:
        super().__init__("; ".join(reasons) or source)
        self.reasons = reasons
        self.source = source


class RateLimited(Exception):
    """The send function met HTTP 429; the pacer waits `retry_after_s` (or its default) and tries again."""

    def __init__(self, retry_after_s: float | None = None) -> None:
        super().__init__("rate limited by Twitch")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PacerSettings:
    window_s: float = RATE_WINDOW_S
    limit: int = RATE_LIMIT
    elevated_limit: int = ELEVATED_RATE_LIMIT
    duplicate_window_s: float = DUPLICATE_WINDOW_S
    max_age_s: float = MAX_AGE_S
    queue_per_channel: int = QUEUE_PER_CHANNEL
    announcements_per_channel: int = ANNOUNCEMENTS_PER_CHANNEL
    workers_per_channel: int = WORKERS_PER_CHANNEL
    retry_after_s: float = RETRY_AFTER_S
    max_chars: int = TWITCH_MAX_CHARS

    def __post_init__(self) -> None:
        if self.limit < 1 or self.elevated_limit < self.limit:
            raise ValueError("limit must be at least 1 and elevated_limit at least limit")
        if min(self.queue_per_channel, self.announcements_per_channel, self.workers_per_channel) < 1:
            raise ValueError(
                "queue_per_channel, announcements_per_channel and workers_per_channel must be at least 1"
            )
        if not 1 <= self.max_chars <= TWITCH_MAX_CHARS:
            raise ValueError(f"max_chars must be between 1 and {TWITCH_MAX_CHARS}")


OnSent = Callable[[str | None, str], Awaitable[None]]  # (message id, text as sent)
OnHeld = Callable[[str], Awaitable[str | None]]  # (the held text) -> a line to send instead, or None


@dataclass(eq=False)
class Job:
    """One message to send in `channel_id`: a reply to a viewer, or an announcement (see the module docstring)."""

    channel_id: str
    compose: Callable[[], Awaitable[str | None]]  # the message's text, or None for no message
    reply_to: str | None = None  # the viewer's message id: the answer is a reply to it
    author_id: str | None = None
    author_login: str | None = None  # used to vary a text that would repeat
    on_sent: OnSent | None = None
    announcement: bool = False  # the bot's own line: in order, one at a time, before replies, never stale
    on_held: OnHeld | None = None  # the send function held the text back: what to send instead (once)
    received_at: float = 0.0  # pacer clock; set by `submit`

    @classmethod
    def say(cls, channel_id: str, text: str, *, on_sent: OnSent | None = None) -> Job:
        """An announcement already written, said in `channel_id` (a broadcaster id)."""
        return cls.announce(channel_id, _fixed(text), on_sent=on_sent)

    @classmethod
    def announce(
        cls, channel_id: str, compose: Callable[[], Awaitable[str | None]], *, on_sent: OnSent | None = None
    ) -> Job:
        """An announcement written when its turn comes (a tally with the latest votes), in `channel_id`."""
        return cls(channel_id=channel_id, compose=compose, on_sent=on_sent, announcement=True)

    @classmethod
    def reply(cls, message: twitchio.ChatMessage, text: str) -> Job:
        """A line already written, answering a viewer's chat message."""
        return cls(
            channel_id=message.broadcaster.id,
            compose=_fixed(text),
            reply_to=message.id,
            author_id=message.chatter.id,
            author_login=message.chatter.name,
        )


def _fixed(text: str) -> Callable[[], Awaitable[str]]:
    async def compose() -> str:
        return text

    return compose


@dataclass
class PacerStats:
    submitted: int = 0
    sent: int = 0
    no_reply: int = 0  # compose returned nothing (cooldown, ignored)
    dropped_stale: int = 0
    dropped_overflow: int = 0
    dropped_announcements: int = 0  # past `announcements_per_channel`
    dropped_duplicate: int = 0
    varied: int = 0
    rate_limited: int = 0  # 429 answers met
    held: int = 0  # lines the send function held back (Twitch AutoMod)
    failed: int = 0
    max_queue_depth: int = 0


def prepare_text(text: str, max_chars: int = TWITCH_MAX_CHARS) -> str | None:
    """One chat line of at most `max_chars`, never starting like a chat command; None if nothing is left."""
    text = _LINE_BREAKS.sub(" ", text).strip()
    text = _COMMAND_PREFIX.sub("", text).strip()
    if not text:
        return None
    return trim_to_limit(text, max_chars) or None


class SendWindow:
    """The bot's sends in the last `window_s` seconds, across all channels (Twitch counts per bot)."""

    def __init__(self, window_s: float, clock: Clock) -> None:
        self.window_s = window_s
        self._clock = clock
        self._done: deque[float] = deque()  # completion times of recent sends, oldest first
        self.in_flight = 0
        self._changed = asyncio.Event()

    def used(self) -> int:
        self._prune()
        return len(self._done) + self.in_flight

    def wait_time(self, limit: int) -> float | None:
        """Seconds until a send may start under `limit`: 0 now, None when only an in-flight send can free room."""
        self._prune()
        excess = len(self._done) + self.in_flight - limit + 1
        if excess <= 0:
            return 0.0
        if excess > len(self._done):
            return None
        return max(0.0, self._done[excess - 1] + self.window_s - self._clock())

    def reserve(self) -> None:
        self.in_flight += 1

    def release(self, *, counted: bool) -> None:
        """A send ended; `counted` when Twitch may have received it (it then occupies the window from now)."""
        self.in_flight -= 1
        if counted:
            self._done.append(self._clock())
        self.notify()

    def notify(self) -> None:
        """Wake everyone waiting in `changed` (a send ended, or who may take the room changed)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def _prune(self) -> None:
        horizon = self._clock() - self.window_s
        while self._done and self._done[0] <= horizon:
            self._done.popleft()


class ChannelLane:
    """One channel's waiting replies (bounded, freshest first), announcements (bounded, in order), recent texts.

    The announcement cap (`announcements_per_channel`, 50 by default) is safe because the bot's own lines come at
    the pace of its features, not of the audience: a story says a decision and a scene of at most a few parts per
    vote, a poll two lines, and vote tallies are coalesced to one line per feature every few seconds. Even at the
    plain 20 per 30 s, 50 lines are out within about 75 s, so the cap is only reached when Twitch refused the bot
    for minutes (or a feature misbehaves), and then memory stays bounded. What the drop loses is recovered: a scene
    whose parts did not all go out is announced again at the next start, and so are poll results.
    """

    def __init__(self, channel_id: str, settings: PacerSettings, stats: PacerStats) -> None:
        self.channel_id = channel_id
        self.elevated = False
        self._settings = settings
        self._stats = stats
        self._jobs: deque[Job] = deque()  # replies, oldest first
        self._announcements: deque[Job] = deque()  # oldest first
        self._recent: dict[str, float] = {}  # normalized text -> when it was sent
        self._has_jobs = asyncio.Event()
        self._has_announcements = asyncio.Event()
        self.workers: list[asyncio.Task[None]] = []  # the reply workers and the announcer

    def __len__(self) -> int:
        return len(self._jobs) + len(self._announcements)

    def push(self, job: Job) -> None:
        if job.announcement:
            self._push_announcement(job)
            return
        while len(self._jobs) >= self._settings.queue_per_channel:
            self._jobs.popleft()
            self._stats.dropped_overflow += 1
        self._jobs.append(job)
        self._stats.max_queue_depth = max(self._stats.max_queue_depth, len(self._jobs))
        self._has_jobs.set()

    def _push_announcement(self, job: Job) -> None:
        while len(self._announcements) >= self._settings.announcements_per_channel:
            self._announcements.popleft()
            self._stats.dropped_announcements += 1
            log.warning(
                "pacer: %d announcements already wait in %s; forgot the oldest",
                self._settings.announcements_per_channel,
                self.channel_id,
            )
        self._announcements.append(job)
        self._has_announcements.set()

    def pop_freshest(self, now: float) -> Job | None:
        """The newest reply, after dropping every reply older than `max_age_s`."""
        while self._jobs and now - self._jobs[0].received_at > self._settings.max_age_s:
            self._jobs.popleft()
            self._stats.dropped_stale += 1
        job = self._jobs.pop() if self._jobs else None
        if not self._jobs:
            self._has_jobs.clear()
        return job

    def pop_announcement(self) -> Job | None:
        """The oldest announcement, however long it waited."""
        job = self._announcements.popleft() if self._announcements else None
        if not self._announcements:
            self._has_announcements.clear()
        return job

    def discard(self, predicate: Callable[[Job], bool]) -> int:
        removed = 0
        for queue in (self._jobs, self._announcements):
            kept = [j for j in queue if not predicate(j)]
            removed += len(queue) - len(kept)
            queue.clear()
            queue.extend(kept)
        if not self._jobs:
            self._has_jobs.clear()
        if not self._announcements:
            self._has_announcements.clear()
        return removed

    async def wait_for_job(self) -> None:
        """Until a reply waits."""
        await self._has_jobs.wait()

    async def wait_for_announcement(self) -> None:
        await self._has_announcements.wait()

    def is_repeat(self, text: str, now: float) -> bool:
        horizon = now - self._settings.duplicate_window_s
        for key in [k for k, at in self._recent.items() if at <= horizon]:
            del self._recent[key]
        return _norm(text) in self._recent

    def repeat_ends_in(self, texts: list[str], now: float) -> float:
        """Seconds until the first of `texts` (all repeats now) may be said again."""
        times = [self._recent[_norm(t)] for t in texts if _norm(t) in self._recent]
        if not times:
            return 0.0
        return max(0.0, min(times) + self._settings.duplicate_window_s - now)

    def remember(self, text: str, now: float) -> None:
        self._recent[_norm(text)] = now  # bounded: at most the sends of one window, pruned by `is_repeat`

    def forget(self, text: str) -> None:
        self._recent.pop(_norm(text), None)


class OutboundPacer:
    """Paces every outbound message of one bot; see the module docstring."""

    def __init__(
        self,
        send: SendFn,
        settings: PacerSettings | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_held: Callable[[Job, str, MessageHeld], Awaitable[None]] | None = None,
    ) -> None:
        """`on_held(job, text, held)` records a line the send function held back (it is never sent)."""
        self.settings = settings or PacerSettings()
        self.stats = PacerStats()
        self._send = send
        self._on_held = on_held
        self._clock = clock
        self._sleep = sleep
        self._window = SendWindow(self.settings.window_s, clock)
        self._lanes: dict[str, ChannelLane] = {}
        self._announcing: set[ChannelLane] = set()  # lanes whose announcement waits for a send slot now
        self._stopped = False
        # Jobs being answered now (compose, send, on_sent): `drain` lets them finish before the bot disconnects.
        self._busy = TaskTracker(
            "twitch replies", limit=MAX_CHANNELS * (self.settings.workers_per_channel + 1)
        )

    # ----------------------------------------------------------------------------------------------- public API
    def submit(self, job: Job) -> bool:
        """Queue `job` without waiting; False when the pacer is stopped or the channel cannot be served."""
        if self._stopped:
            return False
        lane = self._lane(job.channel_id)
        if lane is None:
            log.warning("pacer: too many channels; not answering in %s", job.channel_id)
            return False
        job.received_at = self._clock()
        self.stats.submitted += 1
        lane.push(job)
        return True

    def set_elevated(self, channel_id: str, elevated: bool) -> None:
        """The bot is (or is no longer) moderator or broadcaster in `channel_id`: 100 instead of 20 per window."""
        lane = self._lane(channel_id)
        if lane is not None and lane.elevated != elevated:
            lane.elevated = elevated
            log.info(
                "pacer: channel %s limit is now %d per %gs",
                channel_id,
                self._limit(lane),
                self.settings.window_s,
            )

    def is_elevated(self, channel_id: str) -> bool:
        lane = self._lanes.get(channel_id)
        return lane is not None and lane.elevated

    def discard(self, channel_id: str, *, reply_to: str | None = None, author_id: str | None = None) -> int:
        """Forget waiting replies to a deleted message (`reply_to`) or to a cleared user (`author_id`)."""
        lane = self._lanes.get(channel_id)
        if lane is None:
            return 0
        return lane.discard(
            lambda j: (
                (reply_to is not None and j.reply_to == reply_to)
                or (author_id is not None and j.author_id == author_id)
            )
        )

    def queue_depth(self, channel_id: str) -> int:
        """Replies and announcements waiting in `channel_id`."""
        lane = self._lanes.get(channel_id)
        return len(lane) if lane else 0

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for lane in self._lanes.values() for t in lane.workers]

    @property
    def answering(self) -> int:
        """Jobs being answered now (composing, waiting for the window, sending or logging)."""
        return len(self._busy)

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Stop taking jobs, drop the waiting ones, let those being answered finish (up to `timeout`), stop."""
        self._stopped = True
        dropped = sum(lane.discard(lambda _: True) for lane in self._lanes.values())
        if dropped:
            log.info("pacer: stopping; %d waiting message(s) will not be answered", dropped)
        await self._busy.drain(timeout)
        await self.stop()

    async def stop(self) -> None:
        """Cancel every worker and wait for them; waiting jobs are dropped. Safe to call twice."""
        self._stopped = True
        tasks = self.tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lanes.clear()

    # ----------------------------------------------------------------------------------------------- internals
    def _lane(self, channel_id: str) -> ChannelLane | None:
        lane = self._lanes.get(channel_id)
        if lane is None:
            if len(self._lanes) >= MAX_CHANNELS or self._stopped:
                return None
            lane = ChannelLane(channel_id, self.settings, self.stats)
            self._lanes[channel_id] = lane
            lane.workers = [
                *(
                    asyncio.create_task(self._work(lane), name=f"twitch-pacer:{channel_id}:{i}")
                    for i in range(self.settings.workers_per_channel)
                ),
                asyncio.create_task(self._announce(lane), name=f"twitch-pacer:{channel_id}:announce"),
            ]
        return lane

    def _limit(self, lane: ChannelLane) -> int:
        return self.settings.elevated_limit if lane.elevated else self.settings.limit

    def _reply_limit(self, lane: ChannelLane) -> int:
        """The sends a reply may find in the window: its channel's limit, less the room that waiting announcements
        need under the strictest of their channels' limits (so a reply never takes an announcement's slot)."""
        if not self._announcing:
            return self._limit(lane)
        strictest = min(self._limit(lane), *(self._limit(waiting) for waiting in self._announcing))
        return strictest - len(self._announcing)

    async def _room(self, lane: ChannelLane, *, announcement: bool = False) -> None:
        """Wait until the window lets this channel send (without taking the slot); announcements go first."""
        if announcement:
            self._announcing.add(lane)
        try:
            while True:
                limit = self._limit(lane) if announcement else self._reply_limit(lane)
                wait = self._window.wait_time(limit) if limit > 0 else None
                if wait == 0.0:
                    return
                if wait is None:
                    await self._window.changed()  # a send ended, or an announcement took its slot
                else:
                    await self._sleep(wait)
        finally:
            if announcement:
                self._announcing.discard(lane)
                self._window.notify()  # replies held back for it may look again

    async def _work(self, lane: ChannelLane) -> None:
        """A reply worker: the freshest reply, once the window has room."""
        while True:
            await lane.wait_for_job()
            await self._room(lane)
            job = lane.pop_freshest(self._clock())
            if job is not None:
                await self._answer_tracked(lane, job)

    async def _announce(self, lane: ChannelLane) -> None:
        """The channel's announcer: the oldest announcement, and the next only once this one is done."""
        while True:
            await lane.wait_for_announcement()
            await self._room(lane, announcement=True)
            job = lane.pop_announcement()
            if job is not None:
                await self._answer_tracked(lane, job)

    async def _answer_tracked(self, lane: ChannelLane, job: Job) -> None:
        with self._busy.track() as answering:
            if not answering:
                return  # draining: a job not yet started is not answered
            try:
                await self._answer(lane, job)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.failed += 1
                log.exception("pacer: answering in channel %s failed", lane.channel_id)

    async def _answer(self, lane: ChannelLane, job: Job) -> None:
        raw = await job.compose()
        text = prepare_text(raw, self.settings.max_chars) if raw else None
        if text is None:
            self.stats.no_reply += 1
            return
        attempt = 0
        instead = job.on_held  # used once: a replacement that is held too is not replaced again
        while attempt < MAX_SEND_ATTEMPTS:
            await self._room(lane, announcement=job.announcement)
            # From here to `reserve` nothing awaits: the room found is still there, and no other worker can
            # claim the same text in between.
            now = self._clock()
            outgoing = next((v for v in self._variants(job, text) if not lane.is_repeat(v, now)), None)
            if outgoing is None and job.announcement:
                # Every variant was said in the last duplicate window: wait until one may be said again.
                await self._sleep(lane.repeat_ends_in(list(self._variants(job, text)), now))
                continue
            if outgoing is None:
                self.stats.dropped_duplicate += 1
                log.info("pacer: dropped a reply that would repeat a recent message in %s", lane.channel_id)
                return
            if outgoing != text:
                self.stats.varied += 1
            attempt += 1
            lane.remember(outgoing, now)
            self._window.reserve()
            counted = True
            try:
                message_id = await self._send(lane.channel_id, outgoing, job.reply_to)
            except RateLimited as exc:
                self.stats.rate_limited += 1
                lane.forget(outgoing)  # Twitch refused it, so it is no repeat when retried
                wait = exc.retry_after_s if exc.retry_after_s is not None else self.settings.retry_after_s
                log.warning("pacer: Twitch answered 429 (attempt %d); waiting %.1fs", attempt, wait)
                self._window.release(counted=counted)
                await self._sleep(wait)
                continue
            except MessageHeld as held:
                self._window.release(counted=False)  # nothing reached chat
                lane.forget(outgoing)
                self.stats.held += 1
                log.info("pacer: a line for %s was held back (%s); not sent", lane.channel_id, held.source)
                if self._on_held is not None:
                    await self._on_held(job, outgoing, held)
                replacement = await instead(outgoing) if instead is not None else None
                instead = None
                text = prepare_text(replacement, self.settings.max_chars) if replacement else None
                if text is None:
                    return
                continue
            except asyncio.CancelledError:
                self._window.release(counted=counted)
                raise
            except Exception as exc:
                self._window.release(counted=counted)
                self.stats.failed += 1
                log.warning("pacer: sending to %s failed: %s", lane.channel_id, _describe(exc))
                return
            self._window.release(counted=counted)
            self.stats.sent += 1
            if job.on_sent is not None:
                await job.on_sent(message_id, outgoing)
            return
        self.stats.failed += 1
        log.warning(
            "pacer: gave up on a message in %s after %d rate-limited attempts", lane.channel_id, attempt
        )

    def _variants(self, job: Job, text: str) -> Iterator[str]:
        """`text`, then what may be said instead when it would repeat a recent message, in order of preference.

        Lazy: every message goes through here, and almost none repeats, so the variants are made only when asked.
        """
        yield text
        limit = self.settings.max_chars
        if job.announcement:
            for n in range(1, MAX_DUPLICATE_MARKS + 1):
                if limit - 1 - n >= 1:
                    yield trim_to_limit(text, limit - 1 - n) + " " + DUPLICATE_MARK * n
        elif job.author_login:
            yield trim_to_limit(f"@{job.author_login} {text}", limit)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _describe(exc: BaseException) -> str:
    """An error for a log line: type and HTTP status only (twitchio's messages can carry URLs with secrets)."""
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__} (HTTP {status})" if status else type(exc).__name__


__all__ = [
    "DUPLICATE_MARK",
    "MAX_AGE_S",
    "TWITCH_MAX_CHARS",
    "ChannelLane",
    "Job",
    "MessageHeld",
    "OutboundPacer",
    "PacerSettings",
    "PacerStats",
    "RateLimited",
    "SendWindow",
    "prepare_text",
]
