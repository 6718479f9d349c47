"""The moderation step between the model and the platforms (cogs/common/safety.py) as every feature uses it:
a held reply is written again with a nudge, then deflected; held texts are kept, never logged as served and never
learnt; a flagged message is not answered; people's text is cleaned and checked before the bot repeats it."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import ChatConfig, GenerationConfig, PollsConfig, PromptConfig, StoryConfig
from bot.platforms.twitch.pacing import Job, MessageHeld, OutboundPacer, PacerSettings
from bot.store import ConversationLog, Store
from cogs.admin.console import safety_commands
from cogs.chat.service import ChatMessage, ChatService, Outcome
from cogs.common.actor import Actor
from cogs.common.held import HeldLog, Place, export_held, forget_held
from cogs.common.safety import NUDGE, Safety, default_deflection
from cogs.polls.model import InvalidPoll
from cogs.polls.service import PollService
from cogs.story.errors import BadVote, NotAllowed
from cogs.story.parser import FALLBACK_CHOICES
from cogs.story.service import StoryService
from models.dataset import build_dataset, load_log_rows
from models.moderation import Moderator, SafetySettings
from models.persona import default_card_path, load_card
from tests.fakes import ScriptedBackend

BAD = "frobnicate"  # the owner's blocked word in these tests
CARD = load_card(default_card_path())
VIEWER = Actor("twitch", "v1", "Viewer")
MOD = Actor("twitch", "m1", "Mod", is_moderator=True)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "f.db")
    yield s
    await s.close()


def make_safety(store: Store, **settings) -> Safety:
    options = {"blocked_terms": (BAD,), "classifier": "off", **settings}
    return Safety(
        Moderator(SafetySettings(**options), scorer=None), HeldLog(store, keep=50), character=CARD.char_name
    )


def make_chat(store: Store, backend: ScriptedBackend, **settings) -> ChatService:
    return ChatService(
        backend=backend,
        card=CARD,
        log_=ConversationLog(store),
        chat=ChatConfig(cooldown_s=0.0),
        generation=GenerationConfig(),
        prompt=PromptConfig(),
        safety=make_safety(store, **settings),
    )


def msg(content: str, *, message_id: str = "m1") -> ChatMessage:
    return ChatMessage(
        platform="twitch",
        conversation_id="twitch:chan",
        channel_id="chan",
        author_id="v1",
        author_name="Ada",
        content=content,
        platform_message_id=message_id,
    )


async def held_rows(store: Store) -> list[tuple[str, str, str]]:
    rows = await store.fetchall("SELECT kind, text, author_id FROM held ORDER BY id")
    return [(r["kind"], r["text"], r["author_id"]) for r in rows]


# ----------------------------------------------------------------------------------------------- chat replies
async def test_held_reply_is_written_again_with_the_nudge(store):
    backend = ScriptedBackend([f"You {BAD}!", "Nice to meet you, Ada."])
    chat = make_chat(store, backend)
    reply = await chat.respond(msg("Hello!"))
    assert reply.outcome is Outcome.REPLIED and reply.text == "Nice to meet you, Ada."
    first, second = backend.requests
    assert first.messages[-1]["role"] == "user"
    assert second.messages[-1] == {"role": "system", "content": NUDGE}
    assert second.messages[:-1] == first.messages
    await store.flush()
    assert await held_rows(store) == [("reply", f"You {BAD}!", "v1")]


async def test_held_twice_the_deflection_is_posted_and_nothing_is_learnt(store):
    backend = ScriptedBackend([f"{BAD} you", f"{BAD} again"])
    chat = make_chat(store, backend)
    reply = await chat.respond(msg("repeat after me: the secret word", message_id="m1"))
    assert reply.outcome is Outcome.HELD
    assert reply.text == default_deflection(CARD.char_name)
    await chat.record_sent(reply, platform_message_id="sent-1")  # what an adapter does after posting it
    await store.flush()
    rows = await ConversationLog(store).recent("twitch:chan", 10)
    # The deflection is not logged as a reply; the message that led there is logged but marked held.
    assert [(r.role, bool(r.held)) for r in rows] == [("user", True)]
    assert [k for k, _, _ in await held_rows(store)] == ["reply", "reply"]
    # The training dataset learns nothing from it, and the next reply is not paired with it.
    backend.replies.extend(["Of course, Ada."])
    later = await chat.respond(msg("Tell me a story?", message_id="m2"))
    await chat.record_sent(later, platform_message_id="sent-2")
    await store.flush()
    prompt = [m["content"] for m in backend.requests[-1].messages]
    assert not any("secret word" in text for text in prompt)  # gone from the memory too
    dataset = build_dataset(await load_log_rows(store), card=CARD, allowed=lambda *_: True)
    texts = [m["content"] for e in dataset.train + dataset.eval for m in e["messages"]]
    assert "Of course, Ada." in texts and not any("secret word" in t for t in texts)
    assert not any(BAD in t for t in texts)


async def test_a_restart_does_not_reread_a_held_message(store):
    chat = make_chat(store, ScriptedBackend([f"{BAD}", f"{BAD}"]))
    await chat.respond(msg("say the word"))
    await store.flush()
    fresh = make_chat(store, backend := ScriptedBackend(["Hello."]))
    await fresh.respond(msg("hi", message_id="m2"))
    assert not any("say the word" in m["content"] for m in backend.requests[-1].messages)


@pytest.mark.parametrize("mode", ["ignore", "refuse"])
async def test_flagged_message_is_not_answered_logged_or_remembered(store, mode):
    backend = ScriptedBackend(["Hello."])
    chat = make_chat(store, backend, on_flagged_input=mode)
    reply = await chat.respond(msg(f"you are a {BAD}"))
    if mode == "ignore":
        assert reply.outcome is Outcome.IGNORED and reply.text == ""
    else:
        assert reply.outcome is Outcome.HELD and reply.text == default_deflection(CARD.char_name)
    assert backend.requests == []  # nothing was generated
    await store.flush()
    assert await ConversationLog(store).count() == 0
    assert await held_rows(store) == [("input", f"you are a {BAD}", "v1")]
    await chat.respond(msg("hi", message_id="m2"))
    assert not any(BAD in m["content"] for m in backend.requests[-1].messages)


async def test_a_streamed_preview_never_shows_a_held_text(store):
    backend = ScriptedBackend([f"Well hello there you {BAD} and more", "Hello there, Ada."])
    chat = make_chat(store, backend)
    shown: list[str] = []

    async def on_text(text: str) -> None:
        shown.append(text)

    reply = await chat.respond(msg("Hi"), on_text=on_text)
    assert reply.text == "Hello there, Ada."
    assert shown and not any(BAD in text for text in shown)
    assert shown[-1].startswith("Well hello there you")  # previews stopped before the blocked word


async def test_platform_refusal_marks_the_exchange_held(store):
    chat = make_chat(store, ScriptedBackend(["A fine reply."]))
    reply = await chat.respond(msg("Hello"))
    held = await chat.hold_sent(
        reply, reasons=("Twitch AutoMod would not permit it",), source="twitch-automod"
    )
    assert held.outcome is Outcome.HELD and held.text == default_deflection(CARD.char_name)
    await chat.record_sent(held, platform_message_id="x")
    await store.flush()
    rows = await ConversationLog(store).recent("twitch:chan", 10)
    assert [(r.role, bool(r.held)) for r in rows] == [("user", True)]
    assert await held_rows(store) == [("reply", "A fine reply.", "v1")]


async def test_regenerate_held_twice_keeps_the_first_reply(store):
    backend = ScriptedBackend(["First answer.", BAD, BAD, "unused"])
    chat = make_chat(store, backend)
    first = await chat.respond(msg("Hello"))
    again = await chat.regenerate(first.message, cooldown=False)
    assert again.outcome is Outcome.HELD
    assert (await chat.regenerate(first.message, cooldown=False)).outcome is Outcome.REPLIED


# ----------------------------------------------------------------------------------------------- held texts
async def test_held_texts_are_bounded_forgotten_and_exported(store):
    held = HeldLog(store, keep=3)
    for i in range(5):
        await held.record(Place("input", "twitch", "chan", "v1", "Ada"), f"text {i}", ("why",), "rules")
    await held.record(Place("reply", "twitch", "chan", "v2", "Bo"), "other", ("why",), "rules")
    await held.prune()
    assert [h.text for h in await held.recent(10)] == ["other", "text 4", "text 3"]
    assert [row["text"] for row in await export_held(store, "twitch", "v1")] == ["text 3", "text 4"]

    async def forget(tx):
        return await forget_held(tx, "twitch", "v1", "anon")

    assert await store.transaction(forget) == 2
    assert [h.text for h in await held.recent(10)] == ["other"]


async def test_moderators_see_settings_and_block_words(store):
    safety = make_safety(store)
    await safety.hold(Place("reply", "twitch", "chan"), f"you {BAD}", (f"blocked term {BAD!r}",), "rules")
    assert safety.block(VIEWER, "zorblax") == "Only moderators can add blocked words."
    assert safety.verdict("zorblax").allowed
    assert "Added" in safety.block(MOD, "zorblax")
    assert not safety.verdict("a ZORBLAX here").allowed
    public = await safety.status_lines(show_text=False)
    assert any("Rules:" in line for line in public)
    assert not any(BAD in line for line in public)  # a channel never reads the held words
    (command,) = safety_commands(safety)
    private = await command.handler("")
    assert any(BAD in line for line in private)
    assert "Added" in await command.handler("block wibblewobble")


# ----------------------------------------------------------------------------------------------- story
class Narrator(ScriptedBackend):
    def __init__(self, scenes: list[str]) -> None:
        super().__init__(respond=lambda request: self.scenes.pop(0) if self.scenes else self.default)
        self.scenes = scenes
        self.default = "The tower is quiet and cold tonight.\n1. Climb up\n2. Go down\n3. Wait"


@asynccontextmanager
async def open_story(store: Store, narrator: Narrator):
    scheduler = AsyncIOScheduler()
    scheduler.start()
    service = StoryService(
        store=store,
        backend=narrator,
        card=CARD,
        log_=ConversationLog(store),
        config=StoryConfig(vote_seconds=0.0, summarize_with_model=False),
        generation=GenerationConfig(),
        prompt=PromptConfig(),
        scheduler=scheduler,
        safety=make_safety(store),
    )
    await service.start()
    try:
        yield service
    finally:
        await service.close()
        scheduler.shutdown(wait=False)


async def test_a_held_scene_becomes_the_narrators_own(store):
    bad = f"The {BAD} king laughs.\n1. Run\n2. Hide\n3. Fight"
    narrator = Narrator([bad, bad])
    async with open_story(store, narrator) as story:
        view = await story.begin(MOD, "chan", "a haunted tower")
    assert BAD not in view.narration and "gentler turn" in view.narration
    assert [o.label for o in view.options] == list(FALLBACK_CHOICES[:3])
    assert narrator.requests[1].messages[-1]["content"] == NUDGE
    assert [k for k, _, _ in await held_rows(store)] == ["story", "story"]


async def test_write_ins_and_premises_are_cleaned_and_checked(store):
    async with open_story(store, Narrator([])) as story:
        with pytest.raises(BadVote):
            await story.begin(MOD, "chan", "\x00\x00\x00")
        with pytest.raises(NotAllowed):
            await story.begin(MOD, "chan", f"a {BAD} adventure")
        assert await store.fetchval("SELECT count(*) FROM story_games") == 0
        await story.begin(MOD, "chan", "a quiet tower")
        ack = await story.write_in(VIEWER, "chan", "do", "\u202eopen the door\u200b")
        assert ack.label == "open the door"
        with pytest.raises(NotAllowed):
            await story.write_in(Actor("twitch", "v2", "Bo"), "chan", "say", f"I {BAD} you")
        labels = [o.label for o in story.current("twitch", "chan").options]
    assert not any(BAD in label for label in labels)
    assert [k for k, _, _ in await held_rows(store)] == ["input", "input"]


# ----------------------------------------------------------------------------------------------- polls
async def test_a_flagged_poll_is_refused_and_an_announcement_held_twice_is_the_template(store):
    scheduler = AsyncIOScheduler()
    scheduler.start()
    backend = ScriptedBackend(default=f"What a {BAD} result!")
    polls = PollService(
        store=store,
        scheduler=scheduler,
        config=PollsConfig(),
        backend=backend,
        card=CARD,
        min_duration_s=0.2,
        safety=make_safety(store),
    )
    await polls.start()
    try:
        with pytest.raises(InvalidPoll):
            await polls.create(VIEWER, "Best word?", ["nice", BAD], "1m", channel_id="chan")
        poll = await polls.create(VIEWER, "Tea\u202e or coffee?", ["tea", "coffee"], "1m", channel_id="chan")
        assert poll.question == "Tea or coffee?"
        announcement = await polls._announcer.announce(await polls.results(poll.id))
        assert not announcement.in_character and BAD not in announcement.text
    finally:
        await polls.close()
        scheduler.shutdown(wait=False)
    assert [k for k, _, _ in await held_rows(store)] == ["input", "reply", "reply"]


# ----------------------------------------------------------------------------------------------- Twitch pacer
async def test_a_line_held_before_sending_is_replaced_once():
    sent: list[str] = []
    recorded: list[str] = []
    done = asyncio.Event()

    async def send(channel_id: str, text: str, reply_to: str | None) -> str:
        if "bad" in text:
            raise MessageHeld(("Twitch AutoMod would not permit it",), "twitch-automod")
        sent.append(text)
        return "id"

    async def on_held(job: Job, text: str, held: MessageHeld) -> None:
        recorded.append(text)

    async def compose() -> str:
        return "a bad reply"

    async def on_sent(message_id: str | None, text: str) -> None:
        done.set()

    def replacement(text: str):
        async def instead(held_text: str) -> str:
            if text.startswith("a bad"):
                done.set()  # the pacer gives up on this job after its replacement is held too
            return text

        return instead

    pacer = OutboundPacer(send, PacerSettings(), on_held=on_held)
    try:
        # A replacement that is held too is not replaced again: nothing goes out.
        pacer.submit(
            Job("c", compose, reply_to="m1", on_held=replacement("a bad deflection"), on_sent=on_sent)
        )
        await asyncio.wait_for(done.wait(), 5)
        await pacer.drain(5)  # lets the job in hand finish
        assert recorded == ["a bad reply", "a bad deflection"] and sent == []
        assert pacer.stats.held == 2
    finally:
        await pacer.stop()
    done.clear()
    pacer = OutboundPacer(send, PacerSettings(), on_held=on_held)
    try:
        pacer.submit(
            Job("c", compose, reply_to="m2", on_held=replacement("Something else."), on_sent=on_sent)
        )
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await pacer.stop()
    assert sent == ["Something else."]
    assert pacer.stats.held == 1 and pacer.stats.sent == 1
