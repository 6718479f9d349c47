"""A running bot follows the model pointer when another process moves it (`familiar model rollback`, `familiar
retrain`): the runtime's scheduled check swaps to the version named, the next reply comes from it, and a corrupt
version is refused (once) with the serving model kept. A scripted engine and loader stand in for the model."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
from safetensors.torch import save_file

from bot.config import config_from_dict
from bot.runtime import POINTER_CHECK_JOB, open_runtime
from cogs.admin import serving as admin_service
from cogs.chat.service import ChatMessage
from models.loader import LoadedModel
from models.registry import ADAPTER_CONFIG, ADAPTER_WEIGHTS, POINTER, Registry
from tests.fakes import ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]


class SwappableBackend(ScriptedBackend):
    """A scripted engine that, like `Engine`, serves whatever model it was last swapped to."""

    def __init__(self, version: str) -> None:
        super().__init__(version=version)
        self.swaps: list[str] = []

    async def swap_model(self, loaded: LoadedModel) -> None:
        self.swaps.append(loaded.version)
        self.version = loaded.version


def fake_loader(spec):
    name = Path(spec.adapter).name if spec.adapter else "base"
    return LoadedModel(model=None, tokenizer=None, device=None, dtype=None, name="m", version=f"embedded+adapter:{name}",
                       eos_token_ids=(2,))  # fmt: skip


def add_version(registry: Registry) -> str:
    staging = registry.new_staging_dir()
    (staging / ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA", "target_modules": ["q_proj"]}))
    save_file({"lora_A.weight": torch.zeros(4, 8)}, staging / ADAPTER_WEIGHTS)
    return registry.commit(staging, {"promoted": True}).name


def familiar(config_file: Path, *args: str) -> str:
    """Run the `familiar` command line in its own process (as an owner would, next to the running bot)."""
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config_file), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def reply_version(runtime) -> str:
    message = ChatMessage(platform="console", conversation_id="console:local", channel_id="local",
                          author_id="local", author_name="you", content="who are you?")  # fmt: skip
    reply = await runtime.chat.respond(message, cooldown=False)
    assert reply.generation is not None, reply
    return reply.generation.model_version


async def test_a_pointer_moved_from_outside_is_followed_and_a_corrupt_one_refused(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(admin_service, "load_model", fake_loader)
    data = tmp_path / "data"
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[bot]\ndata_dir = "{data.as_posix()}"\n', encoding="utf-8")
    registry = Registry(data / "adapters")
    first, second = add_version(registry), add_version(registry)
    registry.activate(second, action="promote")

    backend = SwappableBackend(version=f"embedded+adapter:{second}")  # what a start over `second` serves
    config = config_from_dict({"bot": {"data_dir": str(data)}, "chat": {"cooldown_s": 0.0}})
    async with open_runtime(config, backend=backend) as runtime:
        job = runtime.scheduler.get_job(POINTER_CHECK_JOB)
        assert job is not None and job.trigger.interval == timedelta(seconds=30)  # the default
        check = job.func
        assert await check() is None and backend.swaps == []  # nothing moved

        out = familiar(config_file, "model", "rollback", first)  # another process moves the pointer
        assert "a running bot switches to it within 30 s" in out
        assert await reply_version(runtime) == f"embedded+adapter:{second}"  # not yet: no check has run
        assert await check() == f"Now serving embedded+adapter:{first}."
        assert await reply_version(runtime) == f"embedded+adapter:{first}"
        assert "serving: embedded+adapter:" + first in runtime.models.status()[0].lower()

        # A pointer naming a corrupt version (damaged on disk, edited by hand) is refused, once; nothing changes.
        (registry.get(second).path / ADAPTER_WEIGHTS).write_bytes(b"garbage")
        (registry.root / POINTER).write_text(second + "\n", encoding="utf-8")
        with caplog.at_level(logging.ERROR, logger="cogs.admin.serving"):
            assert await check() is None
            assert await check() is None
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1 and "corrupt" in refusals[0].getMessage()
        assert await reply_version(runtime) == f"embedded+adapter:{first}"
        assert backend.swaps == [f"embedded+adapter:{first}"]

        out = familiar(config_file, "model", "rollback", "base")  # then a sound change is followed again
        assert "Rolled back to the base model" in out
        assert await check() == "Now serving embedded+adapter:base."
        assert await reply_version(runtime) == "embedded+adapter:base"


async def test_no_pointer_check_when_off_or_when_the_adapter_is_pinned(tmp_path):
    backend = SwappableBackend(version="embedded:base")
    for training, model in (({"pointer_check_s": 0}, {}), ({}, {"adapter": str(tmp_path / "mine")})):
        config = config_from_dict(
            {"bot": {"data_dir": str(tmp_path / "data")}, "training": training, "model": model}
        )
        async with open_runtime(config, backend=backend) as runtime:
            assert runtime.scheduler.get_job(POINTER_CHECK_JOB) is None
