"""Polls in Twitch chat end to end: the real twitchio client against the fake Twitch, through the paced sender."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from bot.config import config_from_dict
from bot.runtime import open_runtime
from tests.e2e.twitch_harness import accelerated_clock, running_twitch, wait_for_line
from tests.fakes import ScriptedBackend

MOD = {"user_id": "601", "login": "moddy", "badges": ["moderator"]}


@asynccontextmanager
async def twitch_runtime(data_dir, backend, **polls):
    raw = {
        "bot": {"data_dir": data_dir},
        "twitch": {"enabled": True, "channels": ["streamer"]},
        "polls": {"twitch_ack_interval_s": 1.0, **polls},
    }
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime:
        yield runtime


async def tally_is(runtime, poll_id, *, counts=None, voters=None):
    results = await runtime.polls.results(poll_id)
    return (counts is None or results.counts == counts) and (voters is None or results.voters == voters)


async def until(check, within=5.0):
    """Wait until the async `check()` is true (votes reach the database a moment after the chat line)."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def test_twitch_poll_from_create_to_results(fake_twitch, tmp_path):
    backend = ScriptedBackend(default="Chess wins, and the candle approves!")
    async with (
        twitch_runtime(str(tmp_path / "data"), backend) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()),
    ):
        # A viewer may not start a poll.
        viewer_msg = await fake_twitch.send_chat(
            "!poll Best game? | chess | go | 2m", login="viewer", user_id="501"
        )
        refusal = await wait_for_line(fake_twitch, lambda m: "Only moderators" in m)
        assert refusal.reply_parent_message_id == viewer_msg

        await fake_twitch.send_chat("!poll Best game? | chess | go | 2m", **MOD)
        opened = await wait_for_line(fake_twitch, lambda m: m.startswith("📊 Poll #1"))
        assert "1) chess · 2) go" in opened.message and "!vote" in opened.message

        # Votes by number and by text; one viewer changes their vote.
        await fake_twitch.send_chat("!vote 1", login="ann", user_id="701")
        await fake_twitch.send_chat("!vote go", login="ben", user_id="702")
        await fake_twitch.send_chat("!vote chess", login="cat", user_id="703")
        await fake_twitch.send_chat("!vote 2", login="ann", user_id="701")
        bad = await fake_twitch.send_chat("!vote 7", login="dan", user_id="704")
        unknown = await wait_for_line(fake_twitch, lambda m: "There is no option 7" in m)
        assert unknown.reply_parent_message_id == bad

        await until(lambda: tally_is(runtime, 1, counts=(1, 2)))
        ack = await wait_for_line(fake_twitch, lambda m: m.startswith("Votes counted:"))
        assert "@" in ack.message
        sent_before = len(fake_twitch.sent)

        live = await fake_twitch.send_chat("!poll results", login="eve", user_id="705")
        shown = await wait_for_line(fake_twitch, lambda m: m.startswith("Live results"))
        assert shown.reply_parent_message_id == live and "go: 2 (67%)" in shown.message

        await fake_twitch.send_chat("!poll close", login="viewer", user_id="501")
        await wait_for_line(fake_twitch, lambda m: "Only " in m and "can close" in m)
        await fake_twitch.send_chat("!poll close", **MOD)
        final = await wait_for_line(fake_twitch, lambda m: "Final results" in m)
        assert final.message.startswith("Wick: Chess wins")
        assert "“go” wins with 2 votes (67%)" in final.message and len(final.message) <= 500

        late = await fake_twitch.send_chat("!vote 1", login="fay", user_id="706")
        closed = await wait_for_line(fake_twitch, lambda m: "has closed; votes are no longer counted" in m)
        assert closed.reply_parent_message_id == late
        assert len(fake_twitch.sent) - sent_before < 10  # a handful of lines, not one per vote


async def test_many_votes_make_few_chat_lines(fake_twitch, tmp_path):
    async with (
        twitch_runtime(str(tmp_path / "data"), ScriptedBackend()) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()),
    ):
        await fake_twitch.send_chat("!poll Q? | a | b | 5m", **MOD)
        await wait_for_line(fake_twitch, lambda m: m.startswith("📊 Poll #1"))
        before = len(fake_twitch.sent)
        await asyncio.gather(
            *(
                fake_twitch.send_chat(f"!vote {i % 2 + 1}", login=f"v{i}", user_id=str(1000 + i))
                for i in range(60)
            )
        )
        await until(lambda: tally_is(runtime, 1, voters=60), within=8)
        await asyncio.sleep(1.5)  # one more confirmation interval
        lines = fake_twitch.sent[before:]
        assert 1 <= len(lines) <= 4, [s.message for s in lines]
        assert all(len(s.message) <= 500 for s in lines)
        assert (await runtime.polls.results(1)).counts == (30, 30)


async def test_cross_platform_poll_is_announced_in_twitch(fake_twitch, tmp_path):
    links = ["console:local = twitch:streamer"]
    async with (
        twitch_runtime(str(tmp_path / "data"), ScriptedBackend(), links=links) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()),
    ):
        from cogs.common.actor import Actor

        me = Actor("console", "local", "you", is_admin=True)
        poll = await runtime.polls.create(me, "Linked?", ["yes", "no"], "5m", channel_id="local")
        await wait_for_line(fake_twitch, lambda m: m.startswith(f"📊 Poll #{poll.id}: Linked?"))
        await runtime.polls.vote(me, poll.id, "yes")
        await fake_twitch.send_chat("!vote no", login="ann", user_id="701")
        await fake_twitch.send_chat("!vote 2", login="local", user_id="local")  # same id, other platform
        await until(lambda: tally_is(runtime, poll.id, voters=3))
        results = await runtime.polls.results(poll.id)
        assert results.counts == (1, 2) and dict(results.by_platform) == {"console": 1, "twitch": 2}
