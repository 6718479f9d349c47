"""`!teach` on the fake Twitch: a moderator corrects the character's last reply in the channel; viewers are refused."""

from __future__ import annotations

from bot.runtime import open_runtime
from cogs.teach.service import load_teachings
from tests.e2e.test_admin_privacy_twitch import BROADCASTER, MOD, VIEWER, reply_to
from tests.e2e.twitch_harness import accelerated_clock, running_twitch, twitch_config
from tests.fakes import ScriptedBackend


async def test_moderators_teach_the_last_reply_and_viewers_are_refused(fake_twitch, tmp_path):
    config = twitch_config(str(tmp_path / "data"))
    backend = ScriptedBackend(["Pizza is a kind of soup.", "I like you all."])
    async with (
        open_runtime(config, backend=backend) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()),
    ):
        early = await fake_twitch.send_chat("!teach Hello!", **MOD)
        (said,) = await reply_to(fake_twitch, early)
        assert said.message == "Wick has not replied here yet."

        asked = await fake_twitch.send_chat("!ask what is pizza?", login="alice", user_id="502")
        await reply_to(fake_twitch, asked)
        await runtime.store.flush()

        refused = await fake_twitch.send_chat("!teach Pizza is bread with toppings.", **VIEWER)
        (said,) = await reply_to(fake_twitch, refused)
        assert said.message.endswith("Only moderators can teach Wick.")
        usage = await fake_twitch.send_chat("!teach", **MOD)
        (said,) = await reply_to(fake_twitch, usage)
        assert said.message.startswith("Usage: !teach <")

        taught = await fake_twitch.send_chat("!teach Pizza is bread with toppings, of course.", **MOD)
        (said,) = await reply_to(fake_twitch, taught)
        assert said.message == "Thanks — Wick will learn that reply at the next tune."
        (teaching,) = await load_teachings(runtime.store)
        assert (teaching.platform, teaching.conversation_id) == ("twitch", "twitch:streamer")
        assert (teaching.original, teaching.taught) == (
            "Pizza is a kind of soup.",
            "Pizza is bread with toppings, of course.",
        )
        assert (teaching.teacher_id, teaching.teacher_name) == (MOD["user_id"], MOD["login"])
        assert [(t.author_id, t.content) for t in teaching.context] == [("502", "what is pizza?")]

        # The broadcaster may teach too; a later reply is the one corrected.
        again = await fake_twitch.send_chat("@wickbot do you like us?", login="alice", user_id="502")
        await reply_to(fake_twitch, again)
        await runtime.store.flush()
        second = await fake_twitch.send_chat("!teach I adore every one of you.", **BROADCASTER)
        (said,) = await reply_to(fake_twitch, second)
        assert said.message.endswith("will learn that reply at the next tune.")
        assert [t.original for t in await load_teachings(runtime.store)] == [
            "Pizza is a kind of soup.",
            "I like you all.",
        ]
