"""The retrain flow around the training process (a fake worker stands in for the model): rights, one job at a time,
gate refusals, corrupt candidates, cancellation and kills leave the pointer and the serving model alone."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import config_from_dict
from bot.store import ConversationLog, MessageRecord, Store
from cogs.admin.service import ModelService
from cogs.common.actor import Actor
from cogs.privacy.service import PrivacyService
from models.persona import Card
from tests.retrain_support import SwapRecorder, chat_exchange, fake_loader, retrain_config

ADMIN = Actor("discord", "1", "Admin", is_admin=True)
USER = Actor("discord", "2", "Someone")


@pytest.fixture
async def service(tmp_path):
    config = retrain_config(tmp_path)
    async with await Store.open(config.database_path) as store:
        log = ConversationLog(store)
        for c in range(4):
            for k in range(2):
                question, answer = chat_exchange(2 * c + k)  # a person a conversation: no share capped
                await log.log(MessageRecord(platform="console", channel_id="l", conversation_id=f"c{c}",
                                            author_id=f"me{c}", author_name="Ann", role="user", content=question))  # fmt: skip
                await log.log(MessageRecord(platform="console", channel_id="l", conversation_id=f"c{c}",
                                            author_id="familiar", author_name="Wick", role="assistant",
                                            content=answer))  # fmt: skip
        backend = SwapRecorder()
        privacy = PrivacyService(store=store, config=config.privacy)
        yield ModelService(config=config, store=store, privacy=privacy, card=Card(name="Wick"), backend=backend,
                           loader=fake_loader)  # fmt: skip


async def test_non_admin_refused(service):
    result = await service.retrain(USER)
    assert result.status == "refused" and "admin" in result.message
    assert "admin" in await service.rollback(USER, "base")


async def test_promotes_and_swaps_with_progress(service, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    lines = []
    result = await service.retrain(ADMIN, on_progress=lines.append)
    assert result.status == "promoted", result.message
    assert result.message.startswith("v0001 is live — promoted: held-out loss 2.0000 -> 1.5000 (+0.5000 better); "
                                     "general chat loss 3.0000 -> 3.0500 (+1.7%); persona score 80% -> 90%. "
                                     "Learnt from "), result.message  # fmt: skip
    assert "from the log" in result.message and " 0 from the log" not in result.message
    assert service.registry.active_name() == "v0001"
    assert service._backend.swapped == ["embedded+adapter:v0001"]
    assert any("step 3/3" in line and "ETA" in line for line in lines)
    assert service.registry.get("v0001").meta["promoted"] is True
    assert not list(
        (service._config.data_dir / "training").glob("*/*.jsonl")
    )  # datasets deleted after the run
    assert any("v0001" in line for line in service.status())


async def test_gate_refuses_non_improving_run(service, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "same")
    result = await service.retrain(ADMIN)
    assert result.status == "rejected" and "held-out loss improved by 0.0000" in result.message
    assert service.registry.active_name() is None and service._backend.swapped == []
    assert service.registry.get("v0001").meta["promoted"] is False


async def test_corrupt_candidate_refused_serving_model_kept(service, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "corrupt")
    result = await service.retrain(ADMIN)
    assert result.status == "failed" and "corrupt" in result.message
    assert service.registry.active_name() is None and service._backend.swapped == []
    assert service.registry.versions() == []


async def test_crash_and_cancel_leave_pointer_then_next_run_succeeds(service, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "crash")
    result = await service.retrain(ADMIN)
    assert result.status == "failed" and "out of memory" in result.message

    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "hang")
    started = asyncio.Event()
    task = asyncio.create_task(
        service.retrain(ADMIN, on_progress=lambda line: started.set() if "step" in line else None)
    )
    await asyncio.wait_for(started.wait(), 30)
    busy = await service.retrain(ADMIN)
    assert busy.status == "busy"  # one job at a time
    assert "running" in await service.rollback(ADMIN, "base")
    assert "cancelled" in await service.cancel(ADMIN)
    result = await asyncio.wait_for(task, 30)
    assert result.status == "cancelled"
    assert service.registry.active_name() is None and service._backend.swapped == []

    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    assert (await service.retrain(ADMIN)).status == "promoted"
    assert not list(service.registry.root.glob(".staging-*"))


async def test_rollback_and_corrupt_version_refused(service, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    assert (await service.retrain(ADMIN)).status == "promoted"
    assert (await service.retrain(ADMIN)).status == "promoted"
    assert service.registry.active_name() == "v0002"
    message = await service.rollback(ADMIN)
    assert "v0001" in message and service.registry.active_name() == "v0001"
    assert service._backend.model_version == "embedded+adapter:v0001"
    (service.registry.get("v0002").path / "adapter_model.safetensors").write_bytes(b"garbage")
    message = await service.rollback(ADMIN, "v0002")
    assert message.startswith("Refused") and service.registry.active_name() == "v0001"
    assert service._backend.model_version == "embedded+adapter:v0001"
    assert "base model" in await service.rollback(ADMIN, "base")
    assert service.registry.active_name() is None


async def test_too_little_data_refused(service):
    service._config = config_from_dict({"bot": {"data_dir": str(service._config.data_dir)},
                                        "training": {"min_examples": 1000}})  # fmt: skip
    result = await service.retrain(ADMIN)
    assert result.status == "refused" and "Not enough" in result.message


async def test_progress_is_typed_while_running_and_history_names_who(service, monkeypatch):
    assert service.progress is None
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "hang")
    stepped = asyncio.Event()
    task = asyncio.create_task(
        service.retrain(ADMIN, on_progress=lambda line: stepped.set() if "step" in line else None)
    )
    await asyncio.wait_for(stepped.wait(), 30)
    progress = service.progress
    assert progress is not None and progress.phase == "training" and progress.started_by == "Admin"
    assert (progress.step, progress.total_steps, progress.eta_s) == (1, 3, 2.0)
    assert progress.fraction == pytest.approx(1 / 3) and progress.loss == 1.0 and "step 1/3" in progress.line
    assert "started by Admin" in service.busy_message() and "step 1/3" in service.busy_message()
    assert "step 1/3" in service.status()[2]
    await service.cancel(ADMIN)
    assert (await asyncio.wait_for(task, 30)).status == "cancelled"
    assert service.progress is None and service.registry.history() == []

    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    assert (await service.retrain(ADMIN)).status == "promoted"
    assert (await service.retrain(ADMIN)).status == "promoted"
    await service.rollback(Actor("discord", "3", "Bob", is_admin=True))
    history = service.registry.history()
    assert [(e.action, e.version, e.previous, e.by) for e in history] == [
        ("promote", "v0001", None, "Admin"),
        ("promote", "v0002", "v0001", "Admin"),
        ("rollback", "v0001", "v0002", "Bob"),
    ]
    assert "held-out loss 2.0000 -> 1.5000" in history[0].detail
