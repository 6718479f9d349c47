"""What the retrain tests share: a config that runs the fake training worker, a backend that records swaps, a loader
that loads nothing, varied chat to log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bot.config import Config, config_from_dict
from models.loader import LoadedModel, ModelSpec

FAKE_WORKER = Path(__file__).resolve().parent / "fake_training_worker.py"
# The gate's three figures as the fake worker measures an improving run, as GateDecision.figures() writes them.
GATE_FIGURES = (
    "held-out loss 2.0000 -> 1.5000",
    "general chat loss 3.0000 -> 3.0500 (+1.7%)",
    "persona score 80% -> 90%",
)

_TOPICS = ("lanterns", "rainy days", "old maps", "green tea", "dragons", "the sea", "music", "the stars", "candles",
           "autumn", "books", "cats", "puzzles", "gardens", "trains", "snow", "mountains", "festivals", "clocks",
           "bread", "owls", "rivers", "kites", "ghost stories")  # fmt: skip
_ASKS = ("What do you think about {}?", "Tell me something about {}.", "Do you like {}?")
_ANSWERS = ("Ah, {}! They make my flame dance.", "{}, hm? I could talk about that all night.",
            "Oh yes, {}. Ask me again tomorrow and I'll tell you more.")  # fmt: skip


def chat_exchange(i: int) -> tuple[str, str]:
    """The i-th of 72 ordinary (question, reply) pairs, all different to the data-quality step (models.quality):
    templated lines such as f"question {i}" are one copy-pasted message to it."""
    topic, form = _TOPICS[i % len(_TOPICS)], (i // len(_TOPICS)) % len(_ASKS)
    answer = _ANSWERS[form].format(topic)
    return _ASKS[form].format(topic), answer[0].upper() + answer[1:]


def retrain_config(tmp_path: Path, **training: Any) -> Config:
    """Console consent for all, the fake worker as the launcher, tiny minimums; `training` adds or overrides keys."""
    return config_from_dict(
        {
            "bot": {"data_dir": str(tmp_path / "data")},
            "privacy": {"console_consent": "all"},
            "training": {
                "min_examples": 2,
                "launcher": f"{sys.executable} {FAKE_WORKER}",
                "eval_fraction": 0.2,
                **training,
            },
        }
    )


class SwapRecorder:
    """A backend that can hot-swap: it serves whatever it was last swapped to, and remembers each swap."""

    model_version = "embedded:base"

    def __init__(self) -> None:
        self.swapped: list[str] = []

    async def swap_model(self, loaded: LoadedModel) -> None:
        self.swapped.append(loaded.version)
        self.model_version = loaded.version


def fake_loader(spec: ModelSpec) -> LoadedModel:
    """Loads nothing: the model it returns only names the adapter."""
    name = Path(spec.adapter).name if spec.adapter else "base"
    return LoadedModel(model=None, tokenizer=None, device=None, dtype=None, name="m", version=f"embedded+adapter:{name}",
                       eos_token_ids=(2,))  # fmt: skip
