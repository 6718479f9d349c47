"""Teach on the fake Discord: the "Teach Wick" message menu on a reply opens a form; its submission stores a teaching.
Only moderators get the form, and only on the character's own logged replies."""

from __future__ import annotations

import pytest

from cogs.teach.service import load_teachings
from tests.e2e.discord_harness import discord_runtime, running_bot
from tests.e2e.fake_discord import ADA, BOB, EPHEMERAL, GUILD_ID
from tests.fakes import ScriptedBackend

MENU = "Teach Wick"
THANKS = "Thanks — Wick will learn that reply at the next tune."


@pytest.fixture
async def runtime(tmp_path):
    async with discord_runtime(str(tmp_path / "data"), ScriptedBackend(["I am a teapot."])) as rt:
        yield rt


def ephemeral_text(callback) -> str:
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL, callback.json
    return callback.json["data"]["content"]


async def test_a_moderator_teaches_a_reply_through_the_form(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        synced = fake_discord.commands[str(GUILD_ID)]
        assert {"name": MENU, "type": 3} in [{"name": c["name"], "type": c["type"]} for c in synced]
        await fake_discord.user_message("who are you?", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        await runtime.store.flush()

        opened = await fake_discord.message_menu(MENU, reply, user=BOB)
        form = (await fake_discord.wait_for_callback(opened)).json
        assert form["type"] == 9 and form["data"]["title"] == MENU
        (row,) = form["data"]["components"]
        field = row.get("component") or row["components"][0]
        # A paragraph, as long as a teaching may be, prefilled with the logged reply.
        assert (field["style"], field["max_length"]) == (2, 1000)
        assert field["value"] == "I am a teapot."

        submitted = await fake_discord.submit_modal(opened, ["I am Wick, a candle's\x00 flame."], user=BOB)
        assert ephemeral_text(await fake_discord.wait_for_callback(submitted)) == THANKS

        (teaching,) = await load_teachings(runtime.store)
        assert (teaching.platform, teaching.conversation_id) == ("discord", f"discord:{reply['channel_id']}")
        assert (teaching.original, teaching.taught) == ("I am a teapot.", "I am Wick, a candle's flame.")
        assert (teaching.teacher_id, teaching.teacher_name) == (BOB["id"], "Bob")
        assert [(t.role, t.author_id, t.name, t.content) for t in teaching.context] == [
            ("user", ADA["id"], "Ada", "who are you?")
        ]


async def test_help_lists_the_menu_apart_from_slash_commands(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        inter = await fake_discord.slash("help")
        description = (await fake_discord.wait_for_callback(inter)).json["data"]["embeds"][0]["description"]
        assert f"**{MENU}**" in description and f"/{MENU}" not in description


async def test_others_are_refused_and_only_replies_can_be_taught(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        asked = await fake_discord.user_message("who are you?", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        await runtime.store.flush()

        refused = await fake_discord.message_menu(MENU, reply, user=ADA)  # not a moderator
        text = ephemeral_text(await fake_discord.wait_for_callback(refused))
        assert text == "Only moderators (Manage Messages) can teach Wick."

        not_ours = await fake_discord.message_menu(MENU, asked, user=BOB)  # Ada's message, not the bot's
        assert "not Wick's" in ephemeral_text(await fake_discord.wait_for_callback(not_ours))

        # One of the bot's messages that is not a logged chat reply (here: no longer in the log).
        await runtime.log.delete_platform_message("discord", reply["id"])
        gone = await fake_discord.message_menu(MENU, reply, user=BOB)
        assert "not one of Wick's chat replies" in ephemeral_text(await fake_discord.wait_for_callback(gone))
        assert await load_teachings(runtime.store) == []
