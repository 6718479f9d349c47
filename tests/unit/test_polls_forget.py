"""`forget` and polls: a forgotten voter's ballot counts once, a new vote replaces it, nothing names them.

Over a real Store, scheduler, PollService and PrivacyService wired as the runtime wires them.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import PollsConfig, PrivacyConfig
from bot.store import Store
from cogs.common.actor import Actor
from cogs.polls.ballots import ANONYMOUS_PREFIX, HASHED_PREFIX
from cogs.polls.service import PollService
from cogs.polls.storage import VoteAction
from cogs.privacy.service import PrivacyService
from tests.privacy_support import table_cells

CREATOR = Actor("twitch", "c1", "Casey", is_moderator=True)
ANN = Actor("twitch", "ann-42", "Annabel")
BOB = Actor("twitch", "bob-7", "Bob")


@asynccontextmanager
async def services(path):
    store = await Store.open(path)
    scheduler = AsyncIOScheduler()
    scheduler.start()
    polls = PollService(store=store, scheduler=scheduler, config=PollsConfig(), min_duration_s=0.2)
    await polls.start()
    privacy = PrivacyService(store=store, config=PrivacyConfig())
    privacy.on_forgotten(polls.forgotten)  # as bot/runtime.py does
    try:
        yield polls, privacy, store
    finally:
        await polls.close()
        scheduler.shutdown(wait=False)
        await store.close()


def cells(path) -> list[str]:
    return table_cells(path, ("polls", "poll_votes", "poll_displays", "poll_options", "poll_ballot_keys"))


def leaks(path, actor: Actor) -> list[str]:
    return [c for c in cells(path) if actor.user_id in c or actor.name in c]


async def test_forgotten_voter_still_counts_once_and_a_new_vote_replaces_it(tmp_path):
    async with services(tmp_path / "f.db") as (polls, privacy, _):
        poll = await polls.create(CREATOR, "Snack?", ["chips", "fruit"], "2m", channel_id="chan")
        await polls.vote(ANN, poll.id, "chips")
        await polls.vote(BOB, poll.id, "fruit")

        report = await privacy.forget(ANN.platform, ANN.user_id)
        assert report.anonymised["poll votes"] == 1
        results = await polls.results(poll.id)
        assert results.counts == (1, 1) and results.voters == 2  # her vote was not lost
        assert leaks(tmp_path / "f.db", ANN) == []

        receipt = await polls.vote(ANN, poll.id, "fruit")  # she votes again: it replaces, never adds
        assert receipt.action is VoteAction.RECORDED
        results = await polls.results(poll.id)
        assert results.counts == (0, 2) and results.voters == 2
        assert await polls.choices_of(poll.id, ANN) == [2]
        assert leaks(tmp_path / "f.db", ANN) == []  # the new vote went under the hashed key too
        assert any(c.startswith(HASHED_PREFIX) for c in cells(tmp_path / "f.db"))

        await privacy.forget(ANN.platform, ANN.user_id)  # a second forget changes nothing
        assert (await polls.results(poll.id)).counts == (0, 2)


async def test_forgotten_multiple_choice_ballot_toggles_and_counts_one_voter(tmp_path):
    async with services(tmp_path / "f.db") as (polls, privacy, _):
        poll = await polls.create(CREATOR, "Games?", ["a", "b", "c"], "2m", channel_id="chan", multi=True)
        await polls.vote(ANN, poll.id, 1, toggle=True)
        await polls.vote(ANN, poll.id, 3, toggle=True)
        await privacy.forget(ANN.platform, ANN.user_id)
        assert (await polls.results(poll.id)).voters == 1

        taken_back = await polls.vote(ANN, poll.id, 3, toggle=True)
        assert taken_back.action is VoteAction.REMOVED
        await polls.vote(ANN, poll.id, 2, toggle=True)
        results = await polls.results(poll.id)
        assert results.counts == (1, 1, 0) and results.voters == 1
        assert await polls.choices_of(poll.id, ANN) == [1, 2]


async def test_closing_drops_the_hashed_keys_and_the_secret_tallies_stay(tmp_path):
    path = tmp_path / "f.db"
    async with services(path) as (polls, privacy, store):
        poll = await polls.create(CREATOR, "Multi?", ["a", "b", "c"], "2m", channel_id="chan", multi=True)
        for option in (1, 2):
            await polls.vote(ANN, poll.id, option, toggle=True)
        await polls.vote(BOB, poll.id, 3, toggle=True)
        await privacy.forget(ANN.platform, ANN.user_id)
        results = await polls.close_poll(CREATOR, poll.id)
        assert results.counts == (1, 1, 1) and results.voters == 2
        assert await store.fetchval("SELECT count(*) FROM poll_ballot_keys") == 0
        keys = {
            r[0]
            for r in await store.fetchall("SELECT user_id FROM poll_votes WHERE user_id != ?", (BOB.user_id,))
        }
        assert len(keys) == 1 and next(iter(keys)).startswith(ANONYMOUS_PREFIX)  # one token: still one voter
        assert (await privacy.export(ANN.platform, ANN.user_id)).get("poll_votes") is None


async def test_votes_in_closed_polls_get_a_token_per_poll_and_export_shows_open_ballots(tmp_path):
    path = tmp_path / "f.db"
    async with services(path) as (polls, privacy, store):
        ids = []
        for channel in ("one", "two"):
            poll = await polls.create(CREATOR, "Q?", ["a", "b"], "2m", channel_id=channel)
            await polls.vote(ANN, poll.id, "a")
            ids.append(poll.id)
        await polls.close_poll(CREATOR, ids[0])
        still_open = await polls.create(CREATOR, "Open?", ["x", "y"], "2m", channel_id="three")
        await polls.vote(ANN, still_open.id, "y")
        await privacy.forget(ANN.platform, ANN.user_id)
        await polls.close_poll(CREATOR, ids[1])
        tokens = [
            r[0] for r in await store.fetchall("SELECT user_id FROM poll_votes WHERE poll_id IN (?, ?)", ids)
        ]
        assert len(set(tokens)) == 2 and all(t.startswith(ANONYMOUS_PREFIX) for t in tokens)  # not linkable
        exported = (await privacy.export(ANN.platform, ANN.user_id))["poll_votes"]
        assert [(v["poll_id"], v["option"]) for v in exported] == [(still_open.id, 2)]  # still counts as hers
        assert leaks(path, ANN) == []


async def test_forgotten_creator_and_closer_are_not_shown_anywhere(tmp_path):
    path = tmp_path / "f.db"
    async with services(path) as (polls, privacy, _):
        changed: list[frozenset[int]] = []
        polls.on_changed(changed.append)
        running = await polls.create(ANN, "Mine?", ["a", "b"], "2m", channel_id="chan")
        done = await polls.create(BOB, "His?", ["a", "b"], "2m", channel_id="other")
        await polls.close_poll(Actor("twitch", ANN.user_id, ANN.name, is_moderator=True), done.id)
        await privacy.forget(ANN.platform, ANN.user_id)
        live = await polls.results(running.id)  # what a live tally (the Discord footer) shows
        assert live.poll.creator_name == "someone" and ANN.user_id not in live.poll.creator_id
        assert frozenset({running.id}) in changed  # live displays are redrawn without her name
        assert leaks(path, ANN) == []  # creator and `closed_by` included


async def test_vote_racing_a_forget_is_counted_once(tmp_path):
    async with services(tmp_path / "f.db") as (polls, privacy, _):
        poll = await polls.create(CREATOR, "Race?", ["a", "b"], "2m", channel_id="chan")
        await polls.vote(ANN, poll.id, "a")
        await asyncio.gather(
            privacy.forget(ANN.platform, ANN.user_id), *(polls.vote(ANN, poll.id, "b") for _ in range(5))
        )
        results = await polls.results(poll.id)
        assert results.voters == 1 and results.counts == (0, 1)
