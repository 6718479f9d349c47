"""Training checkpoints: what a stopped run needs to go on exactly where it stopped.

A job's checkpoints live in its own folder (``data/training/<job>/checkpoints/``), one sub-folder per saved step,
``step-NNNNNN/``, holding ``state.json`` (the step, for whoever only needs to know how far it got) and ``trainer.pt``
(the LoRA weights, the optimizer and schedule, the random generators, the running counters). A folder is written
under a temporary name and renamed into place, so a kill mid-save leaves the previous checkpoint intact; once the
new one is in place the older ones are deleted (only the latest is ever resumed from).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

PREFIX = "step-"
PARTIAL = ".partial"  # a folder being written; never resumed from
STATE_FILE = "state.json"
TRAINER_FILE = "trainer.pt"


def _folder_step(path: Path) -> int | None:
    name = path.name
    if not name.startswith(PREFIX) or name.endswith(PARTIAL) or not (path / STATE_FILE).is_file():
        return None
    digits = name[len(PREFIX) :]
    return int(digits) if digits.isdigit() else None


def latest(directory: str | Path) -> Path | None:
    """The most advanced complete checkpoint in ``directory``; None when there is none."""
    root = Path(directory)
    if not root.is_dir():
        return None
    found = [(step, path) for path in root.iterdir() if (step := _folder_step(path)) is not None]
    return max(found)[1] if found else None


def info(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``: at least ``step`` and ``total_steps``."""
    data: dict[str, Any] = json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))
    return data


def save(directory: str | Path, step: int, state: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Write ``state`` (torch objects) and ``summary`` (JSON) as the checkpoint of ``step``; returns its folder."""
    import torch

    root = Path(directory)
    final = root / f"{PREFIX}{step:06d}"
    partial = final.with_name(final.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.save(state, partial / TRAINER_FILE)
    (partial / STATE_FILE).write_text(json.dumps({**summary, "step": step}), encoding="utf-8")
    for name in (TRAINER_FILE, STATE_FILE):
        with open(partial / name, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint to resume from
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for old in root.iterdir():
        if old != final and old.name.startswith(PREFIX):
            shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: str | Path) -> dict[str, Any]:
    """The torch state saved by :func:`save`: tensors, numbers and the optimizer's and generators' plain state.

    Loaded with ``weights_only``: a file swapped into the data folder cannot run code through unpickling.
    """
    import torch

    state: dict[str, Any] = torch.load(Path(path) / TRAINER_FILE, map_location="cpu", weights_only=True)
    return state
