"""A retrain stopped with the bot, end to end: the real runtime and the console's `/retrain`, the fake worker.

The bot stops mid-training (the runtime closes while the console's background retrain runs): the job is recorded as
interrupted. The next start says so in the log and in `/retrain status`, and `/retrain` resumes it from the
checkpoint instead of starting over.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from bot.config import config_from_dict
from bot.runtime import open_runtime
from bot.store import MessageRecord
from cogs.admin.console import admin_commands
from tests.fakes import ScriptedBackend
from tests.retrain_support import chat_exchange

FAKE_WORKER = Path(__file__).resolve().parents[1] / "fake_training_worker.py"
WAIT_S = 30  # a guard against a hang, not a measurement


def config_for(tmp_path):
    return config_from_dict(
        {
            "bot": {"data_dir": str(tmp_path / "data")},
            "training": {
                "min_examples": 2,
                "eval_fraction": 0.2,
                "launcher": f"{sys.executable} {FAKE_WORKER}",
                "checkpoint_every_s": 0,
            },
        }
    )


class Lines(list[str]):
    """The console's `notify` callback: the lines it printed, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__()
        self._added = asyncio.Event()

    def append(self, line: str) -> None:
        super().append(line)
        self._added.set()

    async def wait_for(self, fragment: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not any(fragment in line for line in self):
                self._added.clear()
                await self._added.wait()


async def test_stop_mid_retrain_then_next_start_reports_and_resumes(tmp_path, monkeypatch, caplog):
    config = config_for(tmp_path)
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "hang")
    lines = Lines()
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        for c in range(6):
            question, answer = chat_exchange(c)  # varied, a person a conversation: the quality step keeps all
            for role, author, text in (("user", f"local{c}", question), ("assistant", "familiar", answer)):
                await runtime.log.log(MessageRecord(platform="console", channel_id="local", conversation_id=f"c{c}",
                                                    author_id=author, author_name=author, role=role, content=text))  # fmt: skip
        (retrain,) = [c for c in admin_commands(runtime.models, notify=lines.append) if c.name == "retrain"]
        assert "background" in await retrain.handler("")
        await lines.wait_for("step 1/3")
    # The runtime is closed: the bot has stopped while the worker trained.
    await lines.wait_for("Retrain interrupted by the stop at step 1/3")

    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    lines.clear()
    with caplog.at_level(logging.WARNING, logger="bot.runtime"):
        async with open_runtime(config, backend=ScriptedBackend()) as runtime:
            assert any("was interrupted at step 1/3" in r.getMessage() for r in caplog.records), caplog.text
            (retrain,) = [
                c for c in admin_commands(runtime.models, notify=lines.append) if c.name == "retrain"
            ]
            status = await retrain.handler("status")
            assert any("was interrupted at step 1/3" in line and "resume" in line for line in status), status
            await retrain.handler("")
            await lines.wait_for("(retrain) v0001 is live")
            assert "(retrain) resuming training after step 1/3 (its checkpoint)…" in lines
            assert not any(line.startswith("(retrain) step 1/3") for line in lines)
            assert runtime.models.registry.get("v0001").meta["resumed"]["from_step"] == 1
            status = await retrain.handler("status")
            assert not any("interrupted" in line for line in status)
