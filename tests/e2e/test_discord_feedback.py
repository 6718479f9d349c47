"""Feedback on Discord replies: 👍/👎 (buttons and reactions) become log ratings, Regenerate redoes the latest
reply, and a message deleted on Discord disappears from the log."""

from __future__ import annotations

import asyncio

import pytest

from cogs.chat.discord_cog import BUTTON_DOWN, BUTTON_REGENERATE, BUTTON_UP
from tests.e2e.discord_harness import discord_runtime, running_bot
from tests.e2e.fake_discord import ADA, BOB, CAROL, EPHEMERAL, GENERAL_ID, custom_ids
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


LONG_ANSWER = " ".join(f"This is sentence number {i} of a very long answer indeed." for i in range(60))
NOT_A_MODERATOR = {**ADA, "id": "900000000000000377", "username": "Dan", "global_name": "Dan"}


async def _parts_rows(runtime) -> int:
    return int(await runtime.store.fetchval("SELECT count(*) FROM message_parts"))


async def test_split_reply_is_rated_and_deleted_through_any_part(fake_discord, tmp_path):
    backend = ScriptedBackend([LONG_ANSWER])
    async with discord_runtime(str(tmp_path / "data"), backend) as runtime:
        async with running_bot(runtime, fake_discord):
            await fake_discord.user_message("tell me everything", mention_bot=True)
            first, last = await fake_discord.wait_for_sent(count=2)
            assert custom_ids(last) and not custom_ids(first)  # the buttons sit on the last part
            await runtime.store.flush()
            (row,) = await assistant_rows(runtime)
            assert row.platform_message_id == last["id"] and row.content == LONG_ANSWER
            assert await runtime.log.message_parts("discord", first["id"]) == [first["id"], last["id"]]

            # A 👍 on the first part rates the reply (it was logged under the last part only).
            await fake_discord.add_reaction(first, "👍")
            await _wait_rating(runtime, 1)

            # Deleting the first part deletes the reply from the log, parts and all.
            await fake_discord.delete_message(first)

            async def reply_gone():
                return not await assistant_rows(runtime)

            await eventually(reply_gone)
            assert await runtime.log.count(CONVERSATION) == 1  # the question stays
            assert await _parts_rows(runtime) == 0
            assert await runtime.log.set_rating("discord", last["id"], 1) == 0


async def test_regenerate_works_after_a_restart(fake_discord, tmp_path):
    data = str(tmp_path / "data")
    async with discord_runtime(data, ScriptedBackend(["A short answer.", LONG_ANSWER])) as runtime:
        async with running_bot(runtime, fake_discord):
            await fake_discord.user_message("first question", mention_bot=True)
            (older,) = await fake_discord.wait_for_sent()
            await fake_discord.user_message("second question", mention_bot=True)
            _, first_part, last_part = await fake_discord.wait_for_sent(count=3)

    # A new process over the same database: nothing about the replies is left in memory.
    backend = ScriptedBackend(["A better answer."])
    async with discord_runtime(data, backend) as runtime:
        async with running_bot(runtime, fake_discord):
            inter = await fake_discord.click(older, BUTTON_REGENERATE)
            stale = await fake_discord.wait_for_callback(inter)
            assert "latest reply" in stale.json["data"]["content"]

            # The asker is known from the log: someone else (not a moderator) may not redo it.
            inter = await fake_discord.click(last_part, BUTTON_REGENERATE, user=NOT_A_MODERATOR)
            refused = await fake_discord.wait_for_callback(inter)
            assert "Only the person" in refused.json["data"]["content"]

            inter = await fake_discord.click(last_part, BUTTON_REGENERATE)
            callback = await fake_discord.wait_for_callback(inter)
            assert callback.json["type"] == 6
            await fake_discord.wait_for_request("PATCH", r"/webhooks/\d+/[^/]+/messages/@original")
            assert fake_discord.messages[last_part["id"]]["content"] == "A better answer."
            # The regenerated prompt was rebuilt from the log: it ends with the second question.
            prompt = backend.requests[-1].messages
            assert "second question" in prompt[-1]["content"]
            assert LONG_ANSWER not in " ".join(m["content"] for m in prompt)
            # The first part of the long answer is deleted; the log holds the new reply under the last part.
            await fake_discord.wait_for_request("DELETE", rf"/channels/\d+/messages/{first_part['id']}")

            async def replaced():
                rows = await assistant_rows(runtime)
                return [(r.content, r.platform_message_id) for r in rows] == [
                    ("A short answer.", older["id"]),
                    ("A better answer.", last_part["id"]),
                ]

            await eventually(replaced)
            assert await _parts_rows(runtime) == 0
