"""A stand-in for `models.training.worker` (no model): emits the worker's events and writes a small adapter.

Run as `python tests/fake_training_worker.py -m models.training.worker SETTINGS.json` (what a `training.launcher`
of `python tests/fake_training_worker.py` produces). FAKE_TRAINING_SCENARIO picks the outcome:
improve | same | corrupt | hang | crash; FAKE_TRAINING_STEP_S (default 0) paces the steps, so progress arrives over time.

Like the real trainer it saves a checkpoint (models/training/checkpoint.py's layout) after every step when the settings
name a `checkpoint_dir`, and with `resume_from` it starts after the step that checkpoint holds (a "resume" event first,
then progress for the remaining steps only; the result says `resumed_from_step`). "hang" hangs after step 1's checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.training import checkpoint

TOTAL_STEPS = 3


def emit(event):
    print(json.dumps(event), flush=True)


def main() -> int:
    settings = json.loads(Path(sys.argv[-1]).read_text())
    scenario = os.environ.get("FAKE_TRAINING_SCENARIO", "improve")
    step_s = float(os.environ.get("FAKE_TRAINING_STEP_S", "0"))
    examples = sum(1 for _ in open(settings["train_file"]))
    emit({"event": "start", "train_examples": examples, "eval_examples": 1, "threads": 1, "device": "cpu"})
    start = 0
    if settings.get("resume_from"):
        start = int(checkpoint.info(settings["resume_from"])["step"])
        emit({"event": "resume", "step": start, "total_steps": TOTAL_STEPS})
    for step in range(start + 1, TOTAL_STEPS + 1):
        # The checkpoint before the progress line (the real trainer sends them the other way round), so that a test
        # which has seen "step N" knows step N's checkpoint is saved.
        if settings.get("checkpoint_dir"):
            path = checkpoint.save(
                settings["checkpoint_dir"], step, {"step": step}, {"total_steps": TOTAL_STEPS}
            )
            emit({"event": "checkpoint", "step": step, "total_steps": TOTAL_STEPS, "path": str(path)})
        emit({"event": "progress", "step": step, "total_steps": TOTAL_STEPS, "loss": 1.0 / step, "lr": 1e-4,
              "tokens_per_s": 100.0, "elapsed_s": step, "eta_s": TOTAL_STEPS - step})  # fmt: skip
        if scenario == "hang":
            time.sleep(60)
        time.sleep(step_s)
    if scenario == "crash":
        emit({"event": "error", "message": "RuntimeError: out of memory"})
        return 1
    out = Path(settings["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]})
    )
    save_file({"lora_A.weight": torch.zeros(4, 8)}, out / "adapter_model.safetensors")
    if scenario == "corrupt":
        (out / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    candidate = 1.5 if scenario in ("improve", "corrupt", "out_of_character") else 2.0
    persona = 0.4 if scenario == "out_of_character" else 0.9
    emit({"event": "result", "serving_loss": 2.0, "candidate_loss": candidate, "general_serving": 3.0,
          "general_candidate": 3.05, "persona_serving": 0.8, "persona_candidate": persona,
          "train_examples": examples, "eval_examples": 1, "steps": TOTAL_STEPS,
          "resumed_from_step": start, "out_dir": str(out)})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
