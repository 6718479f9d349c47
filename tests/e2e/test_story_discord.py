"""Story games on Discord end to end: the real discord.py client against the fake Discord, with a scripted
narrator, and one whole game (start, vote, next scene, undo, end) with the real embedded model (slow)."""

from __future__ import annotations

import sqlite3

import pytest

from tests.e2e.discord_harness import running_bot
from tests.e2e.fake_discord import ADA, BOB, EPHEMERAL, GENERAL_ID, custom_ids
from tests.e2e.story_support import Narrator, story_runtime


def sub(name: str, **values):
    kinds = {bool: 5, int: 4, str: 3}
    options = [{"name": k, "type": kinds[type(v)], "value": v} for k, v in values.items()]
    return [{"name": name, "type": 1, "options": options}]


def reply_of(fake, inter):
    """The last text the bot answered an interaction with (callback or follow-up) and whether it was ephemeral."""
    follow = fake.requests_to("POST", rf"/webhooks/\d+/{inter.token}")
    if follow:
        return follow[-1].json.get("content"), (follow[-1].json.get("flags") or 0) & EPHEMERAL
    req = fake.requests_to("POST", rf"/interactions/{inter.id}/[^/]+/callback")
    data = (req[0].json.get("data") or {}) if req else {}
    return data.get("content"), (data.get("flags") or 0) & EPHEMERAL


async def answered(fake, inter):
    await fake.wait_until(lambda: reply_of(fake, inter)[0])
    return reply_of(fake, inter)


def scenes(fake):
    return [m for m in fake.sent if m.get("embeds") and m["embeds"][0]["title"].startswith("📖 Scene")]


SCENE = "The lighthouse creaks in the storm, part {n}.\n1. Climb up\n2. Go down\n3. Wait"
DISCORD = {"discord": {"enabled": True, "guild_ids": [900000000000000100]}}


async def test_story_game_on_discord_buttons_live_counts_restart_undo_end(fake_discord, tmp_path):
    data = str(tmp_path / "data")
    backend = Narrator(SCENE)
    async with story_runtime(data, backend, DISCORD) as runtime, running_bot(runtime, fake_discord):
        synced = {c["name"]: c for cmds in fake_discord.commands.values() for c in cmds}
        assert {o["name"] for o in synced["story"]["options"]} >= {
            "start",
            "do",
            "undo",
            "retry",
            "status",
            "end",
        }

        start = await fake_discord.slash(
            "story", raw_options=sub("start", premise="a haunted lighthouse"), user=ADA
        )
        text, _ = await answered(fake_discord, start)
        assert "Ada started a story: a haunted lighthouse" in text
        await fake_discord.wait_until(lambda: scenes(fake_discord))
        first = scenes(fake_discord)[0]
        assert "part 1" in first["embeds"][0]["description"]
        ids = custom_ids(first)
        assert len(ids) == 3 and all(i.startswith("familiar:story:") for i in ids)

        again = await fake_discord.slash("story", raw_options=sub("start"), user=BOB)
        text, ephemeral = await answered(fake_discord, again)
        assert "already running" in text

        # Bob is new to the story: his vote counts but does not close it; the count reaches the message.
        click = await fake_discord.click(first, ids[1], user=BOB)
        text, ephemeral = await answered(fake_discord, click)
        assert text == "Your vote: 2. Go down" and ephemeral
        await fake_discord.wait_until(
            lambda: "2. Go down [1]" in fake_discord.messages[first["id"]]["embeds"][0]["description"],
            within=5,
        )
        # Ada started it, so she is the active audience: her vote is the majority and closes the scene.
        click = await fake_discord.click(first, ids[1], user=ADA)
        await answered(fake_discord, click)
        await fake_discord.wait_until(lambda: len(scenes(fake_discord)) == 2, within=5)
        second = scenes(fake_discord)[1]
        assert second["content"] == "**The audience chose 2: Go down (2 of 2 votes)**"
        await fake_discord.wait_until(lambda: not fake_discord.messages[first["id"]]["components"])

        # A copy of the closed scene still showing its buttons (say, an edit that failed): refused clearly.
        stale = {**first, "id": fake_discord.new_id()}
        late = await fake_discord.click(stale, ids[0], user=ADA)
        text, _ = await answered(fake_discord, late)
        assert "vote is over" in text

    # Restart: the scene-2 buttons (posted before) still vote after it.
    async with story_runtime(data, backend, DISCORD) as runtime, running_bot(runtime, fake_discord):
        ids2 = custom_ids(second)
        click = await fake_discord.click(second, ids2[2], user=BOB)
        text, _ = await answered(fake_discord, click)
        assert text == "Your vote: 3. Wait"
        assert runtime.story.current("discord", str(GENERAL_ID)).counts[3] == 1

        undo = await fake_discord.slash("story", raw_options=sub("undo"), user=ADA)
        text, ephemeral = await answered(fake_discord, undo)
        assert "Only moderators" in text and ephemeral
        undo = await fake_discord.slash("story", raw_options=sub("undo"), user=BOB)
        assert (await answered(fake_discord, undo))[0] == "Back one scene."
        await fake_discord.wait_until(lambda: len(scenes(fake_discord)) == 3, within=5)
        assert scenes(fake_discord)[2]["embeds"][0]["title"].startswith("📖 Scene 1")

        do = await fake_discord.slash("story", raw_options=sub("do", action="light the lamp"), user=ADA)
        text, _ = await answered(fake_discord, do)
        assert text == "Your write-in is on the ballot as choice 4."

        status = await fake_discord.slash("story", raw_options=sub("status"), user=ADA)
        text, _ = await answered(fake_discord, status)
        assert "4. do: light the lamp (Ada)" in text

        end = await fake_discord.slash("story", raw_options=sub("end"), user=BOB)
        assert (await answered(fake_discord, end))[0] == "The story is over."
        await fake_discord.wait_for_sent(lambda m: (m.get("content") or "").startswith("📕 The End"))

    con = sqlite3.connect(tmp_path / "data" / "familiar.db")
    assert con.execute("SELECT status FROM story_games").fetchall() == [("ended",)]
    assert con.execute("SELECT count(*) FROM messages WHERE role = 'narrator'").fetchone()[0] == 2


# ------------------------------------------------------------------------------------------- the real model
MODEL_WAIT_S = 300.0  # one scene with the real model on a shared 2-core machine (usually 15-40 s)


def buttons(message):
    """(custom id, label) of every button on a message."""
    return [
        (c["custom_id"], c.get("label") or "")
        for row in message.get("components") or []
        for c in row.get("components", [])
    ]


def assert_playable(scene):
    """A scene the audience can vote on: narration, and 2-4 numbered, non-empty choices as buttons."""
    embed = scene["embeds"][0]
    assert embed["description"].split("\n\n", 1)[0].strip(), embed
    choices = buttons(scene)
    assert 2 <= len(choices) <= 4, choices
    for n, (custom_id, label) in enumerate(choices, start=1):
        assert custom_id.startswith("familiar:story:") and custom_id.endswith(f":{n}")
        assert label.startswith(f"{n}. ") and label[len(f"{n}. ") :].strip(), label
    return choices


@pytest.mark.slow
async def test_a_whole_story_on_discord_with_the_real_model(engine, fake_discord, tmp_path):
    async with (
        # A shared 2-core machine can be very slow.
        story_runtime(str(tmp_path / "data"), engine, DISCORD, max_new_tokens=48, timeout_s=600.0) as runtime,
        running_bot(runtime, fake_discord),
    ):
        start = await fake_discord.slash("story", raw_options=sub("start", premise="a lost kite"), user=ADA)
        await fake_discord.wait_until(lambda: reply_of(fake_discord, start)[0], within=MODEL_WAIT_S)
        assert "Ada started a story: a lost kite" in reply_of(fake_discord, start)[0]
        (first,) = scenes(fake_discord)  # posted before the start was answered
        assert first["embeds"][0]["title"].startswith("📖 Scene 1")
        choices = assert_playable(first)

        # Ada started it, so she is the active audience: her vote is a majority and the next scene is written.
        vote = await fake_discord.click(first, choices[0][0], user=ADA)
        text, ephemeral = await answered(fake_discord, vote)
        assert text.startswith("Your vote: 1. ") and ephemeral
        await fake_discord.wait_until(lambda: len(scenes(fake_discord)) == 2, within=MODEL_WAIT_S)
        second = scenes(fake_discord)[1]
        assert second["embeds"][0]["title"].startswith("📖 Scene 2")
        assert second["content"].startswith("**The audience chose 1: ")
        assert_playable(second)
        await fake_discord.wait_until(lambda: not fake_discord.messages[first["id"]]["components"])

        undo = await fake_discord.slash("story", raw_options=sub("undo"), user=BOB)
        await fake_discord.wait_until(lambda: reply_of(fake_discord, undo)[0], within=MODEL_WAIT_S)
        assert reply_of(fake_discord, undo)[0] == "Back one scene."
        again = scenes(fake_discord)[2]
        assert again["embeds"][0]["title"].startswith("📖 Scene 1")
        assert (
            again["embeds"][0]["description"].split("\n\n", 1)[0]
            == (first["embeds"][0]["description"].split("\n\n", 1)[0])
        )  # the same opening, to vote on again
        assert_playable(again)

        end = await fake_discord.slash("story", raw_options=sub("end"), user=BOB)
        assert (await answered(fake_discord, end))[0] == "The story is over."
        await fake_discord.wait_for_sent(lambda m: (m.get("content") or "").startswith("📕 The End"))
        assert runtime.story.current("discord", str(GENERAL_ID)) is None

    con = sqlite3.connect(tmp_path / "data" / "familiar.db")
    assert con.execute("SELECT status FROM story_games").fetchall() == [("ended",)]
    assert con.execute("SELECT option FROM story_votes").fetchall() == [(1,)]
    assert con.execute("SELECT count(*) FROM messages WHERE role = 'narrator'").fetchone()[0] == 2
