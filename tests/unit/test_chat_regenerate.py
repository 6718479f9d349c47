"""ChatService.regenerate and cooldown_left: the pieces the Regenerate button and slash cooldowns stand on."""

from __future__ import annotations

import pytest

from bot.config import ChatConfig, GenerationConfig, PromptConfig
from bot.store import ConversationLog, Store
from cogs.chat.service import ChatMessage, ChatService, Outcome
from models.persona import default_card_path, load_card
from tests.fakes import ScriptedBackend


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "f.db")
    yield s
    await s.close()


def service(store, backend, clock=None, **chat):
    return ChatService(
        backend=backend,
        card=load_card(default_card_path()),
        log_=ConversationLog(store),
        chat=ChatConfig(**chat),
        generation=GenerationConfig(temperature=0.0),
        prompt=PromptConfig(),
        clock=clock or Clock(),
    )


def msg(content, *, author="u1", name="Ada"):
    return ChatMessage(
        platform="discord",
        conversation_id="d:1",
        channel_id="1",
        author_id=author,
        author_name=name,
        content=content,
    )


async def test_regenerate_replaces_the_latest_reply(store):
    backend = ScriptedBackend(["First answer.", "Second answer."])
    chat = service(store, backend, cooldown_s=0)
    first = await chat.respond(msg("hello"))
    again = await chat.regenerate(first.message)
    assert again.outcome is Outcome.REPLIED and again.text == "Second answer."
    assert again.message == first.message
    request = backend.requests[-1]
    assert request.temperature >= 0.8 and request.seed is not None  # not a greedy repeat of the first
    prompt = " ".join(m["content"] for m in request.messages)
    assert "First answer." not in prompt and "hello" in prompt
    await chat.respond(msg("next"))
    prompt = " ".join(m["content"] for m in backend.requests[-1].messages)
    assert "Second answer." in prompt and "First answer." not in prompt


async def test_regenerate_only_the_latest_reply(store):
    chat = service(store, ScriptedBackend(default="Ok."), cooldown_s=0)
    first = await chat.respond(msg("one"))
    await chat.respond(msg("two"))
    assert (await chat.regenerate(first.message)).outcome is Outcome.IGNORED
    await chat.reset("d:1", platform="discord", channel_id="1")
    assert (await chat.regenerate(first.message)).outcome is Outcome.IGNORED


async def test_regenerate_cooldown_counts_the_requester(store):
    clock = Clock()
    chat = service(store, ScriptedBackend(default="Ok."), clock=clock, cooldown_s=5)
    first = await chat.respond(msg("one"))
    assert (await chat.regenerate(first.message)).outcome is Outcome.COOLDOWN  # Ada just spoke
    assert (await chat.regenerate(first.message, requested_by="mod")).outcome is Outcome.REPLIED


async def test_regenerate_keeps_the_old_reply_when_busy(store):
    backend = ScriptedBackend(["Kept."])
    chat = service(store, backend, cooldown_s=0)
    first = await chat.respond(msg("one"))
    backend.busy = True
    assert (await chat.regenerate(first.message)).outcome is Outcome.BUSY
    backend.busy = False
    assert (await chat.regenerate(first.message)).outcome is Outcome.REPLIED  # "Kept." was put back


async def test_cooldown_left_peeks_without_counting(store):
    clock = Clock()
    chat = service(store, ScriptedBackend(), clock=clock, cooldown_s=5)
    assert chat.cooldown_left("discord", "u1") == 0
    assert chat.cooldown_left("discord", "u1") == 0  # looking twice is not a message
    await chat.respond(msg("hi"))
    clock.t += 2
    assert chat.cooldown_left("discord", "u1") == pytest.approx(3)
    clock.t += 3
    assert chat.cooldown_left("discord", "u1") == 0
