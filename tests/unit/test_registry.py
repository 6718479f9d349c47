"""Adapter versions: atomic pointer, rollback, corrupt adapters refused; the gate's decisions."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from models.registry import POINTER, Registry, RegistryError, validate_adapter


def fake_adapter(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "lora_alpha": 8})
    )
    save_file(
        {"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(4, 8)},
        path / "adapter_model.safetensors",
    )
    return path


def add_version(registry, promoted=True):
    staging = fake_adapter(registry.new_staging_dir())
    version = registry.commit(staging, {"metrics": {}, "promoted": promoted})
    return version


def test_commit_numbers_versions_and_writes_meta(tmp_path):
    registry = Registry(tmp_path / "adapters")
    v1, v2 = add_version(registry), add_version(registry)
    assert [v.name for v in registry.versions()] == ["v0001", "v0002"]
    assert json.loads((v2.path / "meta.json").read_text())["version"] == "v0002"
    assert registry.active_name() is None  # committing never moves the pointer
    assert not list(registry.root.glob(".staging-*"))
    assert v1.path.joinpath("adapter_model.safetensors").is_file()


def test_pointer_is_replaced_atomically(tmp_path, monkeypatch):
    registry = Registry(tmp_path / "adapters")
    add_version(registry)
    add_version(registry)
    registry.activate("v0001")
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((str(a), str(b))), real_replace(a, b))[1])
    registry.activate("v0002")
    assert calls and calls[-1][1].endswith(POINTER) and calls[-1][0] != calls[-1][1]
    assert registry.active_name() == "v0002"
    assert not [p for p in registry.root.iterdir() if p.name.endswith(".tmp")]

    def crash(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        registry.activate("v0001")
    assert registry.active_name() == "v0002"  # a failed write leaves the old pointer whole


def test_rollback_targets(tmp_path):
    registry = Registry(tmp_path / "adapters")
    for _ in range(3):
        registry.activate(add_version(registry).name)
    assert registry.active_name() == "v0003"
    assert registry.previous() == "v0002"
    registry.activate("v0001")
    assert registry.previous() is None  # nothing promoted before v0001: the base model
    registry.activate(None)
    assert registry.active_name() is None
    with pytest.raises(RegistryError, match="no adapter version"):
        registry.activate("v0042")


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: (p / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 4),
        lambda p: (p / "adapter_model.safetensors").write_bytes(
            (p / "adapter_model.safetensors").read_bytes()[:40]
        ),
        lambda p: (p / "adapter_config.json").write_text("{not json"),
        lambda p: (p / "adapter_config.json").write_text("{}"),
        lambda p: (p / "adapter_model.safetensors").unlink(),
    ],
)
def test_corrupt_adapter_refused_and_pointer_kept(tmp_path, damage):
    registry = Registry(tmp_path / "adapters")
    good, bad = add_version(registry), add_version(registry)
    registry.activate(good.name)
    damage(bad.path)
    with pytest.raises(RegistryError):
        validate_adapter(bad.path)
    with pytest.raises(RegistryError):
        registry.activate(bad.name)
    assert registry.active_name() == good.name


def test_commit_refuses_corrupt_candidate(tmp_path):
    registry = Registry(tmp_path / "adapters")
    staging = registry.new_staging_dir()
    (staging / "adapter_config.json").write_text("{}")
    with pytest.raises(RegistryError):
        registry.commit(staging, {})
    assert registry.versions() == []
    assert registry.clean_staging() == 1


def test_prune_keeps_promoted_and_active(tmp_path):
    registry = Registry(tmp_path / "adapters")
    kept = add_version(registry, promoted=True)
    registry.activate(kept.name)
    rejected = [add_version(registry, promoted=False) for _ in range(4)]
    removed = registry.prune_rejected(keep=2)
    assert removed == [rejected[0].name, rejected[1].name]
    assert [v.name for v in registry.versions()] == [kept.name, rejected[2].name, rejected[3].name]


def test_history_records_every_pointer_change_in_order(tmp_path):
    registry = Registry(tmp_path / "adapters")
    assert registry.history() == []
    v1, v2 = add_version(registry), add_version(registry)
    registry.activate(v1.name, action="promote", by="Ann", detail="loss 2.0 -> 1.5")
    registry.activate(v2.name, action="promote", by="Ann")
    registry.activate(v1.name, action="rollback", by="Bob")
    registry.activate(None, action="rollback", by="Bob")
    with pytest.raises(RegistryError):
        registry.activate("v0042", action="rollback")  # refused: the pointer and the history stay
    with pytest.raises(ValueError):
        registry.activate(v1.name, action="teleport")
    history = registry.history()
    assert [(e.action, e.version, e.previous, e.by) for e in history] == [
        ("promote", "v0001", None, "Ann"),
        ("promote", "v0002", "v0001", "Ann"),
        ("rollback", "v0001", "v0002", "Bob"),
        ("rollback", None, "v0001", "Bob"),
    ]
    assert history[0].detail == "loss 2.0 -> 1.5" and history[0].at <= history[-1].at
    assert registry.active_name() is None
    assert registry.history(limit=2) == history[-2:]


def test_history_skips_a_torn_line_and_reads_a_bounded_tail(tmp_path, monkeypatch):
    import models.registry as reg

    registry = Registry(tmp_path / "adapters")
    v1 = add_version(registry)
    registry.activate(v1.name, action="promote")
    path = registry.root / reg.HISTORY
    with open(path, "ab") as f:
        f.write(b'{"at": 1, "action": "rollb')  # a crash mid-line
    assert [e.action for e in registry.history()] == ["promote"]
    registry.activate(None, action="rollback")  # starts on a line of its own
    assert [e.action for e in registry.history()] == ["promote", "rollback"]

    path.write_bytes(b"")
    for _ in range(50):
        registry.activate(v1.name, action="activate")
    size = path.stat().st_size
    monkeypatch.setattr(reg, "HISTORY_READ_BYTES", size // 5)  # only the tail is read
    tail = registry.history()
    assert 5 <= len(tail) < 12 and all(e.action == "activate" for e in tail)
