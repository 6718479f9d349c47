"""The bundled Wick ships tuned: `familiar chat` on a fresh data folder serves his adapter, and it is him who answers."""

import json
import subprocess
import sys

import pytest

from models.bundled import BUNDLED_META, bundled_adapter_path
from models.persona import default_card_path
from models.registry import Registry, validate_adapter

pytestmark = pytest.mark.slow

ADAPTER = bundled_adapter_path(default_card_path())
# The adapter is built by `make character` (about an hour on two CPU cores) and committed; until it is, these
# tests say so in the run's summary instead of failing a fresh clone.
needs_adapter = pytest.mark.skipif(
    not ADAPTER.is_dir(), reason=f"no bundled adapter at {ADAPTER}: run `make character` and commit it"
)


@needs_adapter
def test_the_shipped_adapter_is_sound_and_measured():
    validate_adapter(ADAPTER)
    meta = json.loads((ADAPTER / BUNDLED_META).read_text(encoding="utf-8"))
    assert meta["base_model"] == "embedded"
    figures = meta["figures"]
    # What `make character` measured when it built this adapter (bench/tune_character.py): in character on held-out
    # questions, general chat no worse than 5%.
    assert figures["persona_candidate"] >= 0.9 > figures["persona_serving"]
    assert figures["general_candidate"] <= figures["general_serving"] * 1.05
    assert (ADAPTER / "adapter_model.safetensors").stat().st_size < 8 * 2**20  # a small LoRA, not a model


def _chat(tmp_path, lines: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[bot]\ndata_dir = "{tmp_path / "data"}"\n[generation]\ntemperature = 0.0\nmax_new_tokens = 40\n{extra}',
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "chat"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_adapter
def test_a_fresh_data_folder_serves_the_bundled_tuning(tmp_path):
    run = _chat(tmp_path, "hey, what do people call you?\nwould you go for a swim with me?\n")
    assert run.returncode == 0, run.stderr
    assert "bundled tuning as v0001" in run.stderr
    replies = [line.removeprefix("Wick: ") for line in run.stdout.splitlines() if line.startswith("Wick: ")][
        1:
    ]
    assert len(replies) == 2, run.stdout
    assert "wick" in replies[0].casefold()
    assert not any(word in replies[1].casefold() for word in ("love to swim", "let's swim", "sure, let's"))

    registry = Registry(tmp_path / "data" / "adapters")
    active = registry.active()
    assert active is not None and active.name == "v0001"
    assert active.meta["bundled"] and active.meta["card"] == "Wick"
    assert active.meta["gate"]["persona_score"][1] >= 0.9


def test_bundled_adapter_off_starts_untuned_and_says_so(tmp_path):
    run = _chat(tmp_path, "hi\n", "[model]\nbundled_adapter = false\n")
    assert run.returncode == 0, run.stderr
    assert "is not tuned yet" in run.stderr and "familiar tune" in run.stderr
    assert Registry(tmp_path / "data" / "adapters").versions() == []
