"""A retrain stopped by the bot's stop (or a crash) is recorded as interrupted, reported at the next start and
resumed from its last checkpoint on the same dataset snapshot. The fake worker (tests/fake_training_worker.py)
stands in for the model: three steps, a checkpoint after each."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from bot.config import Config
from bot.dashboard.status import RetrainStatus, retrain_status
from bot.store import ConversationLog, MessageRecord, Store
from cogs.admin.jobs import CRASHED, Job
from cogs.admin.resume import STOPPED
from cogs.admin.service import ModelService
from cogs.common.actor import Actor
from cogs.privacy.service import PrivacyService
from models.persona import Card
from tests.retrain_support import SwapRecorder, chat_exchange, fake_loader, retrain_config

ADMIN = Actor("console", "local", "Admin", is_admin=True)
WAIT_S = 30  # a guard against a hang, not a measurement


async def log_turns(store: Store, conversations: range) -> None:
    log = ConversationLog(store)
    for c in conversations:
        question, answer = chat_exchange(c)  # one person a conversation: no one's share is capped
        for role, author, text in (("user", f"me{c}", question), ("assistant", "familiar", answer)):
            await log.log(MessageRecord(platform="console", channel_id="l", conversation_id=f"c{c}", author_id=author,
                                        author_name=author.title(), role=role, content=text))  # fmt: skip
    await store.flush()


@pytest.fixture
async def setup(tmp_path) -> AsyncIterator[tuple[Config, Store]]:
    config = retrain_config(tmp_path, checkpoint_every_s=0)
    async with await Store.open(config.database_path) as store:
        await log_turns(store, range(6))
        yield config, store


def start(config: Config, store: Store) -> tuple[ModelService, PrivacyService]:
    """One process's services; calling it again is what the next start of the bot builds."""
    privacy = PrivacyService(store=store, config=config.privacy)
    models = ModelService(config=config, store=store, privacy=privacy, card=Card(name="Wick"), backend=SwapRecorder(),
                          loader=fake_loader)  # fmt: skip
    return models, privacy


def only_job(config: Config) -> Job:
    (path,) = (config.data_dir / "training").iterdir()
    return Job(path)


async def training(models: ModelService, lines: list[str] | None = None) -> asyncio.Task:
    """Start a retrain (the hang scenario) and return once step 1 (and its checkpoint) is reported."""
    stepped = asyncio.Event()

    def progress(line: str) -> None:
        if lines is not None:
            lines.append(line)
        if line.startswith("step 1/3"):
            stepped.set()

    task = asyncio.create_task(models.retrain(ADMIN, on_progress=progress))
    await asyncio.wait_for(stepped.wait(), WAIT_S)
    return task


async def stopped_during_training(config: Config, store: Store, monkeypatch) -> Job:
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "hang")
    models, _ = start(config, store)
    task = await training(models)
    await asyncio.wait_for(models.close(), WAIT_S)  # the runtime's stop: it does not wait for training
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.status == "interrupted" and "step 1/3" in result.message, result.message
    return only_job(config)


async def test_stop_during_training_records_the_job_as_interrupted(setup, monkeypatch):
    config, store = setup
    job = await stopped_during_training(config, store, monkeypatch)
    record = job.read()
    assert record is not None and record.state == "interrupted" and record.reason == STOPPED
    assert (record.step, record.total_steps, record.checkpoint_step) == (1, 3, 1)
    assert record.started_by == "Admin" and record.dataset["train_examples"] >= 2
    assert job.has_snapshot() and job.latest_checkpoint()[1] == 1  # kept for the resume
    models, _ = start(config, store)
    assert models.registry.active_name() is None and models.registry.versions() == []


async def test_a_cancelled_retrain_task_is_a_stop_too(setup, monkeypatch):
    """Discord and Twitch cancel their retrain task when they stop (before the runtime closes the service)."""
    config, store = setup
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "hang")
    models, _ = start(config, store)
    task = await training(models)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    await models.close()
    record = only_job(config).read()
    assert record is not None and record.state == "interrupted" and record.checkpoint_step == 1


async def test_next_start_reports_the_interrupted_job(setup, monkeypatch):
    config, store = setup
    await stopped_during_training(config, store, monkeypatch)
    models, _ = start(config, store)  # the next start
    notice = models.interrupted_notice()
    assert notice is not None
    assert "by Admin was interrupted at step 1/3, its checkpoint holds step 1" in notice
    assert STOPPED in notice and "Retrain again to resume" in notice and "retrain fresh" in notice
    assert notice in models.status()  # the admin's status command shows it
    assert retrain_status(models) == RetrainStatus(running=False, line=notice)  # and the dashboard


async def test_retrain_resumes_from_the_checkpoint_on_the_same_snapshot(setup, monkeypatch):
    config, store = setup
    job = await stopped_during_training(config, store, monkeypatch)
    snapshot = job.read()
    assert snapshot is not None
    await log_turns(store, range(6, 12))  # logged after the stop: not part of the interrupted job's data

    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    models, _ = start(config, store)
    lines: list[str] = []
    result = await asyncio.wait_for(models.retrain(ADMIN, on_progress=lines.append), WAIT_S)
    assert result.status == "promoted", (result.message, lines)
    assert any(line.startswith("resuming the retrain interrupted at step 1/3") for line in lines), lines
    assert "resuming training after step 1/3 (its checkpoint)…" in lines
    steps = [line.split(" · ")[0] for line in lines if line.startswith("step ")]
    assert steps == ["step 2/3", "step 3/3"]  # step 1 is not done again
    assert not any("building the dataset" in line for line in lines)
    meta = models.registry.get("v0001").meta
    assert meta["dataset"] == snapshot.dataset  # the same snapshot, not today's larger log
    assert result.metrics["train_examples"] == snapshot.dataset["train_examples"]
    assert meta["resumed"] == {"started_by": "Admin", "started_at": snapshot.started_at, "from_step": 1}
    record = job.read()
    assert record is not None and record.state == "finished" and record.resumes == 1
    assert not job.has_snapshot() and job.latest_checkpoint() == (None, 0)  # personal data gone after the run
    assert models.interrupted_notice() is None


async def test_a_job_left_running_by_a_crash_is_found_interrupted_and_resumable(setup, monkeypatch):
    config, store = setup
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "hang")
    models, _ = start(config, store)
    task = await training(models)
    other, _ = start(config, store)  # e.g. `familiar model status` while the bot trains: not a crash
    assert other.interrupted_notice() is None
    job = only_job(config)
    running = job.read()
    assert running is not None and running.state == "running"
    await models.close()
    await asyncio.wait_for(task, WAIT_S)
    job.update(state="running", reason="")  # what a process killed mid-run leaves: nobody holds the lock now

    restarted, _ = start(config, store)
    notice = restarted.interrupted_notice()
    assert notice is not None and CRASHED in notice and "step 1/3" in notice
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    result = await asyncio.wait_for(restarted.retrain(ADMIN), WAIT_S)
    assert result.status == "promoted" and restarted.registry.get("v0001").meta["resumed"]["from_step"] == 1


@pytest.mark.parametrize("how", ["fresh", "consent withdrawn", "consent given again", "forgotten"])
async def test_snapshot_not_reused_when_asked_or_when_someone_withdrew(setup, monkeypatch, how):
    config, store = setup
    job = await stopped_during_training(config, store, monkeypatch)
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    models, privacy = start(config, store)
    if how == "consent withdrawn":
        await privacy.set_consent("console", "someone-else", False)
    elif how == "consent given again":  # only later messages count now: the snapshot may hold earlier ones
        await privacy.set_consent("console", "someone-else", False)
        await privacy.set_consent("console", "someone-else", True)
    elif how == "forgotten":
        await privacy.forget("console", "someone-else")
        record = job.read()  # deleted at once, not at the next retrain
        assert record is not None and record.state == "discarded" and not job.has_snapshot()
        assert models.interrupted_notice() is None
    lines: list[str] = []
    result = await asyncio.wait_for(models.retrain(ADMIN, lines.append, fresh=how == "fresh"), WAIT_S)
    assert result.status == "promoted", result.message
    assert "resumed" not in models.registry.get("v0001").meta
    assert any("building the dataset" in line for line in lines)
    if how != "forgotten":
        expected = {
            "fresh": "a fresh start was asked for",
            "consent withdrawn": "withdrew consent",
            "consent given again": "consent changed",
        }[how]
        assert any(
            line.startswith("not resuming the interrupted retrain") and expected in line for line in lines
        )
    record = job.read()
    assert record is not None and record.state == "discarded" and not job.has_snapshot()


async def test_an_admin_cancel_is_not_resumable(setup, monkeypatch):
    config, store = setup
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "hang")
    models, _ = start(config, store)
    task = await training(models)
    assert "cancelled" in await models.cancel(ADMIN)
    assert (await asyncio.wait_for(task, WAIT_S)).status == "cancelled"
    job = only_job(config)
    record = job.read()
    assert record is not None and record.state == "cancelled" and not job.has_snapshot()
    with contextlib.suppress(FileNotFoundError):
        assert not list(job.checkpoint_dir.iterdir())
    assert models.interrupted_notice() is None
    assert json.loads((job.path / "job.json").read_text())["state"] == "cancelled"
