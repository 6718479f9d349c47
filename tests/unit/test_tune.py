"""`tune`: the character trained on its own material (card, dialogue files, teachings) through the same gate as a
retrain. The CLI and the service (a fake worker stands in for the model), and the gate's three figures — held-out
loss, general chat loss, persona score — with what the run learnt from, wherever a run is reported: its result,
`model status` and the dashboard's models page (old metas without the figures still shown)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from bot.cli import main as cli_main
from bot.config import config_from_dict
from bot.dashboard import Pages, Sources
from bot.metrics import Metrics
from bot.runtime import load_persona
from bot.store import Store
from cogs.admin.service import ModelService
from cogs.common.actor import Actor
from cogs.privacy.service import PrivacyService
from models.training.gate import GateDecision, decide
from tests.dashboard_support import ADAPTER_VERSION, fill, write_registry
from tests.fakes import ScriptedBackend
from tests.retrain_support import FAKE_WORKER, GATE_FIGURES, SwapRecorder, fake_loader, retrain_config

ADMIN = Actor("discord", "1", "Admin", is_admin=True)
USER = Actor("discord", "2", "Someone", is_moderator=True)


@pytest.fixture
async def service(tmp_path):
    """The bundled character (with its dialogue files), no log: what a tune on a new install learns from."""
    config = retrain_config(tmp_path)
    async with await Store.open(config.database_path) as store:
        privacy = PrivacyService(store=store, config=config.privacy)
        yield ModelService(config=config, store=store, privacy=privacy, card=load_persona(config),
                           backend=SwapRecorder(), loader=fake_loader)  # fmt: skip


def test_cli_tune_promotes_and_reports_the_figures_and_what_it_learnt_from(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    config = tmp_path / "config.toml"
    launcher = f"{sys.executable} {FAKE_WORKER}"
    config.write_text(
        f"[bot]\ndata_dir = {json.dumps(str(tmp_path / 'data'))}\n[training]\nlauncher = {json.dumps(launcher)}\n",
        encoding="utf-8",
    )
    assert cli_main(["--config", str(config), "tune"]) == 0
    lines = capsys.readouterr().out.splitlines()
    learning = next(line for line in lines if line.startswith("learning from "))
    assert "dialogue-file lines" in learning and "from the card" in learning and "0 from the log" in learning
    assert any(line.startswith("step 3/3") for line in lines)
    final = lines[-1]
    assert final.startswith("v0001 is live — promoted: held-out loss 2.0000 -> 1.5000"), final
    assert all(figure in final for figure in GATE_FIGURES), final
    learnt = learning.removeprefix("learning from ").removesuffix("…")
    assert f"Learnt from {learnt}." in final

    assert cli_main(["--config", str(config), "model", "status"]) == 0
    status = capsys.readouterr().out
    assert "Registry points at: v0001" in status
    (line,) = [line for line in status.splitlines() if line.strip().startswith("v0001 (")]
    assert (
        "promoted" in line
        and all(figure in line for figure in GATE_FIGURES)
        and f"learnt from {learnt}" in line
    )


def test_cli_tune_help_explains_it(capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["tune", "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Train the character on its own material (its card, the dialogue files next to it" in out
    assert "--fresh" in out


async def test_tune_is_refused_to_a_non_admin(service):
    result = await service.tune(USER)
    assert result.status == "refused" and result.message == "Only an admin can tune the character."
    assert service.registry.versions() == [] and service.last_result is None


async def test_tune_promotes_and_keeps_the_figures_in_the_meta(service, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    lines = []
    result = await service.tune(ADMIN, on_progress=lines.append)
    assert result.status == "promoted", result.message
    assert service._backend.swapped == ["embedded+adapter:v0001"]
    assert all(figure in result.message for figure in GATE_FIGURES)
    assert result.decision is not None and result.decision.figures() in result.message
    meta = service.registry.get("v0001").meta
    assert meta["gate"]["held_out_loss"] == [2.0, 1.5]
    assert meta["gate"]["general_loss"] == [3.0, 3.05] and meta["gate"]["persona_score"] == [0.8, 0.9]
    assert f"Learnt from {meta['dataset']['summary']}." in result.message
    assert f"learning from {meta['dataset']['summary']}…" in lines


async def test_out_of_character_tune_is_rejected_naming_the_persona_score(service, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "out_of_character")
    result = await service.tune(ADMIN)
    assert result.status == "rejected", result.message
    assert result.message.startswith("v0001 trained but not promoted — kept the serving model: ")
    assert "the character is less itself: persona score 80% -> 40%" in result.message
    assert "held-out loss 2.0000 -> 1.5000" in result.message  # better where it trained, and still refused
    assert "Learnt from " in result.message
    assert service.registry.active_name() is None and service._backend.swapped == []
    meta = service.registry.get("v0001").meta
    assert meta["promoted"] is False and meta["gate"]["persona_score"] == [0.8, 0.4]
    (line,) = [line for line in service.status() if line.strip().startswith("v0001 (")]
    assert "not promoted" in line and "persona score 80% -> 40%" in line
    assert "Last retrain: v0001 trained but not promoted" in "\n".join(service.status())


def test_gate_figures_read_back_from_new_old_and_broken_metas():
    result = {"serving_loss": 2.0, "candidate_loss": 1.5, "general_serving": 3.0, "general_candidate": 3.05,
              "persona_serving": 0.8, "persona_candidate": 0.4}  # fmt: skip
    decision = decide(result, min_improvement=0.01)
    back = GateDecision.from_meta({"gate": decision.as_dict(), "metrics": result})
    assert back is not None and back.figures() == decision.figures() and back.reasons == decision.reasons
    assert back.promote is False

    old = GateDecision.from_meta({"metrics": {"serving_loss": 2.5, "candidate_loss": 2.1}, "promoted": True})
    assert old is not None and old.promote
    assert old.figures() == "held-out loss 2.5000 -> 2.1000 (+0.4000 better)"  # no general, no persona figure

    broken = {"gate": {"held_out_loss": "?", "general_loss": [None, None], "persona_score": [0.5]}}
    assert GateDecision.from_meta(broken) is None
    assert GateDecision.from_meta({}) is None and GateDecision.from_meta({"gate": [1, 2]}) is None


async def test_model_status_and_dashboard_show_the_gate_figures_old_metas_too(tmp_path):
    now = time.time()
    write_registry(tmp_path, now)  # v0001 promoted, v0002 rejected: metas from before the three figures
    meta_path = tmp_path / "adapters" / "v0002" / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["gate"].update(held_out_loss=[2.5, 2.3], general_loss=[3.0, 3.3], persona_score=[0.8, 0.4])
    meta["dataset"] = {"train_examples": 40, "summary": "40 dialogue-file lines, 3 from the card"}
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    v1 = tmp_path / "adapters" / "v0001" / "meta.json"
    meta = json.loads(v1.read_text(encoding="utf-8"))
    meta["gate"].update(held_out_loss=[2.5, 2.1], general_loss=[3.0, 3.03], persona_score=[0.7, 0.9])
    v1.write_text(json.dumps(meta), encoding="utf-8")
    config = config_from_dict({"bot": {"data_dir": str(tmp_path)}, "dashboard": {"enabled": True}})
    async with await Store.open(tmp_path / "familiar.db") as store:
        models = ModelService(config=config, store=store, privacy=PrivacyService(store=store, config=config.privacy),
                              card=load_persona(config))  # fmt: skip
        v2_line, v1_line = models.version_lines()
        assert v2_line.startswith("  v0002 (") and "not promoted" in v2_line
        assert (
            "held-out loss 2.5000 -> 2.3000 (+0.2000 better); general chat loss 3.0000 -> 3.3000 (+10.0%)"
            in v2_line
        )
        assert "persona score 80% -> 40%; learnt from 40 dialogue-file lines, 3 from the card" in v2_line
        assert "general chat loss 3.0000 -> 3.0300 (+1.0%); persona score 70% -> 90%" in v1_line

        # An old meta (no gate figures, no dataset) still shows what it has.
        meta = json.loads(v1.read_text(encoding="utf-8"))
        del meta["gate"]["general_loss"], meta["gate"]["persona_score"], meta["gate"]["held_out_loss"]
        v1.write_text(json.dumps(meta), encoding="utf-8")
        old_line = models.version_lines()[1]
        assert old_line.endswith(", promoted): held-out loss 2.5000 -> 2.1000 (+0.4000 better)"), old_line

        meta["gate"].update(general_loss=[3.0, 3.03], persona_score=[0.7, 0.9])
        v1.write_text(json.dumps(meta), encoding="utf-8")
        await fill(store, now)
        pages = Pages(Sources(config=config, store=store, character="Wick", metrics=Metrics(),
                              backend=ScriptedBackend(version=ADAPTER_VERSION)))  # fmt: skip
        view = await pages.data.models()
        adapter = next(m for m in view.models if m.registry_name == "v0001")
        assert (adapter.eval_loss, adapter.parent_loss) == (2.1, 2.5)  # from the old metrics
        assert (adapter.general_loss, adapter.parent_general_loss) == (3.03, 3.0)
        assert (adapter.persona_score, adapter.parent_persona_score) == (0.9, 0.7)
        base = next(m for m in view.models if m.registry_name is None)
        assert base.general_loss is None and base.persona_score is None
        trained = {e.version: e.detail for e in view.events if e.kind == "trained"}
        assert trained["v0002"].startswith(
            "held-out loss 2.5000 → 2.3000 (+0.2000 better); general chat loss"
        )
        assert "persona score 80% → 40%; learnt from 40 dialogue-file lines" in trained["v0002"]
        assert trained["v0001"] == (
            "held-out loss 2.5000 → 2.1000 (+0.4000 better); general chat loss 3.0000 → 3.0300 (+1.0%); "
            "persona score 70% → 90%; requested by owner"
        )
        html = await pages.models()
        assert "General chat loss" in html and "Persona score" in html
        assert '<td class="num persona-score">90%<br><span class="muted">was 70%</span></td>' in html
        assert '<td class="num general-loss">3.0300<br><span class="muted">was 3.0000</span></td>' in html
