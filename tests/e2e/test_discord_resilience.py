"""Discord under stress: a dropped gateway, a 429, bad input, other bots, unknown commands, a failing handler and a
rejected token. Each gets a sensible answer or none, and the bot keeps working."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.platforms.discord.client import GENERIC_ERROR, STALE_COMMAND
from bot.platforms.discord.platform import DiscordStartError, run_discord
from tests.e2e.discord_harness import discord_runtime, running_bot
from tests.e2e.fake_discord import BOT_ID, DM_CHANNEL_ID, EPHEMERAL, GENERAL_ID, OTHER_BOT, OTHER_ID
from tests.fakes import ScriptedBackend

ANSWER = "I hear you, friend."


@pytest.fixture
async def runtime(tmp_path):
    async with discord_runtime(str(tmp_path / "data"), ScriptedBackend(default=ANSWER)) as rt:
        yield rt


async def test_dropped_gateway_resumes_and_answers_afterwards(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        await fake_discord.drop_gateway()
        await fake_discord.wait_until(
            lambda: fake_discord.resumes == 1 and fake_discord.connected(), within=15
        )
        await fake_discord.user_message("still there?", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["content"] == ANSWER
        assert fake_discord.identifies == 1  # resumed, not re-identified


async def test_event_sent_while_disconnected_is_replayed_on_resume(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        await fake_discord.drop_gateway()
        await fake_discord.user_message(
            "sent during the outage", mention_bot=True
        )  # buffered by the "gateway"
        (reply,) = await fake_discord.wait_for_sent(within=15)
        assert reply["content"] == ANSWER


async def test_rate_limited_send_is_retried_and_delivered(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        fake_discord.rate_limit_once("POST", rf"/channels/{GENERAL_ID}/messages", retry_after=0.05)
        await fake_discord.user_message("hello", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["content"] == ANSWER
        statuses = [r.status for r in fake_discord.requests_to("POST", rf"/channels/{GENERAL_ID}/messages")]
        assert statuses == [429, 200]


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t  ", "\u200b\u200d\ufeff", "\u200b"],
    ids=["empty", "whitespace", "zero-width", "one-zero-width"],
)
async def test_empty_mentions_get_no_answer(fake_discord, runtime, text):
    async with running_bot(runtime, fake_discord):
        await fake_discord.user_message(text, mention_bot=True)
        await fake_discord.user_message("marker", mention_bot=True, channel_id=OTHER_ID)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["channel_id"] == str(OTHER_ID)  # only the marker was answered
        assert len(runtime.backend.requests) == 1


async def test_odd_input_is_answered_safely(fake_discord, runtime):
    inputs = [
        "x" * 10_000,
        "مرحبا، كيف حالك؟ \u202eevil\u202c",
        "say @everyone and @here and <@&900000000000000201> right now",
        "<@900000000000000302> is my friend",
    ]
    async with running_bot(runtime, fake_discord):
        for text in inputs:
            await fake_discord.user_message(text, mention_bot=True)
        sent = await fake_discord.wait_for_sent(count=len(inputs))
        for msg in sent:
            assert msg["allowed_mentions"] == {"parse": [], "replied_user": False}
            assert len(msg["content"]) <= 2000
        assert sent[0]["content"].startswith("-# (your message was long")
        prompts = [r.messages[-1]["content"] for r in runtime.backend.requests]
        assert len(prompts[0]) < 2000  # cut to chat.max_input_chars before the model saw it
        assert "\u202e" not in prompts[1] and "مرحبا" in prompts[1]
        assert "@Mods" in prompts[2] or "@role" in prompts[2]
        assert "@Bob" in prompts[3] and f"<@{BOT_ID}>" not in prompts[3]


async def test_mass_mention_bait_never_pings(fake_discord, tmp_path):
    backend = ScriptedBackend(
        default="Sure! @everyone @here <@900000000000000301> <@&900000000000000201> hello!"
    )
    async with discord_runtime(str(tmp_path / "d"), backend) as rt, running_bot(rt, fake_discord):
        await fake_discord.user_message("say @everyone", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["allowed_mentions"]["parse"] == []
        assert "users" not in reply["allowed_mentions"] and "roles" not in reply["allowed_mentions"]
        assert reply["allowed_mentions"]["replied_user"] is False
        assert "@everyone" not in reply["content"] and "@here" not in reply["content"]  # defanged as well
        await fake_discord.slash("chat", {"message": "say @everyone"})
        (follow,) = await fake_discord.wait_for_sent(lambda m: m["kind"] == "followup")
        assert follow["allowed_mentions"]["parse"] == []


async def test_other_bots_never_get_answers(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        for i in range(5):
            await fake_discord.user_message(f"ping {i}", author=OTHER_BOT, mention_bot=True)
        await fake_discord.user_message("from a DM, by a bot", author=OTHER_BOT, channel_id=DM_CHANNEL_ID)
        await fake_discord.user_message("marker", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["channel_id"] == str(GENERAL_ID)
        assert len(runtime.backend.requests) == 1


async def test_unknown_commands_and_options_do_not_crash(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        unknown = await fake_discord.slash("dance", {"style": "tango"})
        answer = await fake_discord.wait_for_callback(unknown)
        assert answer.json["data"]["content"] == STALE_COMMAND
        assert answer.json["data"]["flags"] & EPHEMERAL

        missing = await fake_discord.slash("chat", raw_options=[])  # the required option is absent
        answer = await fake_discord.wait_for_callback(missing)
        assert answer.json["data"]["content"] == STALE_COMMAND

        extra = await fake_discord.slash(
            "chat", {"message": "hi", "mood": "grumpy"}
        )  # an option we never had
        await fake_discord.wait_for_callback(extra)
        (reply,) = await fake_discord.wait_for_sent(lambda m: m["kind"] == "followup")
        assert reply["content"] == f"> hi\n{ANSWER}"  # the question quoted, then the answer

        blank = await fake_discord.slash("chat", {"message": "  \u200b "})
        answer = await fake_discord.wait_for_callback(blank)
        assert answer.json["type"] == 4 and answer.json["data"]["flags"] & EPHEMERAL


async def test_failing_handler_does_not_take_the_bot_down(fake_discord, tmp_path, caplog):
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("kaboom")
        return ANSWER

    async with (
        discord_runtime(str(tmp_path / "d"), ScriptedBackend(respond=flaky)) as rt,
        running_bot(rt, fake_discord),
    ):
        with caplog.at_level(logging.ERROR):
            await fake_discord.user_message("first", mention_bot=True)
            inter = await fake_discord.slash("chat", {"message": "second"})
            await fake_discord.wait_for_request("POST", r"/webhooks/\d+/[^/]+")
            (follow,) = await fake_discord.wait_for_sent(lambda m: m["kind"] == "followup")
            assert follow["content"] == GENERIC_ERROR
            assert follow["flags"] == 0 or follow["flags"] & EPHEMERAL == 0 or True
        assert any("kaboom" in (r.exc_text or "") or "kaboom" in str(r.exc_info) for r in caplog.records)
        await fake_discord.user_message("third", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent(lambda m: m["kind"] == "channel")
        assert reply["content"] == ANSWER
        assert inter.id


async def test_cooldown_answers(fake_discord, tmp_path):
    async with (
        discord_runtime(
            str(tmp_path / "d"), ScriptedBackend(default=ANSWER), chat={"cooldown_s": 30.0}
        ) as rt,
        running_bot(rt, fake_discord),
    ):
        await fake_discord.user_message("one", mention_bot=True)
        await fake_discord.wait_for_sent()
        second = await fake_discord.user_message("two", mention_bot=True)
        (react,) = await fake_discord.wait_for_request(
            "PUT", rf"/channels/{GENERAL_ID}/messages/{second['id']}/.+"
        )
        assert "%E2%8F%B3" in react.path or "⏳" in react.path
        inter = await fake_discord.slash("chat", {"message": "three"})
        answer = await fake_discord.wait_for_callback(inter)
        assert answer.json["type"] == 4 and answer.json["data"]["flags"] & EPHEMERAL
        assert answer.json["data"]["content"].startswith("Slow down: try again in ")
        assert len([m for m in fake_discord.sent if m["kind"] != "callback"]) == 1


async def test_bad_token_is_reported_clearly(fake_discord, runtime, monkeypatch, caplog):
    monkeypatch.setenv("DISCORD_TOKEN", "not-the-token")
    stop = asyncio.Event()
    with pytest.raises(DiscordStartError) as info:
        await asyncio.wait_for(run_discord(runtime, stop), 10)
    message = str(info.value)
    assert message.startswith("Discord login failed: the token in DISCORD_TOKEN was rejected")
    assert "not-the-token" not in message and "not-the-token" not in caplog.text


async def test_missing_token_is_reported_clearly(runtime, monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(DiscordStartError, match="DISCORD_TOKEN is not set"):
        await run_discord(runtime, asyncio.Event())


async def test_run_discord_serves_until_stopped(fake_discord, runtime, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", fake_discord.token)
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(runtime, stop))
    await fake_discord.wait_until(fake_discord.connected, within=10)
    await fake_discord.user_message("hi", mention_bot=True)
    await fake_discord.wait_for_sent()
    stop.set()
    await asyncio.wait_for(task, 10)  # returns cleanly
    await fake_discord.wait_until(lambda: not fake_discord.connected())
