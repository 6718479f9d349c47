"""The card's bundled tuning: adopted once as the first version, only for its base model and its card."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bot.config import EXAMPLE_CONFIG, load_config
from cogs.admin.serving import serving_adapter
from models.bundled import BUNDLED_META, adopt_bundled, bundled_adapter_path, bundled_meta, tuned_for
from models.registry import POINTER, Registry
from tests.unit.test_registry import fake_adapter

META = {
    "base_model": "embedded",
    "figures": {"serving_loss": 2.5, "candidate_loss": 2.0, "persona_serving": 0.4, "persona_candidate": 0.9},
    "learnt_from": "517 dialogue-file lines, 23 from the card",
    "created_at": 1234.5,
}


def write_card(folder, name="Wick", stem="wick"):
    path = folder / f"{stem}.json"
    path.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": name, "description": "A flame."}}))
    return path


def bundle(card_file, meta=META):
    path = fake_adapter(bundled_adapter_path(card_file))
    if meta is not None:
        (path / BUNDLED_META).write_text(json.dumps(meta))
    return path


@pytest.fixture
def card_file(tmp_path):
    folder = tmp_path / "cards"
    folder.mkdir()
    return write_card(folder)


def make_config(tmp_path, card_file, *, source="embedded", bundled=True, adapter=""):
    base = load_config(EXAMPLE_CONFIG)
    return dataclasses.replace(
        base,
        bot=dataclasses.replace(base.bot, data_dir=str(tmp_path / "data"), persona=str(card_file)),
        model=dataclasses.replace(base.model, source=source, bundled_adapter=bundled, adapter=adapter),
    )


def registry_of(config) -> Registry:
    return Registry(config.data_dir / "adapters")


def test_the_first_start_adopts_the_bundled_adapter_as_v0001(tmp_path, card_file):
    bundle(card_file)
    config = make_config(tmp_path, card_file)
    served = serving_adapter(config)
    registry = registry_of(config)
    assert served == str(registry.root / "v0001")
    assert registry.active_name() == "v0001"
    (version,) = registry.versions()
    meta = version.meta
    assert meta["bundled"] is True and meta["promoted"] is True
    assert meta["card"] == "Wick" and tuned_for(version) == "Wick"
    assert meta["base_model"] == "embedded"
    assert meta["learnt_from"] == META["learnt_from"]
    assert meta["created_at"] == META["created_at"]
    assert meta["gate"]["promote"] is True
    assert meta["gate"]["held_out_loss"] == [2.5, 2.0]
    assert meta["gate"]["persona_score"] == [0.4, 0.9]
    assert (version.path / "adapter_model.safetensors").is_file()
    (entry,) = registry.history()
    assert (entry.action, entry.version, entry.by) == ("activate", "v0001", "familiar")
    assert "bundled" in entry.detail


def test_a_second_start_does_not_adopt_again(tmp_path, card_file):
    bundle(card_file)
    config = make_config(tmp_path, card_file)
    first = serving_adapter(config)
    assert serving_adapter(config) == first
    registry = registry_of(config)
    assert [v.name for v in registry.versions()] == ["v0001"]
    # Rolled back to the base model: the pointer says so, and the bundled tuning is not brought back.
    registry.activate(None, action="rollback", by="admin")
    assert serving_adapter(config) is None
    assert [v.name for v in registry.versions()] == ["v0001"]
    assert registry.active_name() is None


def test_a_registry_already_in_use_is_left_alone(tmp_path, card_file):
    bundle(card_file)
    config = make_config(tmp_path, card_file)
    registry = registry_of(config)
    registry.commit(fake_adapter(registry.new_staging_dir()), {"card": "Wick", "promoted": False})
    assert serving_adapter(config) is None  # a version exists, none is active: nothing adopted
    assert [v.name for v in registry.versions()] == ["v0001"]
    assert registry.get("v0001").meta.get("bundled") is None
    assert adopt_bundled(registry, card_file, "Wick", "embedded") is None


def test_bundled_adapter_off_serves_none(tmp_path, card_file):
    bundle(card_file)
    config = make_config(tmp_path, card_file, bundled=False)
    assert serving_adapter(config) is None
    registry = registry_of(config)
    assert registry.versions() == [] and not (registry.root / POINTER).exists()


def test_a_bundled_adapter_for_another_base_model_is_not_adopted(tmp_path, card_file):
    bundle(card_file, {**META, "base_model": "someone/other-model"})
    config = make_config(tmp_path, card_file)
    assert serving_adapter(config) is None
    assert registry_of(config).versions() == []
    other_source = make_config(tmp_path, card_file, source="someone/other-model")
    assert serving_adapter(other_source) == str(registry_of(other_source).root / "v0001")


def test_a_bundled_adapter_without_its_meta_is_taken_as_the_embedded_models(tmp_path, card_file):
    bundle(card_file, meta=None)
    assert bundled_meta(bundled_adapter_path(card_file)) == {}
    assert serving_adapter(make_config(tmp_path / "a", card_file, source="someone/other-model")) is None
    config = make_config(tmp_path / "b", card_file)
    assert serving_adapter(config) == str(registry_of(config).root / "v0001")


def test_an_active_version_tuned_for_another_character_is_not_served(tmp_path, card_file):
    config = make_config(tmp_path, card_file)
    registry = registry_of(config)
    marlo = registry.commit(fake_adapter(registry.new_staging_dir()), {"card": "Marlo", "promoted": True})
    registry.activate(marlo.name)
    assert serving_adapter(config) is None
    assert registry.active_name() == marlo.name  # the pointer is the owner's: only not served for this card
    wick = registry.commit(fake_adapter(registry.new_staging_dir()), {"card": "Wick", "promoted": True})
    registry.activate(wick.name)
    assert serving_adapter(config) == str(wick.path)
    older = registry.commit(
        fake_adapter(registry.new_staging_dir()), {"promoted": True}
    )  # meta names no card
    registry.activate(older.name)
    assert serving_adapter(config) == str(older.path)


def test_a_corrupt_bundled_adapter_is_refused_and_nothing_is_served(tmp_path, card_file):
    path = bundle(card_file)
    (path / "adapter_model.safetensors").write_bytes(b"\x00garbage, not safetensors" * 4)
    config = make_config(tmp_path, card_file)
    assert serving_adapter(config) is None
    registry = registry_of(config)
    assert registry.versions() == []
    assert not (registry.root / POINTER).exists()
    assert not registry.root.exists() or not list(registry.root.iterdir())  # not even a staging folder left


def test_a_bundled_adapter_without_a_peft_config_is_refused(tmp_path, card_file):
    path = bundle(card_file)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    config = make_config(tmp_path, card_file)
    assert serving_adapter(config) is None
    assert registry_of(config).versions() == []


def test_a_pinned_adapter_is_served_as_configured(tmp_path, card_file):
    bundle(card_file)
    config = make_config(tmp_path, card_file, adapter="/somewhere/my-adapter")
    assert serving_adapter(config) == "/somewhere/my-adapter"
    assert registry_of(config).versions() == []


def test_no_bundled_folder_nothing_adopted(tmp_path, card_file):
    config = make_config(tmp_path, card_file)
    assert serving_adapter(config) is None
    assert registry_of(config).versions() == []
