"""A character's bundled tuning: the LoRA adapter shipped next to its card (``<card>.adapter/``).

The bundled Wick ships tuned (``make character`` rebuilds ``models/characters/default.adapter``). On the first start
of a data folder whose registry has never been pointed anywhere, the bundled adapter is adopted as the registry's
first version and made active, so that it is served, reported, gated against and rolled back like any other version
(``familiar model rollback base`` serves the untuned model). It is only adopted for the base model it was tuned on.

Every version's meta names the card it was tuned for; a version tuned for another character (the owner switched
cards) is not served: the untuned model is, with a warning that says how to tune the new one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from models.registry import POINTER, Registry, RegistryError, Version, validate_adapter

log = logging.getLogger(__name__)

BUNDLED_SUFFIX = ".adapter"
BUNDLED_META = (
    "familiar_meta.json"  # written by bench/tune_character.py: base model, figures, what it learnt from
)


def bundled_adapter_path(card_file: Path) -> Path:
    return card_file.with_name(card_file.stem + BUNDLED_SUFFIX)


def bundled_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / BUNDLED_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def adopt_bundled(registry: Registry, card_file: Path, card_name: str, source: str) -> Version | None:
    """Make the card's bundled adapter the registry's first, active version; None when there is nothing to adopt
    (no bundled adapter, tuned on another base model, or a registry already in use)."""
    bundled = bundled_adapter_path(card_file)
    if not bundled.is_dir() or (registry.root / POINTER).exists() or registry.versions():
        return None
    meta = bundled_meta(bundled)
    if meta.get("base_model", "embedded") != source:
        log.info("%s's bundled tuning is for %s, not %s: serving the untuned model", card_name,
                 meta.get("base_model"), source)  # fmt: skip
        return None
    try:
        validate_adapter(bundled)
    except RegistryError as exc:
        log.error("%s's bundled tuning is not usable (%s): serving the untuned model", card_name, exc)
        return None
    staging = registry.new_staging_dir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(bundled / name, staging / name)
    figures = meta.get("figures", {})
    version = registry.commit(
        staging,
        {
            "bundled": True,
            "card": card_name,
            "base_model": source,
            "learnt_from": meta.get("learnt_from", ""),
            "metrics": figures,
            "gate": {
                "promote": True,
                "reasons": [],
                "held_out_loss": [figures.get("serving_loss"), figures.get("candidate_loss")],
                "general_loss": [figures.get("general_serving"), figures.get("general_candidate")],
                "persona_score": [figures.get("persona_serving"), figures.get("persona_candidate")],
            },
            "created_at": meta.get("created_at", time.time()),
            "requested_by": "familiar",
            "promoted": True,
            "promoted_at": time.time(),
        },
    )
    registry.activate(version.name, action="activate", by="familiar", detail=f"{card_name}'s bundled tuning")
    log.info("serving %s's bundled tuning as %s", card_name, version.name)
    return version


def tuned_for(version: Version) -> str:
    """The character a version was tuned for ("" when its meta does not say: older versions)."""
    return str(version.meta.get("card") or "")
