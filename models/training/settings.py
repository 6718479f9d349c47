"""What one training job needs to know, as a plain dataclass that travels to the worker as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Settings of older versions that no longer mean anything (the one-question persona check).
RETIRED_KEYS = ("persona_question", "persona_names", "system_prompt")


@dataclass(frozen=True)
class TrainSettings:
    # The model: the same source/device the bot serves, plus the adapter it serves now (None = the bare base).
    source: str = "embedded"
    device: str = "auto"
    serving_adapter: str | None = None
    # LoRA
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    # Optimisation
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    epochs: int = 3
    max_steps: int = 0  # optimizer steps; 0 = as many as `epochs` make
    min_steps: int = 0  # with `epochs`: at least this many steps (more epochs over a small dataset, <= 30)
    batch_size: int = 4  # tune examples are packed: ~4 conversations each
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak
    max_grad_norm: float = 1.0
    max_seq_tokens: int = 512
    seed: int = 1234
    torch_threads: int = 0  # 0 = half the cores (1 on a 2-core machine), so the bot keeps answering
    # The attention kernel while training: "" = the model's default (sdpa, the least memory); "eager" was faster
    # for LoRA steps on 2-core CPUs with bf16 here, at ~1 GB more for 4 x 512 tokens.
    attention: str = ""
    precision: str = "auto"  # "auto" = bf16 autocast on CUDA and bf16-capable CPUs; "no" = fp32; "bf16"
    # Memory (models/training/memory.py): the worker's planned peak on a CPU, in MiB; micro-batches run in chunks of
    # as many rows as fit it (0 = whole micro-batches). `checkpointing`: "auto" recomputes the decoder layers only
    # when one row does not fit, "all" always, "off" never. `frozen_dtype`: "auto" = the base weights in the
    # autocast dtype when training runs under one, else fp32; "float32" keeps fp32 copies (as before).
    memory_budget_mb: int = 2200
    checkpointing: str = "auto"
    frozen_dtype: str = "auto"
    # The persona check (models/persona/checks.py): each check's served prompt, question, expected and forbidden
    # terms; replies are sampled `persona_samples` times at the bot's own sampling settings.
    persona_checks: tuple[dict[str, Any], ...] = ()
    persona_char: str = ""
    persona_samples: int = 3
    persona_temperature: float = 0.7
    persona_top_p: float = 0.9
    persona_repetition_penalty: float = 1.15
    persona_max_new_tokens: int = 48
    # Files: `eval_file` is the held-out set whose loss must improve (the log's, else the dialogue files');
    # `dialogue_eval_file` the held-out dialogue (reported), `general_file` the fixed general-chat reference.
    train_file: str = ""
    eval_file: str = ""
    dialogue_eval_file: str = ""
    general_file: str = ""
    general_examples: int = 0  # of the general-chat reference, spread evenly; 0 = all
    out_dir: str = ""
    # Checkpoints (models/training/checkpoint.py): saved at most this often and after the last step, so a stopped
    # run loses at most this much training; "" = none. `resume_from` names the checkpoint a resumed run starts at.
    checkpoint_dir: str = ""
    checkpoint_every_s: float = 120.0
    resume_from: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainSettings:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        for key in RETIRED_KEYS:  # a job recorded by an older Familiar still resumes
            raw.pop(key, None)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown training settings {sorted(unknown)}")
        for key in ("target_modules", "persona_checks"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)
