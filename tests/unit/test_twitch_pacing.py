"""The Twitch pacer on a virtual clock: rate window, freshest-first bursts, stale and duplicate drops, 429, stop,
and announcements (in order, one at a time, before replies, never stale, bounded)."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from bot.platforms.twitch.pacing import (
    DUPLICATE_MARK,
    ChannelLane,
    Job,
    OutboundPacer,
    PacerSettings,
    PacerStats,
    RateLimited,
    SendWindow,
    prepare_text,
)


class VirtualClock:
    """Time that moves only when every task is waiting: `run_for` jumps from one sleeper's deadline to the next."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= end:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self.now = end
        await self.settle()


class Recorder:
    """A send function that records (virtual time, channel, text, reply-to)."""

    def __init__(self, clock: VirtualClock, *, fail_first: int = 0, error: Exception | None = None) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str, str, str | None]] = []
        self.fail_first = fail_first
        self.error = error
        self.calls = 0

    async def __call__(self, channel_id: str, text: str, reply_to: str | None) -> str:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RateLimited(retry_after_s=1.0)
        if self.error is not None:
            raise self.error
        self.sent.append((self.clock(), channel_id, text, reply_to))
        return f"m{len(self.sent)}"


def job(channel: str, text: str, n: int, **kwargs) -> Job:
    async def compose() -> str:
        return text

    return Job(
        channel_id=channel,
        compose=compose,
        reply_to=f"q{n}",
        author_id=f"u{n}",
        author_login=f"user{n}",
        **kwargs,
    )


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def make(clock: VirtualClock, send, **settings) -> OutboundPacer:
    return OutboundPacer(send, PacerSettings(**settings), clock=clock, sleep=clock.sleep)


# ------------------------------------------------------------------------------------------------ pure parts


def test_prepare_text_cuts_to_one_line_of_500_and_defuses_commands():
    assert prepare_text("  /ban someone\n now ") == "ban someone now"
    assert prepare_text(".timeout x") == "timeout x"
    assert prepare_text("... well") == "... well"  # an ellipsis is not a command
    assert prepare_text(" \n ") is None
    long = prepare_text("word " * 300)
    assert long is not None and len(long) <= 500


def test_send_window_counts_in_flight_and_expires_after_the_window():
    now = [0.0]
    window = SendWindow(30.0, lambda: now[0])
    for _ in range(2):
        window.reserve()
    assert window.wait_time(2) is None  # only an in-flight send can free room
    window.release(counted=True)
    now[0] = 5.0
    window.release(counted=True)
    assert window.wait_time(2) == pytest.approx(30.0 - 5.0)
    now[0] = 30.0
    assert window.wait_time(2) == 0.0 and window.used() == 1
    window.reserve()
    window.release(counted=False)  # never reached Twitch: takes no room
    assert window.used() == 1


def test_lane_keeps_the_freshest_and_drops_overflow_and_stale():
    stats = PacerStats()
    lane = ChannelLane("c", PacerSettings(queue_per_channel=3, max_age_s=10.0), stats)
    for n in range(5):
        lane.push(Job(channel_id="c", compose=None, reply_to=f"q{n}", received_at=float(n)))  # type: ignore[arg-type]
    assert len(lane) == 3 and stats.dropped_overflow == 2 and stats.max_queue_depth == 3
    first = lane.pop_freshest(now=5.0)
    assert first is not None and first.reply_to == "q4"
    assert lane.pop_freshest(now=13.5) is None  # q2 (t=2) and q3 (t=3) are older than 10 s
    assert stats.dropped_stale == 2


# ------------------------------------------------------------------------------------------------ the pacer


async def test_burst_of_200_never_exceeds_20_per_30s_and_answers_freshest():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, max_age_s=60.0, queue_per_channel=20, workers_per_channel=3)
    for n in range(200):
        assert pacer.submit(job("c1", f"answer {n}", n))
        if n % 10 == 0:
            await clock.run_for(0.05)  # the burst arrives over about a second
    await clock.run_for(300.0)
    times = [t for t, *_ in send.sent]
    assert max_in_window(times, 30.0) <= 20
    assert 20 <= len(send.sent) <= 40  # the first window's worth, then what had not gone stale
    answered = {int(reply[1:]) for *_, reply in send.sent}
    assert max(answered) == 199  # the newest question was answered
    assert pacer.stats.max_queue_depth <= 20
    assert pacer.stats.dropped_overflow + pacer.stats.dropped_stale + len(send.sent) == 200
    await pacer.stop()
    assert all(t.done() for t in pacer.tasks) and not pacer.tasks


async def test_elevated_channel_may_send_100_per_window_and_the_window_is_per_bot():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, queue_per_channel=200, workers_per_channel=4, max_age_s=1_000.0)
    pacer.set_elevated("mod", True)
    for n in range(150):
        pacer.submit(job("mod", f"m{n}", n))
    await clock.run_for(1.0)
    assert len(send.sent) == 100
    for n in range(5):
        pacer.submit(job("plain", f"p{n}", 1000 + n))
    await clock.run_for(1.0)
    assert not [
        s for s in send.sent if s[1] == "plain"
    ]  # the bot already used far more than 20 in this window
    await clock.run_for(60.0)
    assert len([s for s in send.sent if s[1] == "plain"]) == 5
    await pacer.stop()


async def test_same_text_twice_in_30s_is_varied_then_dropped():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send)
    pacer.submit(job("c", "Same words.", 1))
    await clock.run_for(1.0)
    pacer.submit(job("c", "same  WORDS.", 2))
    await clock.run_for(1.0)
    pacer.submit(Job(channel_id="c", compose=job("c", "Same words.", 3).compose, reply_to="q3"))  # no login
    await clock.run_for(1.0)
    texts = [s[2] for s in send.sent]
    assert texts == ["Same words.", "@user2 same  WORDS."]
    assert pacer.stats.varied == 1 and pacer.stats.dropped_duplicate == 1
    await clock.run_for(31.0)
    pacer.submit(Job(channel_id="c", compose=job("c", "Same words.", 4).compose, reply_to="q4"))
    await clock.run_for(1.0)
    assert [s[2] for s in send.sent][-1] == "Same words."  # 30 s later it may be said again
    await pacer.stop()


async def test_429_waits_and_retries_and_counts_against_the_window():
    clock = VirtualClock()
    send = Recorder(clock, fail_first=2)
    sent_ids: list[str | None] = []

    async def on_sent(message_id: str | None, text: str) -> None:
        sent_ids.append(message_id)

    pacer = make(clock, send)
    pacer.submit(job("c", "hello", 1, on_sent=on_sent))
    await clock.run_for(10.0)
    assert sent_ids == ["m1"] and pacer.stats.rate_limited == 2
    await pacer.stop()


async def test_failures_and_crashing_compose_do_not_stop_the_workers():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, workers_per_channel=1)

    async def boom() -> str:
        raise RuntimeError("model exploded")

    async def nothing() -> None:
        return None

    pacer.submit(Job(channel_id="c", compose=boom))
    pacer.submit(Job(channel_id="c", compose=nothing))
    await clock.run_for(1.0)
    pacer.submit(job("c", "still alive", 1))
    await clock.run_for(1.0)
    assert [s[2] for s in send.sent] == ["still alive"]
    assert pacer.stats.failed == 1 and pacer.stats.no_reply == 1
    send.error = OSError("network down")
    pacer.submit(job("c", "lost", 2))
    await clock.run_for(1.0)
    assert pacer.stats.failed == 2
    await pacer.stop()


async def test_discard_forgets_waiting_jobs_and_stop_leaves_no_task():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, limit=1, workers_per_channel=2, queue_per_channel=50, max_age_s=1_000.0)
    for n in range(10):
        pacer.submit(job("c", f"t{n}", n))
    await clock.run_for(1.0)  # one sent; the rest wait for the window
    assert pacer.discard("c", reply_to="q5") == 1
    assert pacer.discard("c", author_id="u6") == 1
    waiting = pacer.queue_depth("c")
    before = {t for t in asyncio.all_tasks() if t.get_name().startswith("twitch-pacer")}
    assert len(before) == 3  # the two reply workers and the announcer
    await pacer.stop()
    assert all(t.done() for t in before)
    assert not pacer.submit(job("c", "late", 99))  # stopped: refuses new work
    assert waiting >= 1


async def test_drain_finishes_the_reply_being_composed_and_drops_the_waiting_ones():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, workers_per_channel=1, queue_per_channel=10, max_age_s=1_000.0)
    composing = asyncio.Event()
    finish = asyncio.Event()
    logged: list[str | None] = []

    async def slow_compose() -> str:
        composing.set()
        await finish.wait()
        return "the answer in flight"

    async def on_sent(message_id: str | None, text: str) -> None:
        logged.append(message_id)

    pacer.submit(Job(channel_id="c", compose=slow_compose, reply_to="q0", on_sent=on_sent))
    await composing.wait()
    for n in range(1, 4):
        pacer.submit(job("c", f"waiting {n}", n))
    drain = asyncio.create_task(pacer.drain(timeout=5))
    await clock.settle()
    assert pacer.queue_depth("c") == 0 and pacer.answering == 1
    assert not pacer.submit(job("c", "too late", 9))
    finish.set()
    await drain
    assert [s[2] for s in send.sent] == ["the answer in flight"]
    assert logged == ["m1"]  # sent and recorded before the drain returned
    assert not pacer.tasks


# ------------------------------------------------------------------------------------------------ announcements


class Gate:
    """A send function that holds every send until `open_one` lets it through, and counts sends at once."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.started: list[str] = []
        self.sent: list[str] = []
        self.in_flight = 0
        self.most_at_once = 0
        self._release: asyncio.Queue[Exception | None] = asyncio.Queue()

    async def __call__(self, channel_id: str, text: str, reply_to: str | None) -> str:
        self.started.append(text)
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            error = await self._release.get()
        finally:
            self.in_flight -= 1
        if error is not None:
            raise error
        self.sent.append(text)
        return f"m{len(self.sent)}"

    def open_one(self, error: Exception | None = None) -> None:
        self._release.put_nowait(error)


async def test_a_multi_part_announcement_goes_out_in_the_order_submitted():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send)
    parts = [f"Part {n} of the scene." for n in range(1, 6)]
    posted: list[str] = []

    async def on_sent(message_id: str | None, text: str) -> None:
        posted.append(text)

    for text in parts:  # all submitted before any worker wakes, as the story does
        assert pacer.submit(Job.say("c", text, on_sent=on_sent))
    await clock.run_for(5.0)
    assert [s[2] for s in send.sent] == parts
    assert posted == parts and all(s[3] is None for s in send.sent)  # said, not replies
    await pacer.stop()


async def test_announcements_are_sent_one_at_a_time_per_channel():
    clock = VirtualClock()
    send = Gate(clock)
    pacer = make(clock, send, workers_per_channel=3)
    for n in range(1, 4):
        pacer.submit(Job.say("c", f"line {n}"))
    await clock.run_for(1.0)
    assert send.started == ["line 1"]  # the next waits while the first is on its way
    send.open_one(OSError("network down"))  # the first fails for good: the next may start
    await clock.run_for(1.0)
    assert send.started == ["line 1", "line 2"]
    send.open_one()
    await clock.run_for(1.0)
    send.open_one()
    await clock.run_for(1.0)
    assert send.sent == ["line 2", "line 3"] and send.most_at_once == 1
    assert pacer.stats.failed == 1
    await pacer.stop()


async def test_announcements_take_the_window_before_waiting_replies():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, limit=3, queue_per_channel=10, max_age_s=1_000.0)
    for n in range(3):
        pacer.submit(job("c", f"early {n}", n))
    await clock.run_for(1.0)
    assert len(send.sent) == 3  # the window is full for 30 s
    for n in range(1, 4):
        pacer.submit(Job.say("c", f"scene part {n}"))
    for n in range(10, 13):
        pacer.submit(job("c", f"reply {n}", n))  # newer than the announcements
    await clock.run_for(30.5)
    assert [s[2] for s in send.sent[3:]] == ["scene part 1", "scene part 2", "scene part 3"]
    await clock.run_for(31.0)
    assert [s[2] for s in send.sent[6:]] == ["reply 12", "reply 11", "reply 10"]  # replies: freshest first
    assert max_in_window([t for t, *_ in send.sent], 30.0) <= 3
    await pacer.stop()


async def test_an_announcement_in_one_channel_goes_before_replies_in_an_elevated_one():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, limit=2, elevated_limit=4, queue_per_channel=10, max_age_s=1_000.0)
    pacer.set_elevated("mod", True)
    for n in range(2):
        pacer.submit(job("plain", f"fill {n}", n))
    await clock.run_for(1.0)
    pacer.submit(Job.say("plain", "the poll result"))
    for n in range(10, 14):
        pacer.submit(job("mod", f"mod reply {n}", n))
    await clock.run_for(1.0)
    assert [s[2] for s in send.sent[2:]] == []  # the mod channel leaves the plain channel's announcement room
    await clock.run_for(30.0)
    assert send.sent[2][2] == "the poll result"
    await pacer.stop()


async def test_announcements_never_go_stale():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, limit=1, max_age_s=10.0)
    for n in range(1, 4):
        pacer.submit(Job.say("c", f"chapter {n}"))
    await clock.run_for(100.0)  # one per 30 s: the last waits 60 s, far past max_age_s
    assert [s[2] for s in send.sent] == ["chapter 1", "chapter 2", "chapter 3"]
    assert pacer.stats.dropped_stale == 0
    await pacer.stop()


async def test_announcements_past_the_cap_forget_the_oldest_and_say_so(caplog):
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send, limit=1, announcements_per_channel=3, queue_per_channel=2, max_age_s=1_000.0)
    pacer.submit(Job.say("c", "first"))
    await clock.run_for(1.0)  # sent; the window is full
    with caplog.at_level("WARNING", logger="bot.platforms.twitch.pacing"):
        for n in range(1, 6):
            pacer.submit(Job.say("c", f"waiting {n}"))
    assert pacer.stats.dropped_announcements == 2
    assert pacer.queue_depth("c") == 3
    assert sum("forgot the oldest" in r.getMessage() for r in caplog.records) == 2
    for n in range(
        3
    ):  # replies keep their own bound: they neither push announcements out nor count toward it
        pacer.submit(job("c", f"reply {n}", n))
    assert pacer.stats.dropped_announcements == 2 and pacer.stats.dropped_overflow == 1
    await clock.run_for(200.0)
    texts = [s[2] for s in send.sent]
    assert texts[:4] == ["first", "waiting 3", "waiting 4", "waiting 5"]
    await pacer.stop()


async def test_a_repeated_announcement_is_varied_invisibly_never_dropped():
    clock = VirtualClock()
    send = Recorder(clock)
    pacer = make(clock, send)
    for _ in range(3):
        pacer.submit(Job.say("c", "Vote with !1 to !3."))
    await clock.run_for(1.0)
    texts = [s[2] for s in send.sent]
    assert texts == [
        "Vote with !1 to !3.",
        "Vote with !1 to !3. " + DUPLICATE_MARK,
        "Vote with !1 to !3. " + DUPLICATE_MARK * 2,
    ]
    assert pacer.stats.dropped_duplicate == 0 and pacer.stats.varied == 2
    await pacer.stop()


async def test_an_announcement_that_meets_429_is_retried_before_the_next_part():
    clock = VirtualClock()
    send = Recorder(clock, fail_first=2)
    pacer = make(clock, send)
    for n in range(1, 4):
        pacer.submit(Job.say("c", f"part {n}"))
    await clock.run_for(10.0)
    assert [s[2] for s in send.sent] == ["part 1", "part 2", "part 3"]
    assert pacer.stats.rate_limited == 2
    await pacer.stop()
