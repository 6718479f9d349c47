"""`!tune`, `!retrain`, `!consent` and `!forget` in Twitch chat end to end: the real twitchio client against the
fake Twitch, the model and privacy services over SQLite, and the fake training worker instead of a real run."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from bot.config import config_from_dict
from bot.runtime import open_runtime
from bot.store import MessageRecord
from tests.e2e.twitch_harness import accelerated_clock, running_twitch
from tests.fakes import ScriptedBackend
from tests.retrain_support import GATE_FIGURES, chat_exchange

FAKE_WORKER = Path(__file__).resolve().parents[1] / "fake_training_worker.py"
BROADCASTER = {"user_id": "100", "login": "streamer", "badges": ["broadcaster"]}
MOD = {"user_id": "601", "login": "moddy", "badges": ["moderator"]}
VIEWER = {"user_id": "501", "login": "viewer"}


@asynccontextmanager
async def twitch_runtime(data_dir, *, consent="opt-in"):
    raw = {
        "bot": {"data_dir": data_dir},
        "chat": {"cooldown_s": 0.0},
        "twitch": {"enabled": True, "channels": ["streamer"]},
        "privacy": {"twitch_consent": consent},
        "training": {"min_examples": 2, "launcher": f"{sys.executable} {FAKE_WORKER}", "eval_fraction": 0.2},
    }
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=ScriptedBackend()) as runtime:
        yield runtime


async def log_chat(runtime, user_id, login, conversations=4):
    for c in range(conversations):
        base = {"platform": "twitch", "channel_id": "100", "conversation_id": f"twitch:streamer:{c}"}
        question, answer = chat_exchange(c)  # varied: the data-quality step keeps them all
        await runtime.log.log(MessageRecord(**base, author_id=user_id, author_name=login, role="user",
                                            content=f"{login} says {c}: {question}"))  # fmt: skip
        await runtime.log.log(MessageRecord(**base, author_id="900", author_name="Wick", role="assistant",
                                            content=f"Wick answers {login} {c}: {answer}"))  # fmt: skip
    await runtime.store.flush()


async def reply_to(fake, message_id, count=1, within=15.0):
    """The bot's chat lines answering `message_id`, once there are `count` of them."""
    async with asyncio.timeout(within):
        while True:
            found = [s for s in fake.sent if s.reply_parent_message_id == message_id]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)


def count(data_dir, sql, params=()):
    db = sqlite3.connect(Path(data_dir) / "familiar.db")
    try:
        return db.execute(sql, params).fetchone()[0]
    finally:
        db.close()


async def test_retrain_is_the_broadcasters_alone(fake_twitch, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    async with (
        twitch_runtime(str(tmp_path / "data"), consent="all") as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()),
    ):
        await log_chat(runtime, VIEWER["user_id"], VIEWER["login"])
        for who in (VIEWER, MOD):
            asked = await fake_twitch.send_chat("!retrain", **who)
            (refusal,) = await reply_to(fake_twitch, asked)
            # (a repeat of the same line within 30 s is varied with the viewer's @name: Twitch drops duplicates)
            assert refusal.message.endswith("Only the broadcaster can retrain me.")
        assert not runtime.models.running and runtime.models.last_result is None

        asked = await fake_twitch.send_chat("!retrain", **BROADCASTER)
        started, finished = await reply_to(fake_twitch, asked, count=2, within=30)
        assert started.message == "Retraining started; I'll say how it went."
        result = finished.message
        assert result.startswith("v0001 is live") and all(figure in result for figure in GATE_FIGURES), result
        assert "Learnt from " in result
        assert runtime.models.registry.active_name() == "v0001"
        assert [(e.action, e.by) for e in runtime.models.registry.history()] == [("promote", "streamer")]


async def test_tune_is_the_broadcasters_alone(fake_twitch, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    async with (
        twitch_runtime(str(tmp_path / "data")) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()),
    ):
        for who in (VIEWER, MOD):
            asked = await fake_twitch.send_chat("!tune", **who)
            (refusal,) = await reply_to(fake_twitch, asked)
            assert refusal.message.endswith("Only the broadcaster can tune me.")
        assert not runtime.models.running and runtime.models.last_result is None

        asked = await fake_twitch.send_chat("!tune", **BROADCASTER)  # nothing logged: its own material
        started, finished = await reply_to(fake_twitch, asked, count=2, within=30)
        assert started.message == "Tuning started; I'll say how it went."
        result = finished.message
        assert result.startswith("v0001 is live — promoted: "), result
        assert all(figure in result for figure in GATE_FIGURES), result
        assert "Learnt from " in result and "dialogue-file lines" in result and "0 from the log" in result
        assert [(e.action, e.by) for e in runtime.models.registry.history()] == [("promote", "streamer")]


async def test_consent_and_forget_in_chat(fake_twitch, tmp_path):
    data = str(tmp_path / "data")
    async with (
        twitch_runtime(data) as runtime,
        running_twitch(runtime, fake_twitch, **accelerated_clock()),
    ):
        await log_chat(runtime, VIEWER["user_id"], VIEWER["login"], conversations=3)
        await log_chat(runtime, "502", "other", conversations=1)

        async def learnt():
            dataset = await runtime.models.build_dataset()
            return json.dumps(dataset.train + dataset.eval)

        # On: from now on only; the viewer's earlier chat stays out, and the answer says how to include it.
        on = await fake_twitch.send_chat("!consent on", **VIEWER)
        (said,) = await reply_to(fake_twitch, on)
        assert said.message.startswith("Thank you! From now on your messages may be used to teach me.")
        assert "Your earlier messages stay out; use !consent history to include them." in said.message
        assert "`" not in said.message
        consent = await runtime.privacy.consent("twitch", VIEWER["user_id"])
        assert consent is not None and consent.training and not consent.include_history
        assert "viewer says" not in await learnt()
        history = await fake_twitch.send_chat("!consent history", **VIEWER)
        (said,) = await reply_to(fake_twitch, history)
        assert said.message.startswith(
            "Thank you! Your messages may be used to teach me, earlier ones included."
        )
        consent = await runtime.privacy.consent("twitch", VIEWER["user_id"])
        assert consent is not None and consent.training and consent.include_history
        assert "viewer says 0" in await learnt()
        off = await fake_twitch.send_chat("!consent OFF", **VIEWER)
        (said,) = await reply_to(fake_twitch, off)
        assert said.message.startswith(
            "Done: your messages will not be used to teach me any more, earlier ones"
        )
        assert await runtime.privacy.choice("twitch", VIEWER["user_id"]) is False
        assert "viewer says" not in await learnt()
        again = await fake_twitch.send_chat("!consent on all", **VIEWER)  # `on all`: the same as `history`
        (said,) = await reply_to(fake_twitch, again)
        # (a repeat of the same line within 30 s is varied with the viewer's @name: Twitch drops duplicates)
        assert "Thank you! Your messages may be used to teach me, earlier ones included." in said.message
        bad = await fake_twitch.send_chat("!consent maybe", **VIEWER)
        (said,) = await reply_to(fake_twitch, bad)
        assert said.message == (
            "Usage: !consent on|off|status (on: your messages from now on), or !consent history to include earlier ones"
        )

        forget = await fake_twitch.send_chat("!forget", **VIEWER)
        (said,) = await reply_to(fake_twitch, forget)
        assert said.message.startswith("Forgotten: deleted 3 logged message(s)")
        await runtime.store.flush()
        assert count(data, "SELECT count(*) FROM messages WHERE author_id = ?", (VIEWER["user_id"],)) == 0
        assert count(data, "SELECT count(*) FROM messages WHERE author_id = '502'") == 1
        assert await runtime.privacy.choice("twitch", VIEWER["user_id"]) is False
