"""StoryService over a real Store and scheduler with a scripted narrator: rules, rights, votes, restarts, undo."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from contextlib import asynccontextmanager

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import GenerationConfig, PromptConfig, StoryConfig
from bot.store import ConversationLog, Store
from cogs.common.actor import Actor
from cogs.story.console import story_commands
from cogs.story.parser import FALLBACK_CHOICES
from cogs.story.prompt import SUMMARY_SYSTEM
from cogs.story.service import (
    BadVote,
    NoStory,
    NotAllowed,
    StoryError,
    StoryRunning,
    StoryService,
    VoteClosed,
)
from cogs.story.state import BallotChanged, SceneDelayed, SceneOpened, StoryEnded, StoryPaused
from models.persona import default_card_path, load_card
from tests.fakes import ScriptedBackend

HOST = Actor("twitch", "host", "Host", is_moderator=True, is_admin=True)
MOD = Actor("twitch", "mod", "Mod", is_moderator=True)
VIEWER = Actor("twitch", "v1", "Viewer")
CHANNEL = "chan"


def person(i: int) -> Actor:
    return Actor("twitch", f"u{i}", f"User {i}")


def scene(n: int) -> str:
    return (
        f"Scene {n} unfolds in the old tower.\n1. Climb the stairs {n}\n2. Open the chest {n}\n3. Leave {n}"
    )


class Narrator(ScriptedBackend):
    """Answers scene requests from a script (numbered scenes by default) and summary requests with one sentence."""

    def __init__(self, scenes: list[str] | None = None) -> None:
        super().__init__(respond=self._answer)
        self.scenes = list(scenes or [])
        self.scene_requests = 0

    def _answer(self, request) -> str:
        if request.messages[0]["content"] == SUMMARY_SYSTEM:
            return "The heroes explored the tower."
        self.scene_requests += 1
        return self.scenes.pop(0) if self.scenes else scene(self.scene_requests)


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


class Events:
    """A platform's listener: records every event and, like a platform, confirms each scene it shows."""

    def __init__(self, service: StoryService | None = None, *, shows: bool = True) -> None:
        self.items: list = []
        self.changed = asyncio.Event()
        self.service = service
        self.shows = shows  # False: a platform going down, which never gets a scene out

    async def __call__(self, event) -> None:
        self.items.append(event)
        if self.shows and self.service is not None and isinstance(event, SceneOpened):
            await self.service.scene_posted(event.turn.turn_id)
        self.changed.set()

    def of(self, kind):
        return [e for e in self.items if isinstance(e, kind)]

    async def wait_for(self, kind, count: int = 1, timeout: float = 10.0):
        async def loop():
            while len(self.of(kind)) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)
        return self.of(kind)[count - 1]


@asynccontextmanager
async def open_story(path, *, backend=None, clock=time.time, shows=True, close_grace_s=10.0, **config):
    store = await Store.open(path)
    scheduler = AsyncIOScheduler()
    scheduler.start()
    settings = {"vote_seconds": 0.0, "summarize_with_model": True, **config}
    service = StoryService(
        store=store,
        backend=backend or Narrator(),
        card=load_card(default_card_path()),
        log_=ConversationLog(store),
        config=StoryConfig(**settings),
        generation=GenerationConfig(),
        prompt=PromptConfig(),
        scheduler=scheduler,
        clock=clock,
        close_grace_s=close_grace_s,
    )
    events = Events(service, shows=shows)
    service.subscribe("twitch", events)
    await service.start()
    try:
        yield service, store, events
    finally:
        await service.close()
        scheduler.shutdown(wait=False)
        await store.close()


def db(path) -> sqlite3.Connection:
    return sqlite3.connect(path)


# ----------------------------------------------------------------------------------------------- commands
async def test_start_posts_opening_and_refuses_a_second_story(tmp_path):
    async with open_story(tmp_path / "s.db") as (story, _, events):
        view = await story.begin(HOST, CHANNEL, "a haunted lighthouse")
        assert view.number == 1 and len(view.options) == 3
        assert view.narration.startswith("Scene 1")
        opened = await events.wait_for(SceneOpened)
        assert opened.cause == "start" and opened.turn.turn_id == view.turn_id
        with pytest.raises(StoryRunning):
            await story.begin(VIEWER, CHANNEL)
        # Another channel may have its own story.
        other = await story.begin(VIEWER, "other")
        assert other.game_id != view.game_id
    rows = db(tmp_path / "s.db").execute("SELECT premise, status FROM story_games ORDER BY id").fetchall()
    assert rows == [("a haunted lighthouse", "active"), ("", "active")]


async def test_bad_commands_are_answered_clearly(tmp_path):
    async with open_story(tmp_path / "s.db") as (story, _, _):
        with pytest.raises(NoStory, match="no story running"):
            await story.vote(VIEWER, CHANNEL, 1)
        with pytest.raises(NoStory):
            story.status("twitch", CHANNEL)
        await story.begin(HOST, CHANNEL)
        with pytest.raises(BadVote, match="no choice 7"):
            await story.vote(VIEWER, CHANNEL, 7)
        with pytest.raises(BadVote):
            await story.vote(VIEWER, CHANNEL, 0)
        for control in (story.undo, story.retry, story.end):
            with pytest.raises(NotAllowed, match="moderators"):
                await control(VIEWER, CHANNEL)
        with pytest.raises(NotAllowed):
            await story.pick(VIEWER, CHANNEL, 1)
        with pytest.raises(BadVote):
            await story.write_in(VIEWER, CHANNEL, "do", "   ")
        with pytest.raises(VoteClosed):
            await story.vote(VIEWER, CHANNEL, 1, turn_id=-5)  # a button from an older scene


async def test_moderator_only_is_configurable(tmp_path):
    async with open_story(tmp_path / "s.db", moderator_only=("start",)) as (story, _, _):
        with pytest.raises(NotAllowed):
            await story.begin(VIEWER, CHANNEL)
        await story.begin(MOD, CHANNEL)
        await story.retry(VIEWER, CHANNEL)  # no longer moderator-only


# ----------------------------------------------------------------------------------------------- voting
async def test_500_concurrent_voters_exact_tally(tmp_path):
    async with open_story(tmp_path / "s.db", majority=0.0) as (story, _, events):
        view = await story.begin(HOST, CHANNEL)

        async def voter(i: int) -> int:
            first = 1 + i % 3
            await story.vote(person(i), CHANNEL, first)
            if i % 5 == 0:  # every fifth voter changes their mind
                await story.vote(person(i), CHANNEL, 3 - i % 2)
                return 3 - i % 2
            return first

        finals = await asyncio.gather(*(voter(i) for i in range(500)))
        expected = {o: finals.count(o) for o in (1, 2, 3)}
        assert story.current("twitch", CHANNEL).counts == expected
        rows = dict(
            db(tmp_path / "s.db")
            .execute(
                "SELECT option, count(*) FROM story_votes WHERE turn_id = ? GROUP BY option", (view.turn_id,)
            )
            .fetchall()
        )
        assert rows == expected and sum(rows.values()) == 500
        task = await story.pick(HOST, CHANNEL, 2)
        await task
        opened = await events.wait_for(SceneOpened, 2)
        assert opened.decision.counts == expected and opened.decision.resolution == "moderator"
        assert opened.turn.number == 2


async def test_vote_change_replaces(tmp_path):
    async with open_story(tmp_path / "s.db", majority=0.0) as (story, _, _):
        await story.begin(HOST, CHANNEL)
        assert (await story.vote(VIEWER, CHANNEL, 1)).previous is None
        ack = await story.vote(VIEWER, CHANNEL, 3)
        assert ack.previous == 1 and ack.counts == {1: 0, 2: 0, 3: 1}


async def test_majority_of_active_participants_closes_early(tmp_path):
    async with open_story(tmp_path / "s.db", majority=0.5) as (story, _, events):
        await story.begin(HOST, CHANNEL)
        # Scene 1: the only known participant is the host; newcomers' votes count but do not close it.
        for i in range(3):
            assert (await story.vote(person(i), CHANNEL, 1)).closing is None
        ack = await story.vote(HOST, CHANNEL, 2)
        assert ack.closing is not None
        await ack.closing
        second = await events.wait_for(SceneOpened, 2)
        assert second.decision.option == 1 and second.decision.resolution == "votes"
        # Scene 2: the active audience is the four who voted; a third of them is not enough, three are.
        assert (await story.vote(person(0), CHANNEL, 3)).closing is None
        assert (await story.vote(person(1), CHANNEL, 3)).closing is None
        assert (await story.vote(person(9), CHANNEL, 3)).closing is None  # a newcomer
        ack = await story.vote(person(2), CHANNEL, 2)
        assert ack.closing is not None
        with pytest.raises(VoteClosed):  # the vote closed the moment the majority was reached
            await story.vote(HOST, CHANNEL, 1)
        await ack.closing
        third = await events.wait_for(SceneOpened, 3)
        assert third.decision.option == 3 and third.turn.number == 3


async def test_tie_is_drawn_with_a_logged_seed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cogs.story.service")
    async with open_story(tmp_path / "s.db", majority=0.0, vote_seconds=0.2) as (story, _, events):
        await story.begin(HOST, CHANNEL)
        await story.vote(person(1), CHANNEL, 1)
        await story.vote(person(2), CHANNEL, 2)
        opened = await events.wait_for(SceneOpened, 2)
    d = opened.decision
    assert d.resolution == "tie" and d.tied == (1, 2) and d.option in (1, 2) and d.seed is not None
    assert f"with seed {d.seed}" in caplog.text
    row = db(tmp_path / "s.db").execute(
        "SELECT resolution, tie_seed, winner FROM story_turns WHERE number = 1"
    )
    assert row.fetchone() == ("tie", d.seed, d.option)


async def test_no_votes_random_policy(tmp_path):
    async with open_story(tmp_path / "s.db", vote_seconds=0.2, no_votes="random") as (story, _, events):
        await story.begin(HOST, CHANNEL)
        opened = await events.wait_for(SceneOpened, 2)
    assert opened.decision.resolution == "random" and opened.decision.seed is not None


async def test_no_votes_pause_policy_then_a_vote_resumes(tmp_path):
    async with open_story(tmp_path / "s.db", vote_seconds=0.2, no_votes="pause", majority=0.0) as (
        story,
        _,
        ev,
    ):
        await story.begin(HOST, CHANNEL)
        paused = await ev.wait_for(StoryPaused)
        assert paused.turn.number == 1 and story.current("twitch", CHANNEL).status == "paused"
        assert story.has_open_vote("twitch", CHANNEL)
        await story.vote(VIEWER, CHANNEL, 2)  # reopens the window; it closes on its timer with this vote
        opened = await ev.wait_for(SceneOpened, 2)
        assert opened.decision.option == 2 and opened.decision.resolution == "votes"


# ----------------------------------------------------------------------------------------------- model output
async def test_malformed_output_asks_again_then_falls_back(tmp_path):
    narrator = Narrator(
        [
            "Just prose with no choices at all, on and on.",  # opening, first try
            "Still only prose, the model is stubborn today.",  # the choices alone, asked for: none again
            "A market.\n" + "\n".join(f"{i}. Stall {i}" for i in range(1, 10)),  # 9 choices
            "A quiet market square at dawn.\n1. Buy bread\n2. Sell a sword\n3. Watch the crowd",
            "",  # empty narration
            "1. Run\n2. Hide",  # choices without narration
        ]
    )
    async with open_story(tmp_path / "s.db", backend=narrator, majority=0.0) as (story, _, _):
        first = await story.begin(HOST, CHANNEL)
        assert first.narration == "Just prose with no choices at all, on and on."
        assert [o.label for o in first.options] == list(FALLBACK_CHOICES[:3])
        await (await story.pick(HOST, CHANNEL, 1))
        second = story.current("twitch", CHANNEL)
        assert second.narration == "A quiet market square at dawn."
        assert [o.label for o in second.options] == ["Buy bread", "Sell a sword", "Watch the crowd"]
        await (await story.pick(HOST, CHANNEL, 2))
        third = story.current("twitch", CHANNEL)
        assert third.narration.strip() and "Sell a sword" in third.narration  # the fallback narration
        assert [o.label for o in third.options] == ["Run", "Hide"]
        assert all(o.label.strip() for o in third.options)
    assert narrator.scene_requests == 6


async def test_narrator_busy_when_starting(tmp_path):
    backend = Narrator()
    backend.busy = True
    async with open_story(tmp_path / "s.db", backend=backend) as (story, _, _):
        with pytest.raises(StoryError, match="busy"):
            await story.begin(HOST, CHANNEL)
        backend.busy = False
        await story.begin(HOST, CHANNEL)  # the failed start left nothing behind


# ----------------------------------------------------------------------------------------------- write-ins
async def test_write_ins_go_on_the_ballot_and_moderators_are_taken_at_once(tmp_path):
    async with open_story(tmp_path / "s.db", majority=0.0, max_writeins=1) as (story, _, events):
        await story.begin(HOST, CHANNEL)
        ack = await story.write_in(VIEWER, CHANNEL, "do", "  kick   the door ")
        assert (ack.position, ack.label, ack.accepted) == (4, "kick the door", False)
        changed = await events.wait_for(BallotChanged)
        assert [o.label for o in changed.turn.options][-1] == "kick the door"
        with pytest.raises(BadVote, match="full"):
            await story.write_in(person(3), CHANNEL, "say", "hello")
        await story.vote(person(1), CHANNEL, 4)
        await (await story.pick(HOST, CHANNEL, 4))
        second = story.current("twitch", CHANNEL)
        assert second.action == "kick the door"
        mod = await story.write_in(MOD, CHANNEL, "say", "Who goes there?")
        assert mod.accepted and mod.closing is not None
        await mod.closing
        third = await events.wait_for(SceneOpened, 3)
        assert third.decision.resolution == "moderator" and third.turn.action == 'Mod says "Who goes there?"'


# ----------------------------------------------------------------------------------------------- undo / retry / end
async def test_undo_and_retry(tmp_path):
    async with open_story(tmp_path / "s.db", majority=0.0) as (story, _, events):
        first = await story.begin(HOST, CHANNEL)
        with pytest.raises(StoryError, match="opening scene"):
            await story.undo(HOST, CHANNEL)
        await story.vote(VIEWER, CHANNEL, 2)
        await (await story.pick(HOST, CHANNEL, 2))
        second = story.current("twitch", CHANNEL)
        assert second.number == 2
        await story.vote(VIEWER, CHANNEL, 1)
        back = await story.undo(HOST, CHANNEL)
        assert back.number == 1 and back.narration == first.narration and back.total_votes == 0
        assert [o.label for o in back.options] == [o.label for o in first.options]
        assert (await events.wait_for(SceneOpened, 3)).cause == "undo"
        again = await story.retry(HOST, CHANNEL)
        assert again.number == 1 and again.narration != first.narration
        await story.vote(VIEWER, CHANNEL, 3)
        await (await story.pick(HOST, CHANNEL, 3))
        assert story.current("twitch", CHANNEL).number == 2
        scenes = await story.end(HOST, CHANNEL)
        assert scenes == 2
        ended = await events.wait_for(StoryEnded)
        assert ended.reason == "ended" and ended.by == "Host"
        with pytest.raises(NoStory):
            await story.vote(VIEWER, CHANNEL, 1)
    con = db(tmp_path / "s.db")
    statuses = con.execute("SELECT number, status FROM story_turns ORDER BY id").fetchall()
    assert statuses == [(1, "undone"), (2, "undone"), (1, "undone"), (1, "closed"), (2, "open")]
    assert con.execute("SELECT count(*) FROM story_votes").fetchone() == (3,)  # every vote kept on record
    narrator_rows = con.execute("SELECT count(*) FROM messages WHERE role = 'narrator'").fetchone()[0]
    assert narrator_rows == 4  # opening, scene 2, retried opening, scene 2 again (undo re-posts, not re-logs)


async def test_the_starter_may_end_their_own_story(tmp_path):
    async with open_story(tmp_path / "s.db") as (story, _, _):
        await story.begin(VIEWER, CHANNEL)
        assert await story.end(VIEWER, CHANNEL) == 1


async def test_last_scene_ends_the_story(tmp_path):
    async with open_story(tmp_path / "s.db", max_scenes=2) as (story, _, events):
        await story.begin(HOST, CHANNEL)
        await (await story.pick(HOST, CHANNEL, 1))
        await (await story.pick(HOST, CHANNEL, 1))
        ended = await events.wait_for(StoryEnded)
        assert ended.reason == "last_scene" and ended.scenes == 2
        assert story.current("twitch", CHANNEL) is None


async def test_long_story_prompt_holds_a_recap_within_budget(tmp_path):
    narrator = Narrator()
    async with open_story(tmp_path / "s.db", backend=narrator, recent_scenes=2, recap_tokens=30) as (
        story,
        _,
        _,
    ):
        await story.begin(HOST, CHANNEL, "a tower")
        for _ in range(8):
            await (await story.pick(HOST, CHANNEL, 1))
        last = [r for r in narrator.requests if r.messages[0]["content"] != SUMMARY_SYSTEM][-1]
        system = last.messages[0]["content"]
        assert "The story so far:" in system and "The heroes explored the tower." in system
        recap = system.split("The story so far:", 1)[1].split("\n", 1)[0]
        assert narrator.count_tokens(recap) <= 30
        # Only the last two scenes are verbatim.
        assert "Scene 8 unfolds" in str(last.messages) and "Scene 2 unfolds" not in str(last.messages)
        status = story.status("twitch", CHANNEL)
        assert status.scenes == 9 and status.recap


# ----------------------------------------------------------------------------------------------- restarts
async def test_restart_mid_vote_keeps_votes_and_closes_on_time(tmp_path):
    path = tmp_path / "s.db"
    async with open_story(path, vote_seconds=3600, majority=0.0) as (story, _, _):
        view = await story.begin(HOST, CHANNEL)
        for i in range(5):
            await story.vote(person(i), CHANNEL, 1 + i % 2)
    # Reopen with a short window: the stored deadline (an hour away) still rules, so shorten it on disk.
    deadline = time.time() + 1.0
    con = db(path)
    con.execute("UPDATE story_turns SET closes_at = ? WHERE id = ?", (deadline, view.turn_id))
    con.commit()
    con.close()
    async with open_story(path, vote_seconds=3600, majority=0.0) as (story, _, events):
        resumed = story.current("twitch", CHANNEL)
        assert resumed.turn_id == view.turn_id and resumed.counts == {1: 3, 2: 2, 3: 0}
        await story.vote(person(9), CHANNEL, 2)  # votes go on after the restart
        opened = await events.wait_for(SceneOpened)
        assert time.time() >= deadline - 0.05  # not before its time
        assert opened.decision.counts == {1: 3, 2: 3, 3: 0} and opened.decision.resolution == "tie"
        assert opened.turn.number == 2


async def test_window_that_ended_while_down_closes_at_once(tmp_path):
    path = tmp_path / "s.db"
    clock = Clock()
    async with open_story(path, clock=clock, vote_seconds=60, majority=0.0) as (story, _, _):
        await story.begin(HOST, CHANNEL)
        await story.vote(VIEWER, CHANNEL, 3)
    clock.t += 3600  # the bot was down for an hour
    async with open_story(path, clock=clock, vote_seconds=60, majority=0.0) as (story, _, events):
        opened = await events.wait_for(SceneOpened, timeout=5)
        assert opened.decision.option == 3 and opened.turn.number == 2
        assert opened.turn.closes_at == pytest.approx(clock.t + 60)


async def test_events_raised_before_a_platform_subscribes_are_delivered_later(tmp_path):
    async with open_story(tmp_path / "s.db") as (story, _, _):
        await story.begin(Actor("discord", "1", "d", is_admin=True), "42")
        late = Events()
        story.subscribe("discord", late)
        opened = await late.wait_for(SceneOpened)
        assert opened.channel_id == "42"


async def test_narrator_failure_while_closing_keeps_the_vote_open(tmp_path):
    backend = Narrator()
    async with open_story(tmp_path / "s.db", backend=backend, majority=0.0) as (story, _, events):
        await story.begin(HOST, CHANNEL)
        await story.vote(VIEWER, CHANNEL, 2)
        backend.busy = True
        await (await story.pick(HOST, CHANNEL, 1))
        delayed = await events.wait_for(SceneDelayed)
        assert delayed.turn.number == 1 and delayed.retry_in_s > 0
        assert story.has_open_vote("twitch", CHANNEL)
        assert (await story.vote(person(5), CHANNEL, 2)).counts[2] == 2  # votes go on meanwhile


async def test_narration_without_choices_gets_choices_asked_for_alone(tmp_path):
    narrator = Narrator(
        ["The bridge sways over a deep gorge.", "4. Cross slowly\n5. Cut the ropes\n6. Go around"]
    )
    async with open_story(tmp_path / "s.db", backend=narrator) as (story, _, _):
        view = await story.begin(HOST, CHANNEL)
    assert view.narration == "The bridge sways over a deep gorge."
    assert [o.label for o in view.options] == ["Cross slowly", "Cut the ropes", "Go around"]
    choices_request = narrator.requests[1]
    assert choices_request.messages[-1]["content"] == "Story: The bridge sways over a deep gorge."


# ----------------------------------------------------------------------------------------------- stops
class GatedNarrator(Narrator):
    """A narrator that holds every scene after the first until `gate` opens (a slow model at a stop)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def generate(self, request, *, timeout=None):
        if self.scene_requests >= 1 and request.messages[0]["content"] != SUMMARY_SYSTEM:
            self.waiting.set()
            await self.gate.wait()
        return await super().generate(request, timeout=timeout)


def turns(path) -> list[tuple]:
    con = db(path)
    try:
        return con.execute(
            "SELECT number, status, winner, resolution, decided_by, posted_at IS NOT NULL FROM story_turns"
            " ORDER BY id"
        ).fetchall()
    finally:
        con.close()


async def test_stop_while_the_next_scene_is_written_writes_it_at_the_next_start(tmp_path):
    path = tmp_path / "s.db"
    narrator = GatedNarrator()
    async with open_story(path, backend=narrator, close_grace_s=0.05, majority=0.0) as (story, _, _):
        await story.begin(HOST, CHANNEL)
        await story.vote(VIEWER, CHANNEL, 3)
        await story.pick(MOD, CHANNEL, 2)
        await asyncio.wait_for(narrator.waiting.wait(), 5)
    # The stop outlasted the grace: the scene was not written, but the decision is on disk.
    assert turns(path) == [(1, "open", 2, "moderator", "Mod", 1)]
    async with open_story(path, majority=0.0) as (story, _, events):
        opened = await events.wait_for(SceneOpened)
        assert opened.cause == "decided" and opened.turn.number == 2
        assert opened.decision.option == 2 and opened.decision.by == "Mod"
        assert opened.decision.counts == {1: 0, 2: 0, 3: 1}  # the tally it was decided on
        assert story.has_open_vote("twitch", CHANNEL)
        await story.flush_events()
    assert turns(path) == [(1, "closed", 2, "moderator", "Mod", 1), (2, "open", None, None, None, 1)]


async def test_stop_lets_a_scene_being_written_finish_and_stores_it(tmp_path):
    path = tmp_path / "s.db"
    narrator = GatedNarrator()
    async with open_story(path, backend=narrator, majority=0.0) as (story, _, events):
        await story.begin(HOST, CHANNEL)
        await story.pick(MOD, CHANNEL, 1)
        await asyncio.wait_for(narrator.waiting.wait(), 5)
        asyncio.get_running_loop().call_later(0.1, narrator.gate.set)  # the scene is done during the stop
    assert [t[:2] for t in turns(path)] == [(1, "closed"), (2, "open")]
    assert [e.turn.number for e in events.of(SceneOpened)] == [1, 2]


async def test_a_scene_stored_but_never_shown_is_announced_once_after_a_restart(tmp_path):
    path = tmp_path / "s.db"
    clock = Clock()
    async with open_story(path, clock=clock, shows=False, vote_seconds=60, majority=0.0) as (
        story,
        _,
        events,
    ):
        await story.begin(HOST, CHANNEL)
        await story.vote(VIEWER, CHANNEL, 3)
        await (await story.pick(MOD, CHANNEL, 3))
        await events.wait_for(SceneOpened, 2)  # handed to a platform that went down before showing it
    clock.t += 3600  # its window ended while the bot was down: nobody could vote, so it gets a new one
    async with open_story(path, clock=clock, vote_seconds=60, majority=0.0) as (story, _, events):
        opened = await events.wait_for(SceneOpened)
        assert opened.turn.number == 2 and opened.cause == "decided"
        assert opened.turn.closes_at == pytest.approx(clock.t + 60)
        assert opened.decision.option == 3 and opened.decision.by == "Mod"
        assert opened.previous.number == 1 and opened.previous.status == "closed"
        await story.flush_events()
        assert len(events.of(SceneOpened)) == 1
    async with open_story(path, clock=clock, vote_seconds=60, majority=0.0) as (story, _, events):
        await story.flush_events()
        assert events.of(SceneOpened) == []  # shown once: never again
        assert story.current("twitch", CHANNEL).number == 2


async def test_an_opening_scene_never_shown_is_announced_after_a_restart(tmp_path):
    path = tmp_path / "s.db"
    async with open_story(path, shows=False) as (story, _, _):
        view = await story.begin(HOST, CHANNEL)
    async with open_story(path) as (story, _, events):
        opened = await events.wait_for(SceneOpened)
        assert opened.cause == "start" and opened.turn.turn_id == view.turn_id
        assert opened.decision is None and opened.previous is None


async def test_a_scene_the_narrator_could_not_write_leaves_no_decision_behind(tmp_path):
    path = tmp_path / "s.db"
    backend = Narrator()
    async with open_story(path, backend=backend, majority=0.0) as (story, _, events):
        await story.begin(HOST, CHANNEL)
        backend.busy = True
        await (await story.pick(HOST, CHANNEL, 1))
        await events.wait_for(SceneDelayed)
    assert turns(path) == [(1, "open", None, None, None, 1)]  # the vote is open again, nothing to resume


async def test_the_console_confirms_what_it_printed_so_a_restart_does_not_print_it_again(tmp_path):
    path = tmp_path / "s.db"
    printed: list[str] = []
    async with open_story(path) as (story, _, _):
        story_cmd, _vote = story_commands(story, user_name="Me", notify=printed.append)
        await story_cmd.handler("start a quiet pond")
        assert sum(line.startswith(f"{story.narrator} — scene 1") for line in printed) == 1
    printed.clear()
    async with open_story(path) as (story, _, _):
        story_commands(story, user_name="Me", notify=printed.append)
        await story.flush_events()
        assert printed == [] and story.current("console", "local").number == 1
