"""Safety on Discord end to end: the real discord.py client against the fake Discord. A reply the server's AutoMod
refuses (HTTP 400, code 200000) is recorded as held and replaced by the deflection, once; the bot never retries
the refused text, keeps answering, and the held text is on the dashboard's data."""

from __future__ import annotations

import asyncio

from bot.dashboard.data import DashboardData
from cogs.common.safety import default_deflection
from tests.e2e.discord_harness import discord_runtime, running_bot
from tests.e2e.fake_discord import ADA, BOB
from tests.e2e.test_admin_privacy_discord import answered, sub
from tests.e2e.test_polls_discord import sub as poll
from tests.fakes import ScriptedBackend


async def test_automod_refused_reply_becomes_the_deflection(fake_discord, tmp_path):
    fake_discord.automod_blocks = ["pineapple"]
    backend = ScriptedBackend(["I adore pineapple on pizza.", "Candles, mostly."])
    async with (
        discord_runtime(str(tmp_path / "data"), backend) as runtime,
        running_bot(runtime, fake_discord),
    ):
        deflection = default_deflection(runtime.card.char_name)
        asked = await fake_discord.user_message("favourite pizza?", mention_bot=True)
        (sent,) = await fake_discord.wait_for_sent()
        assert sent["content"] == deflection
        assert sent["message_reference"]["message_id"] == asked["id"]
        assert not sent.get("components")  # no rating or regenerate buttons on a deflection
        assert fake_discord.automod_refused == ["I adore pineapple on pizza."]  # tried once, never again
        # Still answering.
        await fake_discord.user_message("what do you like?", mention_bot=True, author=BOB)
        await fake_discord.wait_for_sent(lambda m: m["content"] == "Candles, mostly.")
        held = await DashboardData(runtime.store).held()
        assert [(h.kind, h.text, h.source) for h in held] == [
            ("reply", "I adore pineapple on pizza.", "discord-automod")
        ]
        await runtime.store.flush()
        rows = await runtime.log.recent(f"discord:{asked['channel_id']}", 10)
        assert [(r.role, bool(r.held)) for r in rows] == [
            ("user", True),
            ("user", False),
            ("assistant", False),
        ]


async def test_a_refused_deflection_is_not_retried(fake_discord, tmp_path):
    fake_discord.automod_blocks = ["pineapple", "something else"]
    backend = ScriptedBackend(["Pineapple!", "Hello, Bob."])
    async with (
        discord_runtime(str(tmp_path / "data"), backend) as runtime,
        running_bot(runtime, fake_discord),
    ):
        await fake_discord.user_message("pizza?", mention_bot=True)
        await fake_discord.wait_until(lambda: len(fake_discord.automod_refused) >= 2)
        await fake_discord.user_message("hello", mention_bot=True, author=BOB)
        await fake_discord.wait_for_sent(lambda m: m["content"] == "Hello, Bob.")
        await asyncio.sleep(0.1)
        assert fake_discord.automod_refused == ["Pineapple!", default_deflection(runtime.card.char_name)]
        assert [m["content"] for m in fake_discord.sent] == ["Hello, Bob."]


async def test_reply_held_by_our_moderator_is_never_posted(fake_discord, tmp_path):
    backend = ScriptedBackend(["You frobnicate!", "Frobnicate, I said."])
    async with (
        discord_runtime(str(tmp_path / "data"), backend, safety={"blocked_terms": ["frobnicate"]}) as runtime,
        running_bot(runtime, fake_discord),
    ):
        await fake_discord.user_message("say something", mention_bot=True)
        (sent,) = await fake_discord.wait_for_sent()
        assert sent["content"] == default_deflection(runtime.card.char_name)
        assert len(await DashboardData(runtime.store).held()) == 2


async def test_admin_safety_shows_held_texts_to_moderators_and_blocks_words(fake_discord, tmp_path):
    backend = ScriptedBackend(["A zorblax for you.", "Hello!"])
    async with (
        discord_runtime(str(tmp_path / "data"), backend) as runtime,
        running_bot(runtime, fake_discord),
    ):
        refused = await fake_discord.slash("admin", raw_options=sub("safety"), user=ADA)
        text, ephemeral = await answered(fake_discord, refused)
        assert "Manage Messages" in text and ephemeral
        block = await fake_discord.slash("admin", raw_options=sub("safety", block="zorblax"), user=BOB)
        text, ephemeral = await answered(fake_discord, block)
        assert ephemeral and text.startswith("Added to the blocked words") and "Rules:" in text
        await fake_discord.user_message("gift?", mention_bot=True)
        (sent,) = await fake_discord.wait_for_sent(lambda m: m["kind"] == "channel")
        assert "zorblax" not in sent["content"].lower()  # held, then written again without it
        shown = await fake_discord.slash("admin", raw_options=sub("safety"), user=BOB)
        text, _ = await answered(fake_discord, shown)
        assert "A zorblax for you." in text and "added by a moderator" in text


async def test_refused_poll_announcement_leaves_the_results(fake_discord, tmp_path):
    fake_discord.automod_blocks = ["candle has spoken"]
    backend = ScriptedBackend(default="The candle has spoken: tea it is!")
    async with (
        discord_runtime(str(tmp_path / "data"), backend) as runtime,
        running_bot(runtime, fake_discord),
    ):
        created = poll("create", question="Tea or coffee?", options="tea | coffee", duration="2m")
        await fake_discord.slash("poll", raw_options=created, user=BOB)
        await fake_discord.wait_for_sent(lambda m: m.get("embeds"))
        await fake_discord.slash("poll", raw_options=poll("close"), user=BOB)
        results = await fake_discord.wait_for_sent(
            lambda m: m["kind"] == "channel" and m.get("embeds") and m["embeds"][0].get("image")
        )
        assert not results[-1]["content"]  # the results, without the refused announcement
        assert fake_discord.automod_refused == ["**Wick:** The candle has spoken: tea it is!"]
        held = await DashboardData(runtime.store).held()
        assert [(h.text, h.source) for h in held] == [
            ("**Wick:** The candle has spoken: tea it is!", "discord-automod")
        ]
