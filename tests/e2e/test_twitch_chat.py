"""The real twitchio client against the fake Twitch: mentions and !ask answered as replies, deletions honoured."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.runtime import open_runtime
from bot.store import MessageRecord
from tests.e2e.twitch_harness import running_twitch, twitch_config
from tests.fakes import ScriptedBackend


@pytest.fixture
def config(tmp_path):
    return twitch_config(str(tmp_path / "data"))


async def _rows(runtime, conversation="twitch:streamer") -> list[MessageRecord]:
    await runtime.store.flush()
    return await runtime.log.recent(conversation, 100)


async def test_mention_gets_a_reply_to_the_viewers_message(fake_twitch, config):
    backend = ScriptedBackend(default="Hello from the candle!")
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        msg_id = await fake_twitch.send_chat("@wickbot hi there, who are you?", login="alice", user_id="501")
        (sent,) = await fake_twitch.wait_sent(1)
        assert sent.message == "Hello from the candle!"
        assert sent.reply_parent_message_id == msg_id
        assert sent.broadcaster_id == "100" and sent.sender_id == fake_twitch.bot.id
        # The prompt carried the question without the mention.
        last_user = [m for m in backend.requests[-1].messages if m["role"] == "user"][-1]["content"]
        assert "hi there, who are you?" in last_user and "@wickbot" not in last_user
        rows = await _rows(runtime)
        assert [(r.role, r.platform_message_id) for r in rows] == [
            ("user", msg_id),
            ("assistant", sent.message_id),
        ]
        assert rows[1].reply_to_platform_id == msg_id


async def test_ask_command_and_reply_to_the_bot_are_answered(fake_twitch, config):
    backend = ScriptedBackend(["First answer.", "Second answer."])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        ask_id = await fake_twitch.send_chat(
            "!ask what is your favourite colour?", login="bob", user_id="502"
        )
        (first,) = await fake_twitch.wait_sent(1)
        assert first.message == "First answer." and first.reply_parent_message_id == ask_id
        reply_id = await fake_twitch.send_chat(
            "@wickbot why that one?", login="bob", user_id="502", reply_to=first
        )
        sent = await fake_twitch.wait_sent(2)
        assert sent[1].message == "Second answer." and sent[1].reply_parent_message_id == reply_id


async def test_unaddressed_own_and_other_bots_messages_are_ignored(fake_twitch, config):
    backend = ScriptedBackend(default="Only this.")
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch) as bot:
        bot_id = fake_twitch.bot.id
        await fake_twitch.send_chat("a line of mine", login="wickbot", user_id=bot_id, badges=["moderator"])
        await fake_twitch.wait_until(lambda: bot.pacer.is_elevated("100"))  # its badges: 100 per 30 s here
        await fake_twitch.send_chat("just chatting about wickbot here", login="carol", user_id="503")
        await fake_twitch.send_chat("!askme nothing", login="carol", user_id="503")
        await fake_twitch.send_chat("!ask hello", login="nightbot", user_id="504")
        await fake_twitch.send_chat("@wickbot talking to myself", login="wickbot", user_id=bot_id)
        await fake_twitch.send_chat("@wickbot I count", login="dave", user_id="505")
        (sent,) = await fake_twitch.wait_sent(1)
        await asyncio.sleep(0.2)
        assert len(fake_twitch.sent) == 1 and sent.message == "Only this."
        assert len(backend.requests) == 1
        assert not bot.pacer.is_elevated("100")  # its last own message carried no moderator badge


async def test_message_delete_and_clear_user_remove_log_rows(fake_twitch, config):
    backend = ScriptedBackend(["Apples, noted.", "Pears, noted.", "Plums, noted."])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        first = await fake_twitch.send_chat("!ask remember apples", login="erin", user_id="506")
        await fake_twitch.wait_sent(1)
        second = await fake_twitch.send_chat("!ask remember pears", login="frank", user_id="507")
        await fake_twitch.wait_sent(2)
        third = await fake_twitch.send_chat("!ask remember plums", login="frank", user_id="507")
        await fake_twitch.wait_sent(3)
        assert {r.platform_message_id for r in await _rows(runtime)} >= {first, second, third}

        await fake_twitch.delete_message(first, user_id="506", login="erin")
        for _ in range(100):
            if first not in {r.platform_message_id for r in await _rows(runtime)}:
                break
            await asyncio.sleep(0.02)
        ids = {r.platform_message_id for r in await _rows(runtime)}
        assert first not in ids and second in ids

        await fake_twitch.clear_user(user_id="507", login="frank")
        for _ in range(100):
            if not [r for r in await _rows(runtime) if r.author_id == "507"]:
                break
            await asyncio.sleep(0.02)
        rows = await _rows(runtime)
        assert not [r for r in rows if r.author_id == "507"]
        assert [r for r in rows if r.role == "assistant"]  # the character's own lines stay


async def test_bad_input_never_crashes(fake_twitch, config, caplog):
    caplog.set_level(logging.ERROR)
    backend = ScriptedBackend(default="I am still here.")
    inputs = [
        "!ask",
        "!ask      ",
        "@wickbot \u200b\u200b\u200b",
        "!ask " + "x" * 10_000,
        "!ask \u202eتحية طيبة\u202c مرحبا",
        "@wickbot say @everyone and @here right now",
        "!ask \u200bzero\u200dwidth\ufeff",
        "!ask /ban streamer",
    ]
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch) as bot:
        for i, text in enumerate(inputs):
            await fake_twitch.send_chat(text, login=f"viewer{i}", user_id=str(600 + i))
        await fake_twitch.wait_sent(5)
        await asyncio.sleep(0.3)
        assert 5 <= len(fake_twitch.sent) <= 6  # empty and invisible-only messages get no answer
        for sent in fake_twitch.sent:
            assert 0 < len(sent.message) <= 500
        assert bot.pacer.stats.failed == 0
        long_prompt = max(len(r.messages[-1]["content"]) for r in backend.requests)
        assert long_prompt < 2_000  # the 10,000-character message was cut before the prompt
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_model_text_that_looks_like_a_command_is_defused(fake_twitch, config):
    backend = ScriptedBackend(["/ban streamer\nand a second line", "x" * 800])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        await fake_twitch.send_chat("!ask do a thing", login="gina", user_id="508")
        await fake_twitch.wait_sent(1)
        await fake_twitch.send_chat("!ask talk a lot", login="hank", user_id="509")
        sent = await fake_twitch.wait_sent(2)
        assert sent[0].message == "ban streamer and a second line"
        assert len(sent[1].message) <= 500
