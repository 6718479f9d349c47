"""Story games in Twitch chat end to end: the real twitchio client against the fake Twitch, through the pacer, with
a scripted narrator, and one whole game (start, vote, next scene, undo, end) with the real embedded model (slow)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from bot.platforms.twitch.pacing import DUPLICATE_MARK, TWITCH_MAX_CHARS
from cogs.story.render import scene_messages
from tests.e2e.story_support import Narrator, story_runtime
from tests.e2e.twitch_harness import accelerated_clock, running_twitch, wait_for_line

STREAMER = {"user_id": "600", "login": "streamer", "badges": ["broadcaster"]}
MOD = {"user_id": "601", "login": "moddy", "badges": ["moderator"]}


SCENE = "Fog rolls over the harbour, chapter {n}.\n1. Board the ship\n2. Ask the sailor\n3. Run"


def twitch_runtime(data_dir, backend, **story):
    return story_runtime(data_dir, backend, {"twitch": {"enabled": True, "channels": ["streamer"]}}, **story)


async def test_twitch_story_start_vote_next_scene_undo_end(fake_twitch, tmp_path):
    backend = Narrator(SCENE)
    async with (
        twitch_runtime(str(tmp_path / "data"), backend) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()) as bot,
    ):
        channel = next(iter(bot.channels))
        await fake_twitch.send_chat("!story start a foggy harbour", **STREAMER)
        scene = await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 1"))
        assert (
            "chapter 1" in scene.message and "1. Board the ship | 2. Ask the sailor | 3. Run" in scene.message
        )
        assert "!1 to !3" in scene.message and len(scene.message) <= 500

        again = await fake_twitch.send_chat("!story start", login="viewer", user_id="501")
        refusal = await wait_for_line(fake_twitch, lambda m: "already running" in m)
        assert refusal.reply_parent_message_id == again

        bad = await fake_twitch.send_chat("!7", login="viewer", user_id="501")
        seven = await wait_for_line(fake_twitch, lambda m: "no choice 7" in m)
        assert seven.reply_parent_message_id == bad

        # Viewers vote (one changes their mind); they are new, so the window stays open.
        await fake_twitch.send_chat("!1", login="ann", user_id="701")
        await fake_twitch.send_chat("!vote 2", login="ben", user_id="702")
        await fake_twitch.send_chat("!2", login="ann", user_id="701")
        ack = await wait_for_line(fake_twitch, lambda m: m.startswith("Votes:"))
        assert "@ann" in ack.message and "live:" in ack.message

        async with asyncio.timeout(5):
            while True:
                if runtime.story.current("twitch", channel).counts == {1: 0, 2: 2, 3: 0}:
                    break
                await asyncio.sleep(0.02)

        # A viewer cannot undo; the streamer's vote (the only active participant) closes the scene.
        await fake_twitch.send_chat("!story undo", login="ann", user_id="701")
        await wait_for_line(fake_twitch, lambda m: "Only moderators" in m)
        await fake_twitch.send_chat("!3", **STREAMER)
        result = await wait_for_line(fake_twitch, lambda m: m.startswith("📜"))
        assert "The audience chose 2: Ask the sailor (2 of 3 votes)" in result.message
        await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 2"))

        await fake_twitch.send_chat("!story do swim to the lighthouse", login="cat", user_id="703")
        await wait_for_line(fake_twitch, lambda m: "vote !4 for it" in m)

        await fake_twitch.send_chat("!story undo", **MOD)
        await wait_for_line(fake_twitch, lambda m: m.startswith("⏪"))
        back = await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 1") and "(again)" in m)
        assert "chapter 1" in back.message

        await fake_twitch.send_chat("!story status", login="viewer", user_id="501")
        await wait_for_line(fake_twitch, lambda m: "Story narrated by" in m)

        await fake_twitch.send_chat("!story end", **MOD)
        await wait_for_line(fake_twitch, lambda m: m.startswith("📕 The End"))
        assert runtime.story.current("twitch", channel) is None
        # `!vote 2` went to the story: the polls component stayed quiet with no poll running.
        assert not any("No poll" in s.message for s in fake_twitch.sent)


# A narration of about 1100 characters: every scene is told in three messages, then its choices in a fourth.
LONG_SCENE = (
    " ".join(
        f"Beat {i:02d} of chapter {{n}}: the fog thickens over the harbour walls while the lamps flicker."
        for i in range(1, 13)
    )
    + "\n1. Board the ship\n2. Ask the sailor\n3. Run"
)


def unmarked(text: str) -> str:
    """A sent line without the invisible marks the pacer adds to a line it said within the last 30 s."""
    return text.rstrip(DUPLICATE_MARK).rstrip()


async def test_a_scene_in_several_messages_arrives_in_order_in_a_busy_channel(fake_twitch, tmp_path):
    async with (
        twitch_runtime(str(tmp_path / "data"), Narrator(LONG_SCENE)) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()) as bot,
    ):
        channel = next(iter(bot.channels))
        hint = "vote with !1 to !3"

        await fake_twitch.send_chat("!story start a foggy harbour", **STREAMER)
        await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 1"))
        first = scene_messages(
            runtime.story.current("twitch", channel), limit=TWITCH_MAX_CHARS, vote_hint=hint
        )
        assert len(first) == 4 and first[0].startswith("📖 Scene 1")
        await wait_for_line(fake_twitch, lambda m: m == first[-1])
        assert [s.message for s in fake_twitch.sent] == first

        # A crowd gets a refusal each (replies fill the window), and a moderator decides the scene meanwhile.
        for n in range(25):
            await fake_twitch.send_chat("!7", login=f"crowd{n}", user_id=str(2000 + n))
        await fake_twitch.send_chat("!story pick 1", **MOD)
        decided = await wait_for_line(fake_twitch, lambda m: m.startswith("📜"))
        assert "moddy chose 1: Board the ship" in decided.message
        second_turn = runtime.story.current("twitch", channel)
        second = scene_messages(second_turn, limit=TWITCH_MAX_CHARS, vote_hint=hint)
        assert len(second) == 4 and second[0].startswith("📖 Scene 2")

        def told() -> list[str]:
            """Scene 2's parts sent after the decision, in the order they arrived (the choices line repeats
            scene 1's: sent within 30 s of it, it carries invisible marks instead of being dropped)."""
            after = fake_twitch.sent[fake_twitch.sent.index(decided) + 1 :]
            return [unmarked(s.message) for s in after if unmarked(s.message) in second]

        await fake_twitch.wait_until(lambda: len(told()) >= len(second))
        assert told() == second

        # Every part's `on_sent` ran: the story counts the scene as shown (it is not posted again at a restart).
        sql = "SELECT posted_at FROM story_turns WHERE id = ?"
        async with asyncio.timeout(5):
            while True:
                if await runtime.store.fetchval(sql, (second_turn.turn_id,)) is not None:
                    break
                await asyncio.sleep(0.02)
        assert bot.pacer.stats.dropped_announcements == 0


# ------------------------------------------------------------------------------------------- the real model
MODEL_WAIT_S = 300.0  # one scene with the real model on a shared 2-core machine (usually 15-40 s)


def assert_playable(turn):
    """A scene the audience can vote on: narration, and 2-4 numbered, non-empty choices."""
    assert turn.narration.strip()
    assert 2 <= len(turn.options) <= 4, turn.options
    assert [o.position for o in turn.options] == list(range(1, len(turn.options) + 1))
    assert all(o.label.strip() for o in turn.options), turn.options


@pytest.mark.slow
async def test_a_whole_story_in_twitch_chat_with_the_real_model(engine, fake_twitch, tmp_path):
    async with (
        twitch_runtime(str(tmp_path / "data"), engine, max_new_tokens=48, timeout_s=600.0) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()) as bot,
    ):
        channel = next(iter(bot.channels))
        await fake_twitch.send_chat("!story start a lost kite", **STREAMER)
        await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 1"), within=MODEL_WAIT_S)
        first = runtime.story.current("twitch", channel)
        assert_playable(first)
        await wait_for_line(fake_twitch, lambda m: f"!1 to !{len(first.options)}" in m)
        assert all(len(s.message) <= 500 for s in fake_twitch.sent)

        # The streamer started it, so they are the active audience: their vote is a majority.
        await fake_twitch.send_chat("!1", **STREAMER)
        result = await wait_for_line(fake_twitch, lambda m: m.startswith("📜"), within=MODEL_WAIT_S)
        assert f"The audience chose 1: {first.options[0].label}" in result.message
        await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 2"), within=MODEL_WAIT_S)
        second = runtime.story.current("twitch", channel)
        assert second.number == 2
        assert_playable(second)

        await fake_twitch.send_chat("!story undo", **MOD)
        await wait_for_line(fake_twitch, lambda m: m.startswith("⏪"), within=MODEL_WAIT_S)
        again = runtime.story.current("twitch", channel)
        assert again.number == 1 and again.narration == first.narration
        assert_playable(again)
        await wait_for_line(fake_twitch, lambda m: "(again)" in m)

        await fake_twitch.send_chat("!story end", **MOD)
        await wait_for_line(fake_twitch, lambda m: m.startswith("📕 The End"))
        assert runtime.story.current("twitch", channel) is None

    con = sqlite3.connect(tmp_path / "data" / "familiar.db")
    assert con.execute("SELECT status FROM story_games").fetchall() == [("ended",)]
    assert con.execute("SELECT option FROM story_votes").fetchall() == [(1,)]
    assert con.execute("SELECT count(*) FROM messages WHERE role = 'narrator'").fetchone()[0] == 2
