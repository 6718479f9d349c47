"""PollService over a real Store and scheduler: rules, rights, durability, exact tallies, restarts, announcements."""

import asyncio
import sqlite3
import time
from contextlib import asynccontextmanager

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import PollsConfig
from bot.store import Store
from cogs.common.actor import Actor
from cogs.polls.model import (
    InvalidPoll,
    NotAllowed,
    PollClosed,
    PollConflict,
    PollNotFound,
    PollStatus,
    UnknownOption,
)
from cogs.polls.service import PollService
from cogs.polls.storage import VoteAction
from models.persona import default_card_path, load_card
from tests.fakes import ScriptedBackend

CREATOR = Actor("console", "local", "you", is_admin=True)
MOD = Actor("twitch", "m1", "mod", is_moderator=True)
VIEWER = Actor("twitch", "v1", "viewer")


class Clock:
    def __init__(self):
        self.t = time.time()

    def __call__(self):
        return self.t


def person(i, platform="twitch"):
    return Actor(platform, f"user{i}", f"User {i}")


@asynccontextmanager
async def open_polls(path, *, backend=None, clock=time.time, min_duration_s=0.2, **config):
    store = await Store.open(path)
    scheduler = AsyncIOScheduler()
    scheduler.start()
    service = PollService(
        store=store,
        scheduler=scheduler,
        config=PollsConfig(**config),
        backend=backend,
        card=load_card(default_card_path()) if backend else None,
        clock=clock,
        min_duration_s=min_duration_s,
    )
    await service.start()
    try:
        yield service, store
    finally:
        await service.close()
        scheduler.shutdown(wait=False)
        await store.close()


def rows(path, sql, params=()):
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


async def test_vote_change_replaces_and_results_are_exact(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, _):
        poll = await polls.create(CREATOR, "Dinner?", ["pizza", "tacos", "sushi"], "2m", channel_id="local")
        r1 = await polls.vote(VIEWER, poll.id, "pizza")
        assert r1.action is VoteAction.RECORDED and r1.option == 1
        await polls.vote(person(2), poll.id, 2)
        changed = await polls.vote(VIEWER, poll.id, "3")  # the viewer changes their mind
        assert changed.option == 3
        results = await polls.results(poll.id)
        assert results.counts == (0, 1, 1)
        assert results.voters == 2 and results.is_tie and not results.final
        assert await polls.choices_of(poll.id, VIEWER) == [3]


async def test_vote_is_committed_when_acknowledged(tmp_path):
    path = tmp_path / "f.db"
    async with open_polls(path) as (polls, _):
        poll = await polls.create(CREATOR, "Q?", ["a", "b"], 60, channel_id="local")
        await polls.vote(VIEWER, poll.id, "b")
        # A separate connection sees it at once: the acknowledgement came after COMMIT.
        assert rows(path, "SELECT platform, user_id, option FROM poll_votes") == [("twitch", "v1", 2)]


async def test_thousand_concurrent_votes_give_an_exact_tally(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, store):
        poll = await polls.create(CREATOR, "Best number?", ["one", "two", "three"], "5m", channel_id="local")
        commits_before = store.stats.commits
        receipts = await asyncio.gather(*(polls.vote(person(i), poll.id, i % 3 + 1) for i in range(1000)))
        assert all(r.action is VoteAction.RECORDED for r in receipts)
        results = await polls.results(poll.id)
        assert results.counts == (334, 333, 333)
        assert results.voters == 1000 and results.total_votes == 1000
        assert store.stats.commits - commits_before < 100  # votes share commits


async def test_concurrent_vote_changes_by_one_person_count_once(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, _):
        poll = await polls.create(CREATOR, "Q?", ["a", "b", "c"], "5m", channel_id="local")
        await asyncio.gather(*(polls.vote(VIEWER, poll.id, i % 3 + 1) for i in range(300)))
        results = await polls.results(poll.id)
        assert results.total_votes == 1 and results.voters == 1
        assert results.counts[(299 % 3)] == 1  # the last vote queued is the one that stands


async def test_votes_racing_a_close_are_either_counted_or_refused(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, _):
        poll = await polls.create(CREATOR, "Q?", ["a", "b"], "5m", channel_id="local")

        async def one(i):
            await asyncio.sleep(0.0005 * (i % 20))
            try:
                await polls.vote(person(i), poll.id, i % 2 + 1)
                return True
            except PollClosed:
                return False

        async def closer():
            await asyncio.sleep(0.004)
            return await polls.close_poll(CREATOR, poll.id)

        *acks, final = await asyncio.gather(*(one(i) for i in range(600)), closer())
        assert final.total_votes == sum(acks) == (await polls.results(poll.id)).total_votes
        assert final.final


async def test_missing_option_and_closed_polls_are_refused(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, _):
        poll = await polls.create(CREATOR, "Q?", ["a", "b"], "1m", channel_id="local")
        with pytest.raises(UnknownOption, match="no option 3"):
            await polls.vote(VIEWER, poll.id, 3)
        with pytest.raises(UnknownOption, match="not an option"):
            await polls.vote(VIEWER, poll.id, "c")
        with pytest.raises(PollNotFound, match="no poll #99"):
            await polls.vote(VIEWER, 99, 1)
        await polls.vote(VIEWER, poll.id, 1)
        results = await polls.close_poll(CREATOR, poll.id)
        assert results.counts == (1, 0) and results.poll.status is PollStatus.CLOSED
        with pytest.raises(PollClosed, match="has closed; votes are no longer counted"):
            await polls.vote(person(2), poll.id, 2)
        with pytest.raises(PollClosed, match="has closed"):
            await polls.close_poll(CREATOR, poll.id)
        assert (await polls.results(poll.id)).counts == (1, 0)

        cancelled = await polls.create(CREATOR, "Q2?", ["a", "b"], "1m", channel_id="local")
        await polls.close_poll(CREATOR, cancelled.id, cancel=True)
        with pytest.raises(PollClosed, match="was cancelled"):
            await polls.vote(VIEWER, cancelled.id, 1)


async def test_votes_after_the_deadline_are_refused_even_before_the_job_runs(tmp_path):
    clock = Clock()
    async with open_polls(tmp_path / "f.db", clock=clock) as (polls, _):
        poll = await polls.create(CREATOR, "Q?", ["a", "b"], "1m", channel_id="local")
        await polls.vote(VIEWER, poll.id, 1)
        clock.t += 61  # the scheduler's real clock has not reached the deadline: only ours has
        with pytest.raises(PollClosed):
            await polls.vote(person(2), poll.id, 1)


async def test_bad_polls_are_refused_with_clear_messages(tmp_path):
    async with open_polls(tmp_path / "f.db", min_duration_s=15) as (polls, _):
        cases = [
            (("Q?", ["only"], "2m"), "at least 2 options"),
            (("Q?", [str(i) for i in range(11)], "2m"), "at most 10 options"),
            (("Q?", ["a", "A"], "2m"), "are the same"),
            (("", ["a", "b"], "2m"), "question is empty"),
            (("Q?", ["a", "b"], "0"), "must be positive"),
            (("Q?", ["a", "b"], "-1m"), "must be positive"),
            (("Q?", ["a", "b"], "10 years"), "at most 7d"),
            (("Q?", ["a", "b"], "soon"), "Not a duration"),
            (("Q?", ["a", "b"], "5s"), "at least 15s"),
            (("é" * 301, ["a", "b"], "2m"), "the limit is 300"),
            (("Q?", ["a", "🙂" * 56], "2m"), "the limit is 55"),
        ]
        for (question, options, duration), message in cases:
            with pytest.raises(InvalidPoll, match=message):
                await polls.create(CREATOR, question, options, duration, channel_id="local")
        poll = await polls.create(CREATOR, "Qué? 🤔 " + "ü" * 200, ["寿司", "🍕"], "15s", channel_id="local")
        assert poll.options == ("寿司", "🍕")
        assert (await polls.vote(VIEWER, poll.id, "🍕")).option == 2


async def test_one_poll_per_channel(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, _):
        first = await polls.create(CREATOR, "Q?", ["a", "b"], "1m", channel_id="local")
        with pytest.raises(PollConflict, match=f"Poll #{first.id} is already running"):
            await polls.create(CREATOR, "Q2?", ["a", "b"], "1m", channel_id="local")
        both = await asyncio.gather(
            polls.create(MOD, "A?", ["a", "b"], "1m", channel_id="chan"),
            polls.create(MOD, "B?", ["a", "b"], "1m", channel_id="chan"),
            return_exceptions=True,
        )
        assert sum(isinstance(b, PollConflict) for b in both) == 1
        await polls.close_poll(CREATOR, first.id)
        await polls.create(CREATOR, "Q3?", ["a", "b"], "1m", channel_id="local")  # free again


async def test_rights_to_close_and_cancel(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, _):
        poll = await polls.create(VIEWER, "Q?", ["a", "b"], "1m", channel_id="chan")
        with pytest.raises(NotAllowed, match=r"Only viewer .* or a moderator"):
            await polls.close_poll(person(5), poll.id)
        discord_mod = Actor("discord", "d1", "dmod", is_moderator=True)
        with pytest.raises(NotAllowed):  # a moderator elsewhere, where the poll is not shown
            await polls.close_poll(discord_mod, poll.id)
        await polls.close_poll(MOD, poll.id, cancel=True)
        own = await polls.create(VIEWER, "Mine?", ["a", "b"], "1m", channel_id="chan")
        results = await polls.close_in(VIEWER, "chan")  # the creator may close their own poll
        assert results.poll.id == own.id


async def test_multiple_choice_counts_each_option_once_per_person(tmp_path):
    async with open_polls(tmp_path / "f.db") as (polls, _):
        poll = await polls.create(
            CREATOR, "Toppings?", ["cheese", "ham", "olives"], "1m", channel_id="local", multi=True
        )
        await polls.vote(VIEWER, poll.id, 1)
        await polls.vote(VIEWER, poll.id, 3)
        await polls.vote(VIEWER, poll.id, 3)  # again: still one
        await polls.vote(person(2), poll.id, 1)
        results = await polls.results(poll.id)
        assert results.counts == (2, 0, 1) and results.voters == 2
        assert results.percentages == (100.0, 0.0, 50.0)
        removed = await polls.vote(VIEWER, poll.id, 3, toggle=True)
        assert removed.action is VoteAction.REMOVED
        added = await polls.vote(VIEWER, poll.id, 2, toggle=True)
        assert added.action is VoteAction.RECORDED
        assert await polls.choices_of(poll.id, VIEWER) == [1, 2]


async def test_cross_platform_poll_combines_tallies(tmp_path):
    links = ("discord:555 = twitch:streamer",)
    async with open_polls(tmp_path / "f.db", links=links) as (polls, _):
        shown = []

        async def on_twitch(poll, displays):
            shown.append((poll.id, displays))

        polls.on_created("twitch", on_twitch)
        creator = Actor("discord", "42", "dan", is_moderator=True)
        poll = await polls.create(creator, "Stream game?", ["chess", "go"], "1m", channel_id="555")
        assert {(d.platform, d.channel_id) for d in poll.displays} == {
            ("discord", "555"),
            ("twitch", "streamer"),
        }
        # The same user id on two platforms is two people.
        await polls.vote(Actor("discord", "7", "ann"), poll.id, 1)
        await polls.vote_in(Actor("twitch", "7", "ann_tw"), "streamer", "go")
        await polls.vote_in(Actor("twitch", "8", "bob"), "streamer", "2")
        with pytest.raises(PollConflict):
            await polls.create(MOD, "Other?", ["a", "b"], "1m", channel_id="streamer")
        results = await polls.results_in("twitch", "streamer")
        assert results.counts == (1, 2) and results.voters == 3
        assert dict(results.by_platform) == {"discord": 1, "twitch": 2}
        await polls.drain()
        assert shown == [(poll.id, (polls.open_poll(poll.id).displays[1],))]
        # A Twitch moderator may close a poll shown in their chat.
        closed = await polls.close_in(MOD, "streamer")
        assert closed.counts == (1, 2) and closed.winners == (2,)


async def test_deadline_closes_and_announces_in_character(tmp_path):
    backend = ScriptedBackend(["What a night! Go wins, as the stars foretold."])
    async with open_polls(tmp_path / "f.db", backend=backend) as (polls, _):
        got = asyncio.Queue()

        async def on_close(results, announcement):
            await got.put((results, announcement))

        polls.on_closed("console", on_close)
        poll = await polls.create(CREATOR, "Game?", ["chess", "go"], 0.5, channel_id="local")
        await polls.vote(VIEWER, poll.id, "go")
        results, announcement = await asyncio.wait_for(got.get(), 5)
        assert results.poll.id == poll.id and results.final and results.counts == (0, 1)
        assert results.poll.closed_at >= poll.closes_at
        assert announcement.in_character and announcement.text.startswith("What a night!")
        system = backend.requests[0].messages[0]["content"]
        assert "“go”: 1 vote (100%)" in system and "Game?" in system
        await polls.drain()
        assert polls.open_poll(poll.id) is None


@pytest.mark.parametrize("trouble", ["busy", "slow", "empty"])
async def test_announcement_falls_back_to_the_template(tmp_path, trouble):
    backend = ScriptedBackend(
        ["<|im_start|>"] if trouble == "empty" else [], delay_s=5 if trouble == "slow" else 0
    )
    backend.busy = trouble == "busy"
    async with open_polls(tmp_path / "f.db", backend=backend, announce_timeout_s=0.3) as (polls, _):
        poll = await polls.create(CREATOR, "Game?", ["chess", "go"], "1m", channel_id="local")
        await polls.vote(VIEWER, poll.id, "chess")
        results = await polls.close_poll(CREATOR, poll.id)
        started = time.monotonic()
        announcement = await polls.announcement(results)
        assert time.monotonic() - started < 3
        assert not announcement.in_character
        assert announcement.text == "The poll “Game?” is closed! “chess” wins with 1 vote (100%)."


async def test_restart_mid_poll_keeps_votes_and_closes_on_time(tmp_path):
    path = tmp_path / "f.db"
    async with open_polls(path) as (polls, _):
        poll = await polls.create(CREATOR, "Q?", ["a", "b"], 1.5, channel_id="local")
        await asyncio.gather(*(polls.vote(person(i), poll.id, i % 2 + 1) for i in range(50)))
    # The process is gone; a new one opens the same database.
    async with open_polls(path) as (polls, _):
        got = asyncio.Queue()

        async def on_close(results, announcement):
            await got.put(results)

        polls.on_closed("console", on_close)
        assert polls.open_in("console", "local").id == poll.id
        await polls.vote(person(100), poll.id, 1)
        results = await asyncio.wait_for(got.get(), 5)
        assert results.counts == (26, 25)
        assert poll.closes_at <= results.poll.closed_at < poll.closes_at + 1.0  # on time
        await polls.drain()
    assert rows(path, "SELECT status FROM polls") == [("closed",)]
    assert rows(path, "SELECT announced_at IS NOT NULL FROM poll_displays") == [(1,)]


async def test_poll_overdue_at_start_closes_at_once_and_is_announced(tmp_path):
    path = tmp_path / "f.db"
    clock = Clock()
    async with open_polls(path, clock=clock) as (polls, _):
        poll = await polls.create(CREATOR, "Q?", ["a", "b"], "1h", channel_id="local")
        await polls.vote(VIEWER, poll.id, 2)
    clock.t += 7200  # down for two hours
    async with open_polls(path, clock=clock) as (polls, _):
        assert polls.open_polls() == []
        assert (await polls.get(poll.id)).status is PollStatus.CLOSED
        got = asyncio.Queue()

        async def on_close(results, announcement):
            await got.put((results, announcement))

        polls.on_closed("console", on_close)  # a platform arriving later still hears about it, once
        results, announcement = await asyncio.wait_for(got.get(), 5)
        assert results.poll.id == poll.id and results.counts == (0, 1)
        assert "“b” wins" in announcement.text
        await polls.drain()
        assert got.empty()
    async with open_polls(path, clock=clock) as (polls, _):
        heard = []

        async def again(results, announcement):
            heard.append(results.poll.id)

        polls.on_closed("console", again)
        await polls.drain()
        assert heard == []  # announced once, not on every start
