"""`forget` and story votes: a forgotten voter's vote counts once, a new vote replaces it, nothing names them.

Over a real Store, scheduler, StoryService (scripted narrator) and PrivacyService wired as the runtime wires them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from bot.config import PrivacyConfig
from bot.dashboard.data import DashboardData
from bot.store import Store
from bot.store.migrate import load_migrations
from cogs.common.actor import Actor
from cogs.common.ballot_keys import ANONYMOUS_PREFIX, HASHED_PREFIX
from cogs.privacy.service import PrivacyService
from cogs.story.render import status_lines
from cogs.story.service import BadVote, NotAllowed, StoryService
from cogs.story.state import BallotChanged, SceneOpened, StoryEnded
from tests.privacy_support import table_cells
from tests.unit.test_story_service import CHANNEL, HOST, GatedNarrator, open_story

ANN = Actor("twitch", "ann-42", "Annabel")
BOB = Actor("twitch", "bob-7", "Bobby")
ANN_MOD = replace(ANN, is_moderator=True)  # the same person, with a moderator's rights


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
    """Every id and name the service holds in memory about players (votes, names, write-ins, starters, deciders,
    the actions write-ins led to and the recap lines quoting them)."""
    found = []
    for game in story._games.values():
        found += [*game.started_by, game.started_by_name]
        for turn in game.turns:
            found += [user_id for _, user_id in turn.ballot.voters]
            found += [f"{user_id} {name}" for (_, user_id), name in turn.voter_names.items()]
            found += [user_id for _, user_id in turn.writers]
            found += [f"{o.author_id} {o.author_name}" for o in turn.options]
            found += [turn.action, turn.summary or "", str(turn.decided_by or "")]
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


async def settle(story: StoryService, store: Store) -> None:
    """Every task the story started (scene logs included) has finished and its writes are on disk."""
    while story._tasks:
        await asyncio.gather(*list(story._tasks), return_exceptions=True)
    await store.flush()


def column(path, sql: str) -> list:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute(sql)]
    finally:
        db.close()


# ------------------------------------------------------------------------------ 1. who decided a vote
@pytest.mark.parametrize("how", ["pick", "write-in"])
async def test_a_moderator_who_decided_a_vote_is_forgotten(tmp_path, how):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, events):
        first = await story.begin(HOST, CHANNEL)
        if how == "pick":
            await (await story.pick(ANN_MOD, CHANNEL, 2))
        else:  # a moderator's write-in is taken at once: she wrote it and decided with it
            await (await story.write_in(ANN_MOD, CHANNEL, "do", "Ring the bell")).closing
        assert (await events.wait_for(SceneOpened, 2)).decision.by == "Annabel"

        await privacy.forget(ANN.platform, ANN.user_id)
        assert leaks(path, story, ANN) == []
        (decider,) = column(path, f"SELECT decided_by_id FROM story_turns WHERE id = {first.turn_id}")
        assert decider.startswith(ANONYMOUS_PREFIX)
        assert column(path, "SELECT decided_by FROM story_turns WHERE winner IS NOT NULL") == ["someone"]
    async with services(path, majority=0.0) as (story, _, _, _):  # and as it is read back
        assert story.current("twitch", CHANNEL).number == 2 and leaks(path, story, ANN) == []


async def test_a_forget_while_her_decision_is_being_written_holds(tmp_path):
    path = tmp_path / "s.db"
    narrator = GatedNarrator()
    async with services(path, backend=narrator, majority=0.0) as (story, privacy, store, events):
        await story.begin(HOST, CHANNEL)
        closing = await story.pick(ANN_MOD, CHANNEL, 3)
        await asyncio.wait_for(
            narrator.waiting.wait(), 5
        )  # decided and stored; the next scene is being written
        await privacy.forget(ANN.platform, ANN.user_id)
        assert leaks(path, story, ANN) == []
        narrator.gate.set()
        await closing
        opened = await events.wait_for(SceneOpened, 2)
        assert opened.decision.by == "someone" and opened.decision.option == 3
        await settle(story, store)
        assert leaks(path, story, ANN) == []  # closing the scene did not write her name back


async def test_a_decision_waiting_for_its_scene_is_announced_without_her_name(tmp_path):
    path = tmp_path / "s.db"
    narrator = GatedNarrator()
    async with services(path, backend=narrator, close_grace_s=0.05, majority=0.0) as (story, privacy, _, _):
        await story.begin(HOST, CHANNEL)
        await story.pick(ANN_MOD, CHANNEL, 2)
        await asyncio.wait_for(narrator.waiting.wait(), 5)
        await privacy.forget(ANN.platform, ANN.user_id)
    async with services(path, majority=0.0) as (story, _, _, events):  # the next start writes that scene
        opened = await events.wait_for(SceneOpened)
        assert opened.decision.by == "someone" and opened.turn.number == 2
        assert leaks(path, story, ANN) == []


# ------------------------------------------------------------------------------ 2. who ended a story, action_by
async def test_who_ended_a_story_is_forgotten_and_the_dashboard_still_shows_it(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, store, events):
        await story.begin(ANN, "own")  # hers: she may end it herself
        await story.end(ANN, "own")
        await story.begin(HOST, CHANNEL)
        await story.end(ANN_MOD, CHANNEL)
        assert (await events.wait_for(StoryEnded, 2)).by == "Annabel"

        await privacy.forget(ANN.platform, ANN.user_id)
        assert leaks(path, story, ANN) == []
        enders = column(path, "SELECT ended_by FROM story_games ORDER BY id")
        assert all(e.startswith(ANONYMOUS_PREFIX) for e in enders) and len(set(enders)) == 2  # not linked
        stories = await DashboardData(store).stories()
        assert [(s.started_by_name, s.ended_reason) for s in stories] == [
            ("Host", "ended by someone"),
            ("someone", "ended by someone"),
        ]


async def test_the_scene_a_write_in_led_to_no_longer_names_its_author(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, events):
        await story.begin(HOST, CHANNEL)
        await story.write_in(ANN, CHANNEL, "do", "Ring the bell")
        await (await story.pick(HOST, CHANNEL, 4))
        await events.wait_for(SceneOpened, 2)
        await (await story.pick(HOST, CHANNEL, 1))
        await events.wait_for(SceneOpened, 3)
        await story.undo(HOST, CHANNEL)  # scene 2 again: a new row, still led to by her write-in

        await privacy.forget(ANN.platform, ANN.user_id)
        assert leaks(path, story, ANN) == []
        assert column(path, "SELECT action_by FROM story_turns WHERE number = 2") == ["someone", "someone"]
        assert story.current("twitch", CHANNEL).action == "Ring the bell"


async def test_export_lists_the_stories_she_started_ended_and_the_votes_she_decided(tmp_path):
    async with services(tmp_path / "s.db", majority=0.0) as (story, privacy, _, events):
        first = await story.begin(ANN_MOD, CHANNEL)
        await (await story.pick(ANN_MOD, CHANNEL, 1))
        await events.wait_for(SceneOpened, 2)
        await story.end(ANN_MOD, CHANNEL)
        exported = await privacy.export(ANN.platform, ANN.user_id)
        assert [d["turn_id"] for d in exported["story_decisions"]] == [first.turn_id]
        assert [g["id"] for g in exported["stories_started"]] == [first.game_id]
        assert [g["id"] for g in exported["stories_ended"]] == [first.game_id]
        await privacy.forget(ANN.platform, ANN.user_id)
        exported = await privacy.export(ANN.platform, ANN.user_id)
        assert not {"story_decisions", "stories_started", "stories_ended"} & exported.keys()


# ------------------------------------------------------------------------------ 3. "Name says …"
async def test_a_said_write_in_and_its_recap_line_read_someone_says(tmp_path):
    path = tmp_path / "s.db"
    said = '"Hello, tower!"'
    config = {"majority": 0.0, "recent_scenes": 1, "summarize_with_model": False}
    async with services(path, **config) as (story, privacy, _, events):
        await story.begin(HOST, CHANNEL)
        await story.write_in(ANN, CHANNEL, "say", "Hello, tower!")
        await (await story.pick(HOST, CHANNEL, 4))
        assert (await events.wait_for(SceneOpened, 2)).turn.action == f"Annabel says {said}"
        await (
            await story.pick(HOST, CHANNEL, 1)
        )  # scene 1 leaves the verbatim window: its recap line quotes her
        await events.wait_for(SceneOpened, 3)
        await story.retry(HOST, CHANNEL)  # scene 3 again, from the same action
        assert f"Annabel says {said}" in story.status("twitch", CHANNEL).recap
        narration = column(path, "SELECT narration FROM story_turns ORDER BY id")

        await privacy.forget(ANN.platform, ANN.user_id)
        assert leaks(path, story, ANN) == []
        actions = column(path, "SELECT action FROM story_turns WHERE number = 2")
        assert actions == [f"someone says {said}"]
        status = story.status("twitch", CHANNEL)
        assert f"someone says {said}" in status.recap and status_lines(
            status
        )  # what a viewer sees still works
        assert (
            column(path, "SELECT narration FROM story_turns ORDER BY id") == narration
        )  # story content stays
    async with services(path, **config) as (story, _, _, _):
        assert leaks(path, story, ANN) == []


async def test_a_retried_scene_logs_the_write_in_as_its_authors(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, store, events):
        await story.begin(HOST, CHANNEL)
        await story.write_in(ANN, CHANNEL, "say", "Hello, tower!")
        await (await story.pick(HOST, CHANNEL, 4))
        await events.wait_for(SceneOpened, 2)
        await story.retry(HOST, CHANNEL)  # the action is logged again, for retraining
        await settle(story, store)
        await privacy.forget(ANN.platform, ANN.user_id)
        logged = table_cells(path, ("messages",))
        assert [c for c in logged if ANN.user_id in c or ANN.name in c] == []


# ------------------------------------------------------------------------------ 4. one write-in per scene
async def test_a_forgotten_writer_still_cannot_add_a_second_write_in_to_the_scene(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0, max_writeins=3) as (story, privacy, store, events):
        scene = await story.begin(HOST, CHANNEL)
        await story.write_in(ANN, CHANNEL, "do", "Ring the bell")
        await privacy.forget(ANN.platform, ANN.user_id)
        assert leaks(path, story, ANN) == []
        with pytest.raises(BadVote, match="already added"):
            await story.write_in(ANN, CHANNEL, "say", "Anyone here?")
        (author,) = column(path, "SELECT author_id FROM story_options WHERE kind != 'choice'")
        assert author.startswith(HASHED_PREFIX)  # her key on this scene: recognised, and no id
        exported = await privacy.export(ANN.platform, ANN.user_id)  # still hers while the scene is open
        assert [(w["turn_id"], w["label"]) for w in exported["story_write-ins"]] == [
            (scene.turn_id, "Ring the bell")
        ]
        await story.write_in(BOB, CHANNEL, "do", "Run")  # others still can
    async with services(path, majority=0.0, max_writeins=3) as (
        story,
        privacy,
        store,
        events,
    ):  # also after a restart
        with pytest.raises(BadVote, match="already added"):
            await story.write_in(ANN, CHANNEL, "say", "Anyone here?")
        await (await story.pick(HOST, CHANNEL, 4))  # decided: the key is sealed
        await events.wait_for(SceneOpened)
        authors = column(path, f"SELECT author_id FROM story_options WHERE turn_id = {scene.turn_id}")
        assert authors[3].startswith(ANONYMOUS_PREFIX) and authors[4] == BOB.user_id
        assert await store.fetchval("SELECT count(*) FROM story_ballot_keys") == 0
        assert not any(HASHED_PREFIX in c for c in [*cells(path), *held(story)])
        assert "story_write-ins" not in await privacy.export(ANN.platform, ANN.user_id)
        assert leaks(path, story, ANN) == []


@pytest.mark.parametrize("first", ["forget", "write-in", "stored write-in"])
async def test_a_write_in_racing_a_forget_is_held_as_it_is_stored(tmp_path, first):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, _):
        await story.begin(HOST, CHANNEL)
        forget = privacy.forget(ANN.platform, ANN.user_id)
        write_in = story.write_in(ANN, CHANNEL, "do", "Ring the bell")
        if first == "stored write-in":  # stored, then the whole forget runs before the write-in goes on
            add_option = story._repo.add_option

            async def add_then_forget(turn_id, option):
                await add_option(turn_id, option)
                await forget

            story._repo.add_option = add_then_forget
            await write_in
        else:
            await asyncio.gather(*((forget, write_in) if first == "forget" else (write_in, forget)))
        with pytest.raises(BadVote, match="already added"):
            await story.write_in(ANN, CHANNEL, "say", "Anyone here?")
        (stored,) = column(path, "SELECT author_id FROM story_options WHERE kind != 'choice'")
        (option,) = story._games[("twitch", CHANNEL)].current.options[3:]
        assert option.author_id == stored  # memory follows the disk, whichever came first
        if first != "forget":  # written before the forget: forgotten with the rest
            assert stored.startswith(HASHED_PREFIX) and leaks(path, story, ANN) == []


async def test_a_story_started_just_before_a_forget_is_held_as_it_is_stored(tmp_path):
    path = tmp_path / "s.db"
    async with services(path, majority=0.0) as (story, privacy, _, _):
        create_game = story._repo.create_game

        async def create_then_forget(**kwargs):
            created = await create_game(**kwargs)
            await privacy.forget(ANN.platform, ANN.user_id)
            return created

        story._repo.create_game = create_then_forget
        await story.begin(ANN, CHANNEL)
        assert leaks(path, story, ANN) == []


# ------------------------------------------------------------------------------ rows from before 0010
async def test_migration_0010_ties_old_names_to_ids_or_makes_them_someone(tmp_path):
    path = tmp_path / "s.db"
    async with await Store.open(path, migrations=load_migrations()[:9]) as store:
        for game, started, name, reason in [
            (1, "ann-42", "Annabel", "ended by Annabel"),  # ended by its starter
            (2, "host", "Host", "ended by Annabel"),  # ended by a moderator: no id anywhere
            (3, "host", "Host", "last_scene"),
        ]:
            await store.write(
                "INSERT INTO story_games (id, platform, channel_id, premise, narrator, status, started_by,"
                " started_by_name, created_at, ended_reason) VALUES (?, 'twitch', ?, '', 'N', 'ended', ?, ?, 1, ?)",
                (game, f"c{game}", started, name, reason),
            )
        for turn, decided_by in [(1, "Annabel"), (2, "Annabel"), (3, None)]:  # her write-in; her pick; votes
            await store.write(
                "INSERT INTO story_turns (id, game_id, number, action_kind, action, narration, status, opened_at,"
                " winner, resolution, decided_by) VALUES (?, ?, 1, 'start', '', 'Once.', 'closed', 1, 2, ?, ?)",
                (turn, turn, "votes" if decided_by is None else "moderator", decided_by),
            )
            await store.write(
                "INSERT INTO story_options (turn_id, position, kind, label, author_id, author_name)"
                " VALUES (?, 2, ?, 'Ring', ?, ?)",
                (
                    turn,
                    "do" if turn == 1 else "choice",
                    "ann-42" if turn == 1 else None,
                    "Annabel" if turn == 1 else None,
                ),
            )
    async with await Store.open(path) as store:
        games = await store.fetchall("SELECT ended_by, ended_reason FROM story_games ORDER BY id")
        assert [tuple(g) for g in games] == [
            ("ann-42", "ended by Annabel"),
            (None, "ended by someone"),
            (None, "last_scene"),
        ]
        turns = await store.fetchall("SELECT decided_by_id, decided_by FROM story_turns ORDER BY id")
        assert [tuple(t) for t in turns] == [("ann-42", "Annabel"), (None, "someone"), (None, None)]
        privacy = PrivacyService(store=store, config=PrivacyConfig())
        await privacy.forget("twitch", "ann-42")
    assert [c for c in cells(path) if "ann-42" in c or "Annabel" in c] == []
