"""The training process: ``python -m models.training.worker JOB.json`` (or ``accelerate launch -m ...``).

It loads the base model, measures the serving model's held-out loss, trains a fresh LoRA adapter (or, with
``resume_from``, goes on from a stopped run's checkpoint), measures the new adapter on the same eval set, asks it
the persona question and saves it to ``out_dir``. It never touches the
registry's pointer: the parent decides what to promote. Everything it has to say goes to stdout as one JSON object
per line (``{"event": "start"|"phase"|"resume"|"progress"|"checkpoint"|"result"|"error", ...}``); logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

log = logging.getLogger("models.training.worker")


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run(settings_path: str) -> dict[str, Any]:
    from models.training.settings import TrainSettings

    settings = TrainSettings.from_file(settings_path)
    _limit_threads(settings.torch_threads)

    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, PeftModel, get_peft_model

    from models.training.data import encode_all, read_jsonl
    from models.training.memory import load_for_training
    from models.training.trainer import ReplyLoss, seed_everything, train

    started = time.perf_counter()
    use_cpu = settings.device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=_precision(settings, use_cpu))
    _limit_threads(settings.torch_threads)  # accelerate may have changed it
    main = accelerator.is_main_process
    say = emit if main else (lambda event: None)
    device = accelerator.device
    seed_everything(settings.seed)

    say({"event": "phase", "phase": "loading", "message": "loading the base model"})
    # The weights' dtype and the attention kernel for training: models/training/memory.py.
    loaded = load_for_training(settings, device, accelerator.mixed_precision)
    base, tokenizer = loaded.model, loaded.tokenizer
    pad_id = tokenizer.pad_token_id

    train_items, skipped_train = encode_all(
        tokenizer, read_jsonl(settings.train_file), settings.max_seq_tokens
    )
    eval_items, skipped_eval = encode_all(tokenizer, read_jsonl(settings.eval_file), settings.max_seq_tokens)
    references = _references(settings, tokenizer)
    if not train_items or not eval_items:
        raise ValueError(
            f"nothing to train on after encoding: {len(train_items)} train and {len(eval_items)} eval examples "
            f"fit max_seq_tokens={settings.max_seq_tokens}"
        )
    say(
        {
            "event": "start",
            "train_examples": len(train_items),
            "eval_examples": len(eval_items),
            "skipped_too_long": skipped_train + skipped_eval,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "processes": accelerator.num_processes,
        }
    )

    # 1. The serving model (base + the adapter it serves now, if any) on every held-out set and the persona check.
    say({"event": "phase", "phase": "eval_serving", "message": "measuring the serving model"})
    if settings.serving_adapter:
        serving = PeftModel.from_pretrained(base, settings.serving_adapter)
        before = _measure(serving, tokenizer, eval_items, references, settings, device, say)
        base = serving.unload()  # back to the untouched base weights, LoRA layers removed
    else:
        before = _measure(base, tokenizer, eval_items, references, settings, device, say)

    # 2. Train a fresh adapter on the base.
    seed_everything(settings.seed)
    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    loss_module = ReplyLoss(model)
    say({"event": "phase", "phase": "training", "message": "training"})
    stats = train(
        loss_module, train_items, settings, pad_id=pad_id, device=device, report=say, accelerator=accelerator
    )
    accelerator.wait_for_everyone()

    # 3. The candidate on the same sets, and the persona check.
    say({"event": "phase", "phase": "eval_candidate", "message": "measuring the new adapter"})
    after = _measure(model, tokenizer, eval_items, references, settings, device, say)
    result = {
        "event": "result",
        **{f"{name}_serving": value for name, value in before.items() if name != "persona_failures"},
        **{f"{name}_candidate": value for name, value in after.items() if name != "persona_failures"},
        "serving_loss": before["held_out"],
        "candidate_loss": after["held_out"],
        "persona_failures": after.get("persona_failures", []),
        "train_examples": len(train_items),
        "eval_examples": len(eval_items),
        "steps": stats.steps,
        "train_tokens": stats.tokens,
        "train_seconds": round(stats.seconds, 2),
        "tokens_per_s": round(stats.tokens_per_s, 1),
        "final_train_loss": round(stats.final_loss, 5),
        "resumed_from_step": stats.resumed_from,
        "total_seconds": round(time.perf_counter() - started, 2),
        "out_dir": settings.out_dir,
    }
    if main:
        Path(settings.out_dir).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(settings.out_dir)
    say(result)
    return result


def _precision(settings: Any, use_cpu: bool) -> str:
    """bf16 autocast on CUDA, and on CPUs with native bf16 (AMX / AVX512-BF16: measured ~1.5x faster for LoRA
    steps here); fp32 elsewhere. The weights stay fp32 either way: only the matmuls run in bf16."""
    from models.loader import cpu_has_fast_bf16

    if settings.precision in ("no", "bf16"):
        return str(settings.precision)
    return "bf16" if not use_cpu or cpu_has_fast_bf16() else "no"


def _references(settings: Any, tokenizer: Any) -> dict[str, list[Any]]:
    """The other held-out sets the gate reports: the held-out dialogue and the fixed general-chat reference."""
    from models.training.data import encode_all, read_jsonl

    out = {}
    for name, path in (("dialogue", settings.dialogue_eval_file), ("general", settings.general_file)):
        if path:
            examples = read_jsonl(path)
            if name == "general" and 0 < settings.general_examples < len(examples):
                step = (
                    len(examples) / settings.general_examples
                )  # evenly spread: every category keeps its share
                examples = [examples[int(i * step)] for i in range(settings.general_examples)]
            items, _ = encode_all(tokenizer, examples, settings.max_seq_tokens)
            if items:
                out[name] = items
    return out


def _measure(
    model: Any,
    tokenizer: Any,
    held_out: list[Any],
    references: dict[str, list[Any]],
    settings: Any,
    device: Any,
    say: Any,
) -> dict[str, Any]:
    """Loss per target token on each set, and the persona score of sampled replies (when there are checks)."""
    from models.persona.checks import PersonaCheck
    from models.training.trainer import ReplyLoss, eval_loss
    from models.tuning.persona_eval import Sampling, sample_hf, score_samples

    pad_id = tokenizer.pad_token_id
    loss = ReplyLoss(model)
    figures: dict[str, Any] = {"held_out": round(eval_loss(loss, held_out, pad_id=pad_id, device=device), 5)}
    for name, items in references.items():
        figures[name] = round(eval_loss(loss, items, pad_id=pad_id, device=device), 5)
    if settings.persona_checks:
        checks = [
            PersonaCheck(
                question=c["question"],
                expect=tuple(tuple(g) for g in c["expect"]),
                forbid=tuple(c.get("forbid", ())),
                about=c.get("about", ""),
            )
            for c in settings.persona_checks
        ]
        sampling = Sampling(
            temperature=settings.persona_temperature,
            top_p=settings.persona_top_p,
            repetition_penalty=settings.persona_repetition_penalty,
            max_new_tokens=settings.persona_max_new_tokens,
            samples=settings.persona_samples,
            seed=settings.seed,
        )
        say({"event": "phase", "phase": "persona", "message": f"asking {len(checks)} persona questions"})
        prompts = [c["messages"] for c in settings.persona_checks]
        raw = sample_hf(model, tokenizer, prompts, sampling, device)
        score = score_samples(checks, raw, settings.persona_char, prompts)
        figures["persona"] = round(score.score, 4)
        figures["persona_failures"] = [list(f) for f in score.failures]
    return figures


def _limit_threads(requested: int) -> None:
    import torch

    from models.training.trainer import default_threads

    threads = requested if requested > 0 else default_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.worker", description=__doc__)
    parser.add_argument("settings", help="the job's settings JSON (written by the retrain service)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        os.nice(10)  # chat first: the bot's process keeps its priority
    except (AttributeError, OSError):
        pass
    try:
        run(args.settings)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
