"""Chat on Discord end to end: the real discord.py client against the fake Discord, the chat service over a script."""

from __future__ import annotations

import asyncio

import pytest

from bot.platforms.discord.client import FamiliarShardedDiscordBot
from bot.platforms.discord.send import QUOTE_CHARS
from tests.e2e.discord_harness import discord_runtime, running_bot
from tests.e2e.fake_discord import (
    APP_ID,
    BOB,
    BOT_ID,
    DM_CHANNEL_ID,
    GENERAL_ID,
    GUILD_ID,
    MOD_ROLE_ID,
    OTHER_BOT,
    THREAD_ID,
    custom_ids,
)
from tests.fakes import ScriptedBackend


@pytest.fixture
async def runtime(tmp_path):
    async with discord_runtime(
        str(tmp_path / "data"), ScriptedBackend(default="Hello, traveller. The candle burns.")
    ) as rt:
        yield rt


async def test_mention_gets_reply_without_pings(fake_discord, runtime):
    async with running_bot(runtime, fake_discord) as bot:
        user_msg = await fake_discord.user_message("hello there", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["channel_id"] == str(GENERAL_ID)
        assert reply["content"] == "Hello, traveller. The candle burns."
        assert reply["allowed_mentions"]["parse"] == []
        assert not reply["allowed_mentions"].get("users") and not reply["allowed_mentions"].get("roles")
        assert reply["message_reference"]["message_id"] == user_msg["id"]
        assert "familiar:chat:regenerate" in custom_ids(reply)
        assert fake_discord.requests_to("POST", rf"/channels/{GENERAL_ID}/typing")
        assert f"<@{BOT_ID}>" not in runtime.backend.requests[-1].messages[-1]["content"]
        assert not bot._connection._view_store._synced_message_views  # buttons cost no memory per message


async def test_slash_chat_is_deferred_then_followed_up(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        synced = fake_discord.commands[str(GUILD_ID)]
        assert {"chat", "reset", "persona", "help"} <= {c["name"] for c in synced}
        inter = await fake_discord.slash("chat", {"message": "who are you?"})
        callback = await fake_discord.wait_for_callback(inter)
        assert callback.json["type"] == 5  # deferred: "thinking…"
        (reply,) = await fake_discord.wait_for_sent(lambda m: m["kind"] == "followup")
        # The channel sees what was asked (quoted), then the answer.
        assert reply["content"] == "> who are you?\nHello, traveller. The candle burns."
        assert reply["allowed_mentions"]["parse"] == []
        first = fake_discord.requests.index(callback)
        follow = fake_discord.requests_to("POST", rf"/webhooks/{APP_ID}/[^/]+")[0]
        assert fake_discord.requests.index(follow) > first
        await runtime.store.flush()
        rows = await runtime.log.recent(f"discord:{GENERAL_ID}", 10)
        assert [(r.role, r.content) for r in rows] == [
            ("user", "who are you?"),
            ("assistant", "Hello, traveller. The candle burns."),
        ]
        assert rows[1].platform_message_id == reply["id"]


async def test_slash_chat_quotes_the_question_in_one_safe_line(fake_discord, runtime):
    question = f"# hey <@{BOB['id']}> and <@&{MOD_ROLE_ID}>, say @everyone **loud**\n\nthen " + "go on " * 30
    async with running_bot(runtime, fake_discord):
        inter = await fake_discord.slash("chat", {"message": question})
        await fake_discord.wait_for_callback(inter)
        (reply,) = await fake_discord.wait_for_sent(lambda m: m["kind"] == "followup")
    quote, answer = reply["content"].split("\n")
    assert answer == "Hello, traveller. The candle burns."
    # An unknown member reads "@someone"; a role its name; markdown and @everyone are inert.
    assert quote.startswith("> \\# hey @someone and @Mods, say @\u200beveryone \\*\\*loud\\*\\* then go on")
    assert quote.endswith("…") and len(quote) <= len("> ") + 2 * QUOTE_CHARS  # escapes add characters
    assert "<@" not in quote and "@everyone" not in quote
    assert reply["allowed_mentions"]["parse"] == []
    # The log keeps the question and the answer, not the quote.
    await runtime.store.flush()
    rows = await runtime.log.recent(f"discord:{GENERAL_ID}", 10)
    assert rows[-1].content == "Hello, traveller. The candle burns."


async def test_reply_to_bot_message_and_dm_are_answered(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        await fake_discord.user_message("hi", mention_bot=True)
        (first,) = await fake_discord.wait_for_sent()
        await fake_discord.user_message("and then?", reply_to=first, author=BOB)
        second = (await fake_discord.wait_for_sent(count=2))[1]
        assert second["channel_id"] == str(GENERAL_ID)
        await fake_discord.user_message("a secret", channel_id=DM_CHANNEL_ID)
        third = (await fake_discord.wait_for_sent(count=3))[2]
        assert third["channel_id"] == str(DM_CHANNEL_ID)
        assert third["allowed_mentions"]["parse"] == []
        await runtime.store.flush()
        assert await runtime.log.count(f"discord:dm:{DM_CHANNEL_ID}") == 2


async def test_unaddressed_and_bot_messages_are_ignored(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        await fake_discord.user_message("just chatting among humans")
        await fake_discord.user_message("hey bot, hello", author=OTHER_BOT, mention_bot=True)
        await fake_discord.user_message(
            "now me", mention_bot=True
        )  # a marker: answered, so the others were seen
        await fake_discord.wait_for_sent()
        await asyncio.sleep(0.05)
        assert len(fake_discord.sent) == 1
        assert len(runtime.backend.requests) == 1
        assert "now me" in only_prompt(runtime)


def only_prompt(runtime) -> str:
    return runtime.backend.requests[-1].messages[-1]["content"]


async def test_thread_has_its_own_conversation(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        await fake_discord.user_message("in the thread", mention_bot=True, channel_id=THREAD_ID)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["channel_id"] == str(THREAD_ID)
        await runtime.store.flush()
        (row, _) = await runtime.log.recent(f"discord:thread:{THREAD_ID}", 10)
        assert row.channel_id == str(GENERAL_ID) and row.thread_id == str(THREAD_ID)


async def test_long_reply_split_and_note_shown(fake_discord, tmp_path):
    long = " ".join(f"Sentence number {i} is here." for i in range(150))  # ~4000 characters
    async with discord_runtime(
        str(tmp_path / "d"), ScriptedBackend(default=long), chat={"max_input_chars": 20}
    ) as rt:
        async with running_bot(rt, fake_discord):
            await fake_discord.user_message("x" * 100, mention_bot=True)
            sent = await fake_discord.wait_for_sent(count=3)
            await asyncio.sleep(0.05)
            assert all(len(m["content"]) <= 2000 for m in fake_discord.sent)
            assert sent[0]["content"].startswith("-# (your message was long")
            assert all(m["allowed_mentions"]["parse"] == [] for m in fake_discord.sent)
            assert custom_ids(fake_discord.sent[-1]) and not custom_ids(fake_discord.sent[0])
            text = " ".join(m["content"] for m in fake_discord.sent)
            assert "Sentence number 149 is here." in text
            assert all(
                m["content"].rstrip().endswith(".") for m in fake_discord.sent[1:]
            )  # split at sentences


async def test_sharded_bot_answers(fake_discord, tmp_path, monkeypatch):
    async def no_identify_delay(self, shard_id, *, initial=False):  # Discord's 5 s between IDENTIFYs
        return None

    monkeypatch.setattr(FamiliarShardedDiscordBot, "before_identify_hook", no_identify_delay)
    async with (
        discord_runtime(
            str(tmp_path / "d"), ScriptedBackend(default="Sharded hello."), sharded=True, shard_count=2
        ) as rt,
        running_bot(rt, fake_discord),
    ):
        await fake_discord.wait_until(lambda: fake_discord.identifies == 2)
        assert sorted(s.shard for s in fake_discord.sessions.values()) == [(0, 2), (1, 2)]
        await fake_discord.user_message("hi", mention_bot=True)
        await fake_discord.user_message("hi in private", channel_id=DM_CHANNEL_ID)
        sent = await fake_discord.wait_for_sent(count=2)
        assert {m["content"] for m in sent} == {"Sharded hello."}
