"""The learning loop with the real embedded model on a small logged corpus (a few training steps, ≤128 tokens).

One retrain is killed mid-run (pointer and serving model untouched, and chat keeps answering meanwhile); the next
one trains, passes the gate, is promoted, and the bot's next reply comes from the new version.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from bot.config import config_from_dict
from bot.runtime import open_runtime
from cogs.chat.service import ChatMessage, Outcome
from cogs.common.actor import Actor
from models.engine import Engine

pytestmark = pytest.mark.slow

ADMIN = Actor(platform="console", user_id="local", name="owner", is_admin=True)
CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {"name": "Pip", "description": "Pip is a tiny cheerful robot.", "first_mes": "Beep! I'm Pip."},
}


LIKES = ("bolts", "stars", "tea", "gears", "rain", "songs", "maps", "kites")
# Words, not numbers: the data-quality step reads lines that differ only in digits as one copied message.
WHEN = ("today", "tonight", "tomorrow")


def config_for(tmp_path):
    card = tmp_path / "pip.json"
    card.write_text(json.dumps(CARD), encoding="utf-8")
    return config_from_dict(
        {
            "bot": {"data_dir": str(tmp_path / "data"), "persona": str(card)},
            "model": {"device": "cpu", "dtype": "float32"},
            "generation": {"temperature": 0.0, "max_new_tokens": 16},
            "chat": {"cooldown_s": 0.0},
            "privacy": {"discord_consent": "opt-in", "console_consent": "all"},
            "training": {
                "min_examples": 4,
                "max_seq_tokens": 128,
                "batch_size": 4,
                "grad_accum": 1,
                "max_steps": 6,
                "learning_rate": 1e-3,
                "eval_fraction": 0.2,
                "torch_threads": 1,
                "max_share_per_person": 1.0,  # the owner alone on the console: nobody's share is capped
                # The gate's references, kept small: this test is about the loop, not the figures.
                "general_examples": 48,
                "persona_samples": 1,
            },
        }
    )


async def log_corpus(runtime):
    from bot.store import MessageRecord

    t = time.time() - 10_000
    for c in range(8):
        for k in range(3):
            t += 1
            for role, author, name, text in (
                ("user", "local", "Ann", f"What do you like, Pip? Is it {LIKES[c]} {WHEN[k]}?"),
                (
                    "assistant",
                    "familiar",
                    "Pip",
                    f"I am Pip, a tiny robot! I like {LIKES[c]} {WHEN[k]}.",
                ),
            ):
                await runtime.log.log(
                    MessageRecord(platform="console", channel_id="local", conversation_id=f"console:{c}",
                                  author_id=author, author_name=name, role=role, content=text, created_at=t)
                )  # fmt: skip
    # Discord: bob never consented, ann consented and then asked to be forgotten.
    for author, secret in (("bob", "SECRET-BOB"), ("ann", "SECRET-ANN")):
        for k in range(3):
            t += 1
            await runtime.log.log(
                MessageRecord(platform="discord", channel_id="9", conversation_id="discord:9", author_id=author,
                              author_name=author.title(), role="user", content=f"{secret} {k}", created_at=t)
            )  # fmt: skip
            await runtime.log.log(
                MessageRecord(platform="discord", channel_id="9", conversation_id="discord:9", author_id="familiar",
                              author_name="Pip", role="assistant", content=f"Reply about {secret} {k}", created_at=t)
            )  # fmt: skip
    await runtime.privacy.set_consent("discord", "ann", True)
    await runtime.privacy.forget("discord", "ann")


def ask(runtime, text):
    return runtime.chat.respond(
        ChatMessage(platform="console", conversation_id="console:live", channel_id="local", author_id="local",
                    author_name="Ann", content=text),
        cooldown=False,
    )  # fmt: skip


async def test_retrain_killed_then_promoted_and_swapped_while_chat_answers(tmp_path, loaded_model):
    config = config_for(tmp_path)
    engine = Engine(
        loaded_model, max_batch=4, torch_threads=1
    )  # our own: the swap must not touch the shared one
    await engine.start()
    try:
        async with open_runtime(config, backend=engine) as runtime:
            await log_corpus(runtime)
            dataset = await runtime.models.build_dataset()
            text = json.dumps(dataset.train + dataset.eval)
            assert "SECRET-BOB" not in text and "SECRET-ANN" not in text
            assert len(dataset.train) >= 4 and dataset.eval
            base_version = engine.model_version

            # 1. A run killed mid-training: nothing changes, and chat answers while it trains.
            training = asyncio.Event()
            lines: list[str] = []

            def progress(line):
                lines.append(line)
                if line.startswith("step"):
                    training.set()

            run = asyncio.create_task(runtime.models.retrain(ADMIN, on_progress=progress))
            await asyncio.wait_for(training.wait(), 420)
            started = time.perf_counter()
            reply = await ask(runtime, "Hello Pip, are you there?")
            during_s = time.perf_counter() - started
            assert reply.outcome is Outcome.REPLIED and reply.text, reply
            assert reply.generation.model_version == base_version
            assert runtime.models.running
            os.kill(runtime.models._process.pid, signal.SIGKILL)
            killed = await asyncio.wait_for(run, 60)
            assert killed.status == "failed" and "killed" in killed.message, killed.message
            assert runtime.models.registry.active_name() is None
            assert engine.model_version == base_version
            assert runtime.models.registry.versions() == []
            print(f"chat reply during training took {during_s:.2f}s")

            # 2. The next run trains, passes the gate, is promoted and hot-swapped.
            lines.clear()
            result = await asyncio.wait_for(runtime.models.retrain(ADMIN, on_progress=lines.append), 400)
            assert result.status == "promoted", (result.message, lines)
            assert any("ETA" in line for line in lines)
            assert runtime.models.registry.active_name() == "v0001"
            version = runtime.models.registry.get("v0001")
            for name in ("adapter_config.json", "adapter_model.safetensors", "meta.json"):
                assert (version.path / name).is_file()
            meta = version.meta
            # What it learnt from: the card's own material and the consenting log, nothing else (no secrets).
            tuned = await runtime.models.build_tune_dataset(dataset)
            assert meta["dataset"]["sha256"] == tuned.as_dataset().sha256
            assert (
                tuned.sources["log"] == len(dataset.train) + len(dataset.eval) and tuned.sources["card"] > 0
            )
            assert meta["metrics"]["candidate_loss"] < meta["metrics"]["serving_loss"]
            gate = meta["gate"]
            assert gate["promote"]
            assert all(
                gate[figure][1] is not None for figure in ("held_out_loss", "general_loss", "persona_score")
            )
            assert engine.model_version.endswith("adapter:v0001")
            reply = await ask(runtime, "Who are you?")
            assert reply.outcome is Outcome.REPLIED
            assert reply.generation.model_version == engine.model_version != base_version
            print(result.message)
    finally:
        await engine.close()
