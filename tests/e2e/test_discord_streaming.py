"""Streamed replies on Discord (`[discord] stream_replies`): posted early, edited at most once a second, finished
with the cleaned text. The real discord.py client against the fake Discord; the backend streams a script."""

from __future__ import annotations

import itertools

from bot.platforms.discord import streaming
from tests.e2e.discord_harness import discord_runtime, running_bot
from tests.e2e.fake_discord import GENERAL_ID
from tests.fakes import ScriptedBackend

# The model's raw words: the invented "User:" turn at the end must never reach the final message.
RAW = "Hello, traveller. The candle burns low tonight, and the owls are restless. Sit, and tell me your tale.\nUser: hi"
CLEAN = (
    "Hello, traveller. The candle burns low tonight, and the owls are restless. Sit, and tell me your tale."
)
PIECE_DELAY_S = 0.12  # 21 pieces: about 2.5 s of writing, so several edit windows pass


async def test_streamed_reply_is_edited_at_most_once_a_second(fake_discord, tmp_path):
    backend = ScriptedBackend(default=RAW, piece_delay_s=PIECE_DELAY_S)
    async with (
        discord_runtime(str(tmp_path / "data"), backend, stream_replies=True) as runtime,
        running_bot(runtime, fake_discord),
    ):
        await fake_discord.user_message("tell me a story", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
        await fake_discord.wait_until(
            lambda: fake_discord.messages[reply["id"]]["content"] == CLEAN, within=15
        )
        await runtime.store.flush()
        rows = await runtime.log.recent(f"discord:{GENERAL_ID}", 10)
    assert backend.streamed == 1
    assert reply["content"].endswith(streaming.PREVIEW_SUFFIX)  # the first post was a preview
    assert CLEAN.startswith(reply["content"].removesuffix(streaming.PREVIEW_SUFFIX))
    edits = fake_discord.requests_to("PATCH", rf"/channels/{GENERAL_ID}/messages/{reply['id']}")
    assert len(edits) >= 2  # at least one preview edit, then the final one
    posted = fake_discord.requests_to("POST", rf"/channels/{GENERAL_ID}/messages")[0]
    times = [posted.at, *(e.at for e in edits)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= streaming.EDIT_INTERVAL_S * 0.95, gaps
    assert edits[-1].json["content"] == CLEAN
    assert "familiar:chat:regenerate" in str(
        edits[-1].json.get("components")
    )  # buttons come with the final text
    assert [(r.role, r.content) for r in rows][-1] == ("assistant", CLEAN)
    assert rows[-1].platform_message_id == reply["id"]


async def test_replies_are_not_streamed_unless_configured(fake_discord, tmp_path):
    backend = ScriptedBackend(default=CLEAN)
    async with (
        discord_runtime(str(tmp_path / "data"), backend) as runtime,
        running_bot(runtime, fake_discord),
    ):
        await fake_discord.user_message("hello", mention_bot=True)
        (reply,) = await fake_discord.wait_for_sent()
    assert reply["content"] == CLEAN
    assert backend.streamed == 0
    assert not fake_discord.requests_to("PATCH", rf"/channels/{GENERAL_ID}/messages/\d+")
