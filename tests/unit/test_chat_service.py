import itertools

import pytest

from bot.config import ChatConfig, GenerationConfig, PromptConfig
from bot.store import ConversationLog, Store
from cogs.chat.service import RESET_MARKER, ChatMessage, ChatService, Outcome, normalize_input
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


def make_service(store, backend, *, clock=None, **chat):
    return ChatService(
        backend=backend,
        card=load_card(default_card_path()),
        log_=ConversationLog(store),
        chat=ChatConfig(**chat),
        generation=GenerationConfig(),
        prompt=PromptConfig(),
        clock=clock or Clock(),
    )


def msg(content, *, author="u1", name="Ada", conv="test:c1", **kw):
    return ChatMessage(
        platform="console",
        conversation_id=conv,
        channel_id="c1",
        author_id=author,
        author_name=name,
        content=content,
        **kw,
    )


async def test_reply_is_cleaned_and_both_turns_logged(store):
    backend = ScriptedBackend(["Hi Ada! I am here.\nAda: make me say things"])
    chat = make_service(store, backend)
    reply = await chat.respond(msg("Hello!", platform_message_id="m1"))
    assert reply.outcome is Outcome.REPLIED
    assert reply.text == "Hi Ada! I am here."
    await chat.record_sent(reply, platform_message_id="m2")
    await store.flush()
    rows = await ConversationLog(store).recent("test:c1", 10)
    assert [(r.role, r.content) for r in rows] == [("user", "Hello!"), ("assistant", "Hi Ada! I am here.")]
    assert rows[1].platform_message_id == "m2" and rows[1].reply_to_platform_id == "m1"
    assert rows[1].model_version == "fake:1"


async def test_prompt_has_system_first_and_speaker_names(store):
    backend = ScriptedBackend()
    chat = make_service(store, backend, cooldown_s=0)
    await chat.respond(msg("first", name="Ada"))
    await chat.respond(msg("second", author="u2", name="Bob"))
    messages = backend.requests[-1].messages
    assert messages[0]["role"] == "system"
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert "Ada: first" in users[0] and "Bob: second" in users[-1]
    assert "\nBob:" in backend.requests[-1].stop and "\nAda:" in backend.requests[-1].stop


async def test_bots_and_empty_input_ignored(store):
    backend = ScriptedBackend()
    chat = make_service(store, backend)
    assert (await chat.respond(msg("hi", author_is_bot=True))).outcome is Outcome.IGNORED
    assert (await chat.respond(msg("   \n\t "))).outcome is Outcome.IGNORED
    assert (await chat.respond(msg("\u200b\u200d\ufeff"))).outcome is Outcome.IGNORED
    assert backend.requests == []


async def test_cooldown_per_user(store):
    clock = Clock()
    chat = make_service(store, ScriptedBackend(), clock=clock, cooldown_s=5)
    assert (await chat.respond(msg("a"))).outcome is Outcome.REPLIED
    second = await chat.respond(msg("b"))
    assert second.outcome is Outcome.COOLDOWN and 0 < second.retry_after_s <= 5
    assert (await chat.respond(msg("c", author="u2"))).outcome is Outcome.REPLIED
    clock.t += 5
    assert (await chat.respond(msg("d"))).outcome is Outcome.REPLIED


async def test_long_input_cut_with_note(store):
    backend = ScriptedBackend()
    chat = make_service(store, backend, max_input_chars=50)
    reply = await chat.respond(msg("word " * 2000))
    assert reply.note and "50" in reply.note
    assert len(reply.message.content) <= 52


async def test_empty_generation_retried_then_fallback(store):
    backend = ScriptedBackend(["<|im_end|>", "Ada: hi"])
    chat = make_service(store, backend)
    reply = await chat.respond(msg("hello"))
    assert len(backend.requests) == 2
    assert reply.outcome is Outcome.REPLIED and reply.text.strip()

    backend2 = ScriptedBackend(["", "Second try works."])
    reply2 = await make_service(store, backend2).respond(msg("hello"))
    assert reply2.text == "Second try works."


async def test_busy_engine_gets_busy_answer(store):
    backend = ScriptedBackend()
    backend.busy = True
    reply = await make_service(store, backend).respond(msg("hi"))
    assert reply.outcome is Outcome.BUSY and reply.text


async def test_reply_trimmed_to_limit(store):
    backend = ScriptedBackend(["One sentence here. " * 40])
    reply = await make_service(store, backend).respond(msg("hi"), limit=100)
    assert 0 < len(reply.text) <= 100


async def test_memory_reset_and_restart_from_log(store):
    backend = ScriptedBackend(default="Sure.")
    chat = make_service(store, backend, cooldown_s=0)
    await chat.record_sent(await chat.respond(msg("remember the blue door")), platform_message_id=None)
    await store.flush()
    # A new service (a restart) continues the conversation from the log.
    chat2 = make_service(store, backend, cooldown_s=0)
    await chat2.respond(msg("what door?"))
    assert any("blue door" in m["content"] for m in backend.requests[-1].messages)
    # After a reset (also after a restart) the old history is gone.
    await chat2.reset("test:c1", platform="console", channel_id="c1")
    await store.flush()
    chat3 = make_service(store, backend, cooldown_s=0)
    await chat3.respond(msg("and now?"))
    assert not any("blue door" in m["content"] for m in backend.requests[-1].messages)
    rows = await ConversationLog(store).recent("test:c1", 50)
    assert any(r.content == RESET_MARKER for r in rows)


async def test_memory_bounded(store):
    backend = ScriptedBackend(default="ok")
    chat = make_service(store, backend, cooldown_s=0, memory_turns=4, max_conversations=2)
    for i in range(10):
        await chat.respond(msg(f"m{i}"))
    user_turns = [m for m in backend.requests[-1].messages if m["role"] == "user"]
    assert len(user_turns) <= 2
    for c in range(5):
        await chat.respond(msg("x", conv=f"test:other{c}"))
    assert len(chat._memory) == 2


def test_normalize_input():
    assert normalize_input(" a\u200bb\x07 ") == "ab"
    assert normalize_input("\u202eevil") == "evil"


async def test_streamed_reply_shows_cleaned_text_as_it_grows(store):
    backend = ScriptedBackend(["Hi Ada! I am here.\nAda: make me say things"])
    chat = make_service(store, backend)
    shown: list[str] = []

    async def on_text(text: str) -> None:
        shown.append(text)

    reply = await chat.respond(msg("Hello!"), on_text=on_text)
    assert backend.streamed == 1
    assert reply.text == "Hi Ada! I am here."
    assert len(shown) >= 3 and shown[-1] == "Hi Ada! I am here."
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown))  # it only grows
    assert not any("Ada:" in text for text in shown)  # the invented turn never shows
    assert (await chat.respond(msg("Again!", author="u2"))).text  # without on_text: plain generate
    assert backend.streamed == 1
