"""Polls on Discord end to end: the real discord.py client against the fake Discord, the poll service over SQLite."""

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager

import pytest

from bot.config import config_from_dict
from bot.runtime import open_runtime
from tests.e2e.discord_harness import running_bot
from tests.e2e.fake_discord import ADA, BOB, CAROL, EPHEMERAL, GENERAL_ID, OTHER_ID, custom_ids
from tests.fakes import ScriptedBackend


def sub(name: str, **values):
    """A `/poll <name>` invocation's raw options (a subcommand with its options)."""
    kinds = {bool: 5, int: 4, str: 3}
    options = [{"name": k, "type": kinds[type(v)], "value": v} for k, v in values.items()]
    return [{"name": name, "type": 1, "options": options}]


def content_of(fake, inter):
    """What the bot answered an interaction with (callback message, or its follow-up)."""
    req = fake.requests_to("POST", rf"/interactions/{inter.id}/[^/]+/callback")
    if req and (req[0].json.get("data") or {}).get("content"):
        return req[0].json["data"]["content"], (req[0].json["data"].get("flags") or 0) & EPHEMERAL
    follow = fake.requests_to("POST", rf"/webhooks/\d+/{inter.token}")
    return follow[-1].json.get("content"), (follow[-1].json.get("flags") or 0) & EPHEMERAL


async def answered(fake, inter):
    await fake.wait_until(lambda: content_of_or_none(fake, inter))
    return content_of(fake, inter)


def content_of_or_none(fake, inter):
    try:
        text, _ = content_of(fake, inter)
    except (IndexError, KeyError, AttributeError):
        return None
    return text


def field_values(message):
    return [f["value"] for f in message["embeds"][0]["fields"]]


@asynccontextmanager
async def discord_runtime(data_dir, backend, **polls):
    """A runtime with Discord on (the fake's guild) and the given [polls] settings."""
    raw = {
        "bot": {"data_dir": data_dir},
        "discord": {"enabled": True, "guild_ids": [900000000000000100]},
        "polls": polls,
    }
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime:
        yield runtime


@pytest.fixture
async def runtime(tmp_path):
    backend = ScriptedBackend(default="The candle has spoken: go it is!")
    async with discord_runtime(str(tmp_path / "data"), backend, discord_edit_interval_s=1.0) as rt:
        yield rt


async def test_poll_create_vote_live_tally_close_and_results(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        synced = {c["name"]: c for cmds in fake_discord.commands.values() for c in cmds}
        assert {o["name"] for o in synced["poll"]["options"]} == {"create", "close", "results"}

        inter = await fake_discord.slash(
            "poll",
            raw_options=sub("create", question="Game tonight?", options="chess | go; shogi", duration="2m"),
        )
        (poll_msg,) = await fake_discord.wait_for_sent(lambda m: m.get("embeds"))
        assert poll_msg["embeds"][0]["title"] == "📊 Poll #1 (open)"
        assert "Game tonight?" in poll_msg["embeds"][0]["description"]
        assert custom_ids(poll_msg) == ["familiar:poll:1:1", "familiar:poll:1:2", "familiar:poll:1:3"]
        assert inter.original_message_id == poll_msg["id"]

        # Votes from three people; Ada changes her mind.
        for user, option in ((ADA, 1), (BOB, 2), (CAROL, 2), (ADA, 3)):
            click = await fake_discord.click(poll_msg, f"familiar:poll:1:{option}", user=user)
            text, ephemeral = await answered(fake_discord, click)
            assert text.startswith("Vote counted:") and ephemeral
        results = await runtime.polls.results(1)
        assert results.counts == (0, 2, 1)

        # The live tally reaches the message, in few edits (coalesced).
        def edited():
            msg = fake_discord.messages[poll_msg["id"]]
            return "**2**" in field_values(msg)[1] and "**1**" in field_values(msg)[2]

        await fake_discord.wait_until(edited, within=5)
        edits = fake_discord.requests_to("PATCH", rf"/channels/{GENERAL_ID}/messages/{poll_msg['id']}")
        assert 1 <= len(edits) <= 3

        # A moderator (Bob: Manage Messages) closes it; the results are posted by the close listener.
        closing = await fake_discord.slash("poll", raw_options=sub("close"), user=BOB)
        text, ephemeral = await answered(fake_discord, closing)
        assert text == "Poll #1 is closed; the results are being posted." and ephemeral

        announced = await fake_discord.wait_for_sent(lambda m: m["kind"] == "channel" and m.get("embeds"))
        final = announced[-1]
        assert final["content"].startswith("**Wick:** The candle has spoken")
        assert "“go” wins with 2 votes (67%)" in final["embeds"][0]["description"]
        assert final["embeds"][0]["image"]["url"] == "attachment://poll-1.png"
        # The poll message lost its buttons and shows the final state.
        await fake_discord.wait_until(lambda: not fake_discord.messages[poll_msg["id"]]["components"])
        assert fake_discord.messages[poll_msg["id"]]["embeds"][0]["title"] == "📊 Poll #1 (closed)"

        # A copy of the poll still showing its buttons somewhere (say, an edit that failed): votes are refused.
        stale = {**poll_msg, "id": fake_discord.new_id()}
        late = await fake_discord.click(stale, "familiar:poll:1:1", user=ADA)
        text, _ = await answered(fake_discord, late)
        assert "has closed; votes are no longer counted" in text

        res = await fake_discord.slash("poll", raw_options=sub("results"))
        await fake_discord.wait_until(lambda: fake_discord.requests_to("POST", rf"/webhooks/\d+/{res.token}"))
        body = fake_discord.requests_to("POST", rf"/webhooks/\d+/{res.token}")[-1].json
        assert body["embeds"][0]["image"]["url"] == "attachment://poll-1.png"


async def test_bad_input_and_rights_are_answered_clearly(fake_discord, runtime):
    async with running_bot(runtime, fake_discord):
        cases = [
            (dict(question="Q?", options="only", duration="2m"), "at least 2 options"),
            (
                dict(question="Q?", options="|".join(str(i) for i in range(11)), duration="2m"),
                "at most 10 options",
            ),
            (dict(question="Q?", options="a|A", duration="2m"), "are the same"),
            (dict(question=" ", options="a|b", duration="2m"), "question is empty"),
            (dict(question="Q?", options="a|b", duration="0"), "must be positive"),
            (dict(question="Q?", options="a|b", duration="10 years"), "at most 7d"),
            (dict(question="Q?", options="a|b", duration="soon"), "Not a duration"),
        ]
        for values, message in cases:
            inter = await fake_discord.slash("poll", raw_options=sub("create", **values))
            text, ephemeral = await answered(fake_discord, inter)
            assert message in text and ephemeral
        inter = await fake_discord.slash(
            "poll",
            raw_options=sub("create", question="Mine?", options="a|b", duration="1m"),
            user=ADA,
            channel_id=OTHER_ID,
        )
        await fake_discord.wait_for_sent(lambda m: m.get("embeds"))
        dan = {**ADA, "id": "900000000000000398", "username": "Dan", "global_name": "Dan"}  # no rights
        denied = await fake_discord.slash("poll", raw_options=sub("close"), user=dan, channel_id=OTHER_ID)
        text, ephemeral = await answered(fake_discord, denied)
        assert "Only Ada" in text and ephemeral
        nothing = await fake_discord.slash("poll", raw_options=sub("close"), user=BOB)
        text, _ = await answered(fake_discord, nothing)
        assert text == "No poll is running here."


async def test_buttons_work_after_a_restart_and_deadline_closes(fake_discord, tmp_path):
    data = str(tmp_path / "data")
    backend = ScriptedBackend(default="Done!")
    async with discord_runtime(data, backend) as rt:
        rt.polls._min_duration_s = 0.5  # test-only: a poll of a few seconds
        async with running_bot(rt, fake_discord):
            await fake_discord.slash(
                "poll", raw_options=sub("create", question="Quick?", options="yes|no", duration="3"), user=BOB
            )
            (poll_msg,) = await fake_discord.wait_for_sent(lambda m: m.get("embeds"))
            click = await fake_discord.click(poll_msg, "familiar:poll:1:1", user=ADA)
            await answered(fake_discord, click)
    # A new process: the same database, a new client; the old message's buttons still count.
    async with discord_runtime(data, backend) as rt:
        async with running_bot(rt, fake_discord):
            click = await fake_discord.click(poll_msg, "familiar:poll:1:2", user=CAROL)
            text, _ = await answered(fake_discord, click)
            assert text.startswith("Vote counted: 2. no")
            announced = await fake_discord.wait_for_sent(
                lambda m: m["kind"] == "channel" and "Done!" in (m.get("content") or ""), within=8
            )
            assert "tie" in announced[0]["embeds"][0]["description"]
    db = sqlite3.connect(tmp_path / "data" / "familiar.db")
    assert db.execute("SELECT status FROM polls").fetchall() == [("closed",)]
    assert db.execute("SELECT COUNT(*) FROM poll_votes").fetchone() == (2,)
    db.close()
