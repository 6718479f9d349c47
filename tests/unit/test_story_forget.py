"""`forget` and story votes: a forgotten voter's vote counts once, a new vote replaces it, nothing names them.

Over a real Store, scheduler, StoryService (scripted narrator) and PrivacyService wired as the runtime wires them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager

import pytest

from bot.config import PrivacyConfig
from cogs.common.actor import Actor
from cogs.common.ballot_keys import ANONYMOUS_PREFIX, HASHED_PREFIX
from cogs.privacy.service import PrivacyService
from cogs.story.service import NotAllowed, StoryService
from cogs.story.state import BallotChanged, SceneOpened
from tests.privacy_support import table_cells
from tests.unit.test_story_service import CHANNEL, HOST, open_story

ANN = Actor("twitch", "ann-42", "Annabel")
BOB = Actor("twitch", "bob-7", "Bobby")


@asynccontextmanager
async def services(path, **config):
    async with open_story(path, **config) as (story, store, events):
        privacy = PrivacyService(store=store, config=PrivacyConfig())
        privacy.on_forgotten(story.forgotten)  # as bot/runtime.py wires it
        yield story, privacy, store, events


def cells(path) -> list[str]:
    return table_cells(
        path, ("story_games", "story_turns", "story_options", "story_votes", "story_ballot_keys")
    )


def held(story: StoryService) -> list[str]:
    """Every id and name the service holds in memory about players (votes, names, write-ins, starters)."""
    found = []
    for game in story._games.values():
        found += [*game.started_by, game.started_by_name]
        for turn in game.turns:
            found += [user_id for _, user_id in turn.ballot.voters]
            found += [f"{user_id} {name}" for (_, user_id), name in turn.voter_names.items()]
            found += [user_id for _, user_id in turn.writers]
            found += [f"{o.author_id} {o.author_name}" for o in turn.options]
    return found


def leaks(path, story: StoryService, actor: Actor) -> list[str]:
    return [c for c in [*cells(path), *held(story)] if actor.user_id in c or actor.name in c]


def votes(path) -> list[tuple[int, str, str, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT turn_id, user_id, user_name, option FROM story_votes ORDER BY turn_id"
        ).fetchall()
    finally:
        db.close()


async def test_forgotten_voter_still_counts_once_and_a_new_vote_replaces_it(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, _):
        scene = await story.begin(HOST, CHANNEL)
        await story.vote(ANN, CHANNEL, 1)
        await story.vote(BOB, CHANNEL, 2)

        report = await privacy.forget(ANN.platform, ANN.user_id)
        assert report.anonymised["story votes"] == 1
        assert story.current("twitch", CHANNEL).counts == {1: 1, 2: 1, 3: 0}  # her vote was not lost
        (kept,) = [v for v in votes(path) if v[1] != BOB.user_id]
        assert kept[1].startswith(HASHED_PREFIX) and kept[2] == "someone" and kept[3] == 1
        assert leaks(path, story, ANN) == []

        ack = await story.vote(ANN, CHANNEL, 2)  # she votes again: it replaces, never adds
        assert ack.previous == 1 and ack.counts == {1: 0, 2: 2, 3: 0}
        assert [(t, o) for t, _, _, o in votes(path)] == [(scene.turn_id, 2), (scene.turn_id, 2)]
        assert leaks(path, story, ANN) == []  # the new vote went under the hashed key too

        await privacy.forget(ANN.platform, ANN.user_id)  # a second forget changes nothing
        assert story.current("twitch", CHANNEL).counts == {1: 0, 2: 2, 3: 0}
        assert (await story.vote(ANN, CHANNEL, 3)).previous == 2


async def test_the_hashed_ballot_is_recognised_after_a_restart(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, _):
        await story.begin(HOST, CHANNEL)
        await story.vote(ANN, CHANNEL, 3)
        await privacy.forget(ANN.platform, ANN.user_id)
    async with services(path, majority=0.0) as (story, _, _, _):
        assert story.current("twitch", CHANNEL).counts == {1: 0, 2: 0, 3: 1}
        ack = await story.vote(ANN, CHANNEL, 1)
        assert ack.previous == 3 and ack.counts == {1: 1, 2: 0, 3: 0}
        assert len(votes(path)) == 1 and leaks(path, story, ANN) == []


@pytest.mark.parametrize("how", ["pick", "end", "retry"])
async def test_closing_the_vote_seals_the_keys_and_drops_the_secret(tmp_path, how):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, store, events):
        scene = await story.begin(HOST, CHANNEL)
        await story.vote(ANN, CHANNEL, 1)
        await story.vote(BOB, CHANNEL, 1)
        await privacy.forget(ANN.platform, ANN.user_id)
        assert await store.fetchval("SELECT count(*) FROM story_ballot_keys") == 1
        if how == "pick":  # the vote is decided: its decision and the next scene are stored
            await (await story.pick(HOST, CHANNEL, 1))
            opened = await events.wait_for(SceneOpened, 2)
            assert opened.decision.counts == {1: 2, 2: 0, 3: 0}  # decided on both votes
        elif how == "end":
            await story.end(HOST, CHANNEL)
        else:  # the scene is taken back: its votes are void, and kept on record
            await story.retry(HOST, CHANNEL)
        assert await store.fetchval("SELECT count(*) FROM story_ballot_keys") == 0
        rows = [v for v in votes(path) if v[0] == scene.turn_id and v[1] != BOB.user_id]
        assert len(rows) == 1 and rows[0][1].startswith(ANONYMOUS_PREFIX) and rows[0][3] == 1
        assert not any(HASHED_PREFIX in c for c in [*cells(path), *held(story)])
        assert (await privacy.export(ANN.platform, ANN.user_id)).get("story_votes") is None
        assert leaks(path, story, ANN) == []


async def test_closed_scenes_get_a_token_each_and_export_shows_the_open_vote(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, events):
        first = await story.begin(HOST, CHANNEL)
        await story.vote(ANN, CHANNEL, 2)
        await (await story.pick(HOST, CHANNEL, 2))
        second = (await events.wait_for(SceneOpened, 2)).turn
        await story.vote(ANN, CHANNEL, 1)
        await (await story.pick(HOST, CHANNEL, 1))
        third = (await events.wait_for(SceneOpened, 3)).turn
        await story.vote(ANN, CHANNEL, 3)
        exported = (await privacy.export(ANN.platform, ANN.user_id))["story_votes"]
        assert [(v["turn_id"], v["option"]) for v in exported] == [
            (first.turn_id, 2),
            (second.turn_id, 1),
            (third.turn_id, 3),
        ]

        await privacy.forget(ANN.platform, ANN.user_id)
        keys = {turn_id: user_id for turn_id, user_id, _, _ in votes(path)}
        closed = [keys[first.turn_id], keys[second.turn_id]]
        assert len(set(closed)) == 2 and all(k.startswith(ANONYMOUS_PREFIX) for k in closed)  # not linkable
        assert keys[third.turn_id].startswith(HASHED_PREFIX)
        exported = (await privacy.export(ANN.platform, ANN.user_id))["story_votes"]
        assert [(v["turn_id"], v["option"]) for v in exported] == [(third.turn_id, 3)]  # still counts as hers
        assert leaks(path, story, ANN) == []


async def test_write_ins_and_the_starter_stop_naming_a_forgotten_person(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, events):
        await story.begin(ANN, CHANNEL)
        await story.write_in(ANN, CHANNEL, "say", "Hello, tower!")
        await story.vote(ANN, CHANNEL, 4)
        await story.flush_events()
        changes = len(events.of(BallotChanged))
        await privacy.forget(ANN.platform, ANN.user_id)
        current = story.current("twitch", CHANNEL)
        assert current.options[3].author_name == "someone" and current.counts[4] == 1
        redrawn = await events.wait_for(BallotChanged, changes + 1)  # the ballot on screen loses her name
        assert redrawn.turn.options[3].author_name == "someone"
        assert leaks(path, story, ANN) == []
        with pytest.raises(NotAllowed):  # the story is no longer known as hers
            await story.end(ANN, CHANNEL)
        await (await story.pick(HOST, CHANNEL, 4))
        opened = await events.wait_for(SceneOpened, 2)
        assert opened.turn.action == 'someone says "Hello, tower!"'
        assert leaks(path, story, ANN) == []


async def test_forgotten_people_are_not_counted_in_the_active_audience(tmp_path):
    async with services(tmp_path / "s.db", majority=0.5) as (story, privacy, _, events):
        await story.begin(HOST, CHANNEL)
        await story.vote(ANN, CHANNEL, 1)
        await story.vote(BOB, CHANNEL, 1)
        await (await story.pick(HOST, CHANNEL, 1))
        await events.wait_for(SceneOpened, 2)
        await privacy.forget(ANN.platform, ANN.user_id)
        # Scene 1's voters were Ann and Bob; Ann's vote is nobody's now, so Bob alone is the active audience.
        assert (await story.vote(BOB, CHANNEL, 2)).closing is not None


async def test_vote_racing_a_forget_is_counted_once(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, _):
        await story.begin(HOST, CHANNEL)
        await story.vote(ANN, CHANNEL, 1)
        await asyncio.gather(
            privacy.forget(ANN.platform, ANN.user_id), *(story.vote(ANN, CHANNEL, 2) for _ in range(5))
        )
        assert story.current("twitch", CHANNEL).counts == {1: 0, 2: 1, 3: 0}
        assert [o for _, _, _, o in votes(path)] == [2]
        await story.vote(ANN, CHANNEL, 3)
        assert story.current("twitch", CHANNEL).counts == {1: 0, 2: 0, 3: 1} and len(votes(path)) == 1
