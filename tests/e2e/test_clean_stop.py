"""A stop that arrives while a reply is being generated: the reply is still sent and logged before the store closes,
new events are refused meanwhile, and a handler that outlives the grace period is cancelled, not waited for. The
same holds for every feature's handlers: a story scene being written when the stop comes is finished and stored,
and one that could not be shown before the connection closed is posted, once, after the restart."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from bot.config import config_from_dict
from bot.platforms.discord import platform as discord_platform
from bot.platforms.discord.platform import run_discord
from bot.platforms.discord.tracking import STOPPING as FEATURE_STOPPING
from bot.platforms.twitch.platform import run_twitch
from bot.runtime import open_runtime
from cogs.chat.discord_cog import STOPPING
from models.engine import Generation, GenerationRequest
from tests.e2e.discord_harness import discord_config
from tests.e2e.fake_discord import ADA, BOB, GENERAL_ID
from tests.e2e.twitch_harness import running_twitch, twitch_config, wait_for_line
from tests.fakes import ScriptedBackend

GENERATION_S = 0.8  # the scripted engine's time per reply: long enough for a stop to land in the middle
SCENE = "The cellar door creaks open onto the dark.\n1. Go down the steps\n2. Call out\n3. Shut the door"
STORY = {"vote_seconds": 600, "summarize_with_model": False}


def _logged(data_dir: Path, conversation: str) -> list[tuple[str, str]]:
    """The conversation's rows, read from the file after the runtime closed (a fresh connection, no store)."""
    db = sqlite3.connect(data_dir / "familiar.db")
    try:
        rows = db.execute(
            "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id", (conversation,)
        ).fetchall()
    finally:
        db.close()
    return [(str(role), str(content)) for role, content in rows]


class SlowBackend(ScriptedBackend):
    """A scripted engine that says when a generation has begun."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.started = asyncio.Event()

    async def generate(self, request: GenerationRequest, *, timeout: float | None = None) -> Generation:
        self.started.set()
        return await super().generate(request, timeout=timeout)


async def test_discord_stop_mid_generation_sends_and_logs_the_reply(fake_discord, tmp_path, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", fake_discord.token)
    data = tmp_path / "data"
    backend = SlowBackend(["Answered before the lights went out."], delay_s=GENERATION_S)
    async with open_runtime(discord_config(str(data)), backend=backend) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_discord(runtime, stop, guild_ready_timeout=0.1))
        await fake_discord.wait_until(fake_discord.connected, within=10)
        await fake_discord.wait_until(lambda: fake_discord.commands)  # setup_hook ran: the chat cog is loaded
        await fake_discord.user_message("are you still there?", mention_bot=True)
        await asyncio.wait_for(backend.started.wait(), 5)

        stop.set()  # SIGTERM, in the middle of the generation
        await asyncio.sleep(0.05)
        await fake_discord.user_message("one more thing", mention_bot=True)  # arrives while stopping
        late = await fake_discord.slash("chat", {"message": "hello?"})
        refused = await fake_discord.wait_for_callback(late)
        assert refused.json["data"]["content"] == STOPPING
        await asyncio.wait_for(task, 10)
        assert task.exception() is None
        assert not fake_discord.connected()
    # The runtime is closed: the store committed what was queued and closed the file.
    assert [m["content"] for m in fake_discord.sent if m["kind"] == "channel"] == [
        "Answered before the lights went out."
    ]
    assert len(backend.requests) == 1  # the message that came during the stop was not taken up
    assert _logged(data, f"discord:{GENERAL_ID}") == [
        ("user", "are you still there?"),
        ("assistant", "Answered before the lights went out."),
    ]


async def test_discord_stop_cancels_a_handler_that_outlives_the_grace_period(
    fake_discord, tmp_path, monkeypatch
):
    monkeypatch.setenv("DISCORD_TOKEN", fake_discord.token)
    monkeypatch.setattr(discord_platform, "DRAIN_TIMEOUT_S", 0.3)
    backend = SlowBackend(delay_s=60.0)  # a generation that would never finish in time
    async with open_runtime(discord_config(str(tmp_path / "data")), backend=backend) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_discord(runtime, stop, guild_ready_timeout=0.1))
        await fake_discord.wait_until(fake_discord.connected, within=10)
        await fake_discord.wait_until(lambda: fake_discord.commands)
        await fake_discord.user_message("take your time", mention_bot=True)
        await asyncio.wait_for(backend.started.wait(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)  # bounded: the grace period, then the handler is cancelled
    assert not [m for m in fake_discord.sent if m["kind"] == "channel"]


async def test_twitch_stop_mid_generation_sends_and_logs_the_reply(fake_twitch, tmp_path):
    data = tmp_path / "data"
    backend = SlowBackend(["Still here, for one more line."], delay_s=GENERATION_S)
    async with open_runtime(twitch_config(str(data)), backend=backend) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_twitch(runtime, stop))
        await fake_twitch.wait_connected()
        asked = await fake_twitch.send_chat("@wickbot are you leaving?", login="alice", user_id="501")
        await asyncio.wait_for(backend.started.wait(), 5)

        stop.set()
        await asyncio.sleep(0.05)
        await fake_twitch.send_chat("@wickbot wait!", login="bob", user_id="502")  # arrives while stopping
        await asyncio.wait_for(task, 10)
        assert task.exception() is None
    (sent,) = fake_twitch.sent
    assert sent.message == "Still here, for one more line." and sent.reply_parent_message_id == asked
    assert len(backend.requests) == 1
    assert _logged(data, "twitch:streamer") == [
        ("user", "are you leaving?"),
        ("assistant", "Still here, for one more line."),
    ]


def _story_turns(data_dir: Path) -> list[tuple[str, str, int, str, str]]:
    """(platform, channel, scene number, status, narration) of every stored scene, read after the runtime closed."""
    db = sqlite3.connect(data_dir / "familiar.db")
    try:
        rows = db.execute(
            "SELECT g.platform, g.channel_id, t.number, t.status, t.narration "
            "FROM story_turns t JOIN story_games g ON g.id = t.game_id ORDER BY t.id"
        ).fetchall()
    finally:
        db.close()
    return [tuple(r) for r in rows]


def _story_start(name: str, premise: str) -> list[dict[str, object]]:
    return [{"name": name, "type": 1, "options": [{"name": "premise", "type": 3, "value": premise}]}]


async def test_discord_stop_while_a_story_scene_is_written_stores_and_shows_it(
    fake_discord, tmp_path, monkeypatch
):
    monkeypatch.setenv("DISCORD_TOKEN", fake_discord.token)
    data = tmp_path / "data"
    raw = {
        "bot": {"data_dir": str(data)},
        "discord": {"enabled": True, "guild_ids": [900000000000000100]},
        "story": STORY,
    }
    backend = SlowBackend([SCENE], delay_s=GENERATION_S)
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_discord(runtime, stop, guild_ready_timeout=0.1))
        await fake_discord.wait_until(fake_discord.connected, within=10)
        await fake_discord.wait_until(lambda: fake_discord.commands)
        await fake_discord.slash("story", raw_options=_story_start("start", "a cellar"), user=ADA)
        await asyncio.wait_for(backend.started.wait(), 5)

        stop.set()  # SIGTERM while the opening scene is being written
        await asyncio.sleep(0.05)
        late = await fake_discord.slash("story", raw_options=[{"name": "end", "type": 1}], user=BOB)
        refused = await fake_discord.wait_for_callback(late)
        assert refused.json["data"]["content"] == FEATURE_STOPPING  # not started: the story is not ended
        await asyncio.wait_for(task, 10)
        assert task.exception() is None
        assert not fake_discord.connected()
    # The scene was finished, stored, and shown before the connection and the store closed.
    assert _story_turns(data) == [
        ("discord", str(GENERAL_ID), 1, "open", "The cellar door creaks open onto the dark.")
    ]
    (scene,) = [m for m in fake_discord.sent if m.get("embeds")]
    assert scene["embeds"][0]["title"].startswith("📖 Scene 1")
    assert len(backend.requests) == 1


def _twitch_story_config(data_dir: Path) -> dict[str, Any]:
    """A bot on Twitch (the fake server's "streamer" channel) with the story feature."""
    return {
        "bot": {"data_dir": str(data_dir)},
        "twitch": {"enabled": True, "channels": ["streamer"]},
        "story": STORY,
    }


async def test_twitch_stop_while_a_story_scene_is_written_stores_it(fake_twitch, tmp_path):
    data = tmp_path / "data"
    raw = _twitch_story_config(data)
    backend = SlowBackend([SCENE], delay_s=GENERATION_S)
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_twitch(runtime, stop))
        await fake_twitch.wait_connected()
        await fake_twitch.send_chat(
            "!story start a cellar", login="streamer", user_id="600", badges=["broadcaster"]
        )
        await asyncio.wait_for(backend.started.wait(), 5)

        stop.set()
        await asyncio.sleep(0.05)
        await fake_twitch.send_chat(
            "!story end", login="moddy", user_id="601", badges=["moderator"]
        )  # refused
        await asyncio.wait_for(task, 10)
        assert task.exception() is None
    (turn,) = _story_turns(data)
    assert turn[2:] == (
        1,
        "open",
        "The cellar door creaks open onto the dark.",
    )  # finished and stored, not ended
    assert len(backend.requests) == 1

    # The pacer had stopped before the scene was done: it is posted at the next start, once.
    async with (
        open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime,
        running_twitch(runtime, fake_twitch),
    ):
        await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 1"))
    (scene,) = [m.message for m in fake_twitch.sent if "Scene" in m.message]
    assert scene.startswith("📖 Scene 1 — Wick: The cellar door creaks open onto the dark.")
    assert scene.endswith("1. Go down the steps | 2. Call out | 3. Shut the door — vote with !1 to !3")
    assert _posted(data) == [(1, True)]
    assert len(backend.requests) == 1  # posted as stored, not written again


class GatedBackend(ScriptedBackend):
    """A scripted engine whose second and later generations wait until `gate` opens (a slow next scene)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.held = asyncio.Event()

    async def generate(self, request: GenerationRequest, *, timeout: float | None = None) -> Generation:
        if self.requests:
            self.held.set()
            await self.gate.wait()
        return await super().generate(request, timeout=timeout)


def _posted(data_dir: Path) -> list[tuple[int, bool]]:
    """(scene number, shown on its platform) of the live scenes."""
    db = sqlite3.connect(data_dir / "familiar.db")
    try:
        rows = db.execute(
            "SELECT number, posted_at IS NOT NULL FROM story_turns WHERE status != 'undone' ORDER BY number"
        ).fetchall()
    finally:
        db.close()
    return [(int(n), bool(p)) for n, p in rows]


async def test_twitch_stop_while_the_next_scene_is_written_posts_it_after_the_restart(fake_twitch, tmp_path):
    data = tmp_path / "data"
    raw = _twitch_story_config(data)
    second = SCENE.replace("cellar door creaks open onto the dark", "steps end in a flooded vault")
    backend = GatedBackend([SCENE, second])
    mod = {"login": "moddy", "user_id": "601", "badges": ["moderator"]}
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_twitch(runtime, stop))
        await fake_twitch.wait_connected()
        await fake_twitch.send_chat(
            "!story start a cellar", login="streamer", user_id="600", badges=["broadcaster"]
        )
        await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 1"))
        await fake_twitch.send_chat("!3", login="viewer", user_id="501")
        await fake_twitch.send_chat(
            "!story pick 2", **mod
        )  # the vote is decided; the next scene is being written
        await asyncio.wait_for(backend.held.wait(), 5)

        stop.set()  # SIGTERM mid-scene: Twitch disconnects, then the story gets its grace to store the scene
        await asyncio.wait_for(task, 10)
        assert task.exception() is None
        asyncio.get_running_loop().call_later(0.2, backend.gate.set)
    assert [t[2:4] for t in _story_turns(data)] == [(1, "closed"), (2, "open")]  # stored during the stop
    assert _posted(data) == [(1, True), (2, False)]  # but Twitch was gone: not shown
    assert not [m for m in fake_twitch.sent if "Scene 2" in m.message or "chose" in m.message]

    async with (
        open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime,
        running_twitch(runtime, fake_twitch),
    ):
        await wait_for_line(fake_twitch, lambda m: m.startswith("📖 Scene 2"))
    decided = [m.message for m in fake_twitch.sent if m.message.startswith("📜")]
    assert decided == ["📜 moddy chose 2: Call out"]  # announced as it would have been, with who decided
    assert len([m for m in fake_twitch.sent if m.message.startswith("📖 Scene 2")]) == 1
    assert _posted(data) == [(1, True), (2, True)]
    assert len(backend.requests) == 2  # scene 2 was written once, during the stop
