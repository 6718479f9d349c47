"""Feedback on Discord replies: 👍/👎 (buttons and reactions) become log ratings, Regenerate redoes the latest
reply, and a message deleted on Discord disappears from the log."""

from __future__ import annotations

import asyncio

import pytest

from cogs.chat.discord_cog import BUTTON_DOWN, BUTTON_REGENERATE, BUTTON_UP
from tests.e2e.discord_harness import discord_runtime, running_bot
from tests.e2e.fake_discord import BOB, CAROL, EPHEMERAL, GENERAL_ID
from tests.fakes import ScriptedBackend

CONVERSATION = f"discord:{GENERAL_ID}"


@pytest.fixture
async def runtime(tmp_path):
    backend = ScriptedBackend(["The first answer.", "A better answer.", "Third."])
    async with discord_runtime(str(tmp_path / "data"), backend) as rt:
        yield rt


async def assistant_rows(runtime):
    await runtime.store.flush()
    return [r for r in await runtime.log.recent(CONVERSATION, 50) if r.role == "assistant"]


async def test_reaction_and_buttons_rate_the_reply(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        await fake_discord.user_message("hello", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        await runtime.store.flush()

        await fake_discord.add_reaction(reply, "👍")
        await fake_discord.wait_until(lambda: None) if False else None
        rows = await _wait_rating(runtime, 1)
        assert rows[0].platform_message_id == reply["id"]

        inter = await fake_discord.click(reply, BUTTON_DOWN, user=BOB)
        callback = await fake_discord.wait_for_callback(inter)
        assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
        await _wait_rating(runtime, -1)

        inter = await fake_discord.click(reply, BUTTON_UP)
        await fake_discord.wait_for_callback(inter)
        await _wait_rating(runtime, 1)


async def _wait_rating(runtime, rating):
    async def rated():
        rows = await assistant_rows(runtime)
        return rows if rows and rows[-1].rating == rating else None

    return await eventually(rated)


async def eventually(check, *, within: float = 5.0, step: float = 0.02):
    """Poll an async check (the bot's handlers run on their own after the REST call the test saw)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{check.__name__} still false after {within}s")
        await asyncio.sleep(step)


async def test_regenerate_edits_the_reply_and_replaces_the_log_row(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        await fake_discord.user_message("tell me something", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        assert reply["content"] == "The first answer."

        # Someone else (not a moderator) may not redo Ada's answer.
        inter = await fake_discord.click(reply, BUTTON_REGENERATE, user={**BOB, "id": "900000000000000377"})
        refused = await fake_discord.wait_for_callback(inter)
        assert refused.json["type"] == 4 and "Only the person" in refused.json["data"]["content"]

        inter = await fake_discord.click(reply, BUTTON_REGENERATE)
        callback = await fake_discord.wait_for_callback(inter)
        assert callback.json["type"] == 6  # deferred update of the clicked message
        await fake_discord.wait_for_request("PATCH", r"/webhooks/\d+/[^/]+/messages/@original")
        edited = fake_discord.messages[reply["id"]]
        assert edited["content"] == "A better answer."
        assert edited["edits"][-1]["allowed_mentions"]["parse"] == []
        assert BUTTON_REGENERATE in [
            c["custom_id"] for row in edited["components"] for c in row["components"]
        ]

        expected = [("A better answer.", reply["id"])]

        async def replaced():
            return [(r.content, r.platform_message_id) for r in await assistant_rows(runtime)] == expected

        await eventually(replaced)
        # The regenerated reply replaced the first in memory: the next prompt holds only the new one.
        await fake_discord.user_message("and now?", mention_bot=True)
        await fake_discord.wait_for_sent(lambda m: m["kind"] == "channel", count=2)
        prompt = " ".join(m["content"] for m in runtime.backend.requests[-1].messages)
        assert "A better answer." in prompt and "The first answer." not in prompt

        # Only the latest reply can be redone; a moderator may try, and is told so.
        inter = await fake_discord.click(reply, BUTTON_REGENERATE, user=CAROL)
        stale = await fake_discord.wait_for_callback(inter)
        assert "latest reply" in stale.json["data"]["content"]


async def test_deleted_message_leaves_the_log(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        user_msg = await fake_discord.user_message("please forget this", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        await runtime.store.flush()
        assert await runtime.log.count(CONVERSATION) == 2

        await fake_discord.delete_message(user_msg)

        async def gone():
            return await runtime.log.count(CONVERSATION) == 1

        await eventually(gone)
        (row,) = await runtime.log.recent(CONVERSATION, 10)
        assert row.role == "assistant" and row.platform_message_id == reply["id"]
        # Memory was dropped too: the next prompt no longer holds the deleted words.
        await fake_discord.user_message("what did I say?", mention_bot=True)
        await fake_discord.wait_for_sent(count=2)
        prompt = " ".join(m["content"] for m in runtime.backend.requests[-1].messages)
        assert "please forget this" not in prompt
