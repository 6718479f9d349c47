"""Tune a character from its own material and ship the adapter next to its card (`make character`).

    python -m bench.tune_character                      # the bundled Wick -> models/characters/default.adapter/
    python -m bench.tune_character --card my.json --out my.adapter --steps 20

The same dataset builder (card, dialogue files; no log, no teachings: those are the owner's), the same training
worker and the same `[training]` settings as `familiar tune` (LoRA r=8 on every linear layer). The worker
measures the untuned model and the tuned one on the held-out dialogue, the general-chat reference and the persona
checks (sampled replies, hand-written + card-derived); the figures are printed against their targets and kept in the
adapter's `familiar_meta.json`. Weights are stored in float16 (half the size; served merged in any dtype).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bot.config import load_config
from cogs.admin.tuning_data import GENERAL_REFERENCE, character_data, persona_payload
from models.persona import default_card_path, load_card
from models.training.settings import TrainSettings
from models.tuning.builder import build_tune_dataset

PERSONA_TARGET = 0.90  # share of sampled held-out replies faithful to the card
GENERAL_TOLERANCE = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tune_character", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--card", default="", help="a card file (default: the bundled character)")
    parser.add_argument(
        "--out", default="", help="where the adapter goes (default: <card>.adapter next to it)"
    )
    parser.add_argument("--config", default=None, help="config file (default: config.toml or the example)")
    parser.add_argument("--source", default="", help="base model (default: the config's model.source)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (0 = the epochs)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs (0 = training.epochs of the config)")
    parser.add_argument("--samples", type=int, default=3, help="sampled replies per persona question")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--attention", default="eager", help="attention kernel while training (eager | sdpa)")
    parser.add_argument("--no-card", action="store_true", help="do not derive examples from the card")
    parser.add_argument("--no-dialogue", action="store_true", help="card-only: ignore dialogue files")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    card_file = Path(args.card) if args.card else default_card_path()
    card = load_card(card_file)
    config = dataclasses.replace(
        config,
        bot=dataclasses.replace(config.bot, persona=str(card_file)),
        training=dataclasses.replace(config.training, learn_from_card=not args.no_card),
    )
    material = character_data(config, card)
    dialogue = () if args.no_dialogue else material.dialogue
    tune = build_tune_dataset(card, dialogue=dialogue, card_derived=material.card_derived)
    print(f"{card.name}: learning from {tune.summary()}; {len(material.checks)} persona checks")
    if not tune.train or not tune.held_out:
        print("nothing to learn from: add a dialogue file or keep the card-derived examples", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else card_file.with_name(card_file.stem + ".adapter")
    work = Path(tempfile.mkdtemp(prefix="familiar-tune-"))
    try:
        tune.write_part("train", work / "train.jsonl")
        tune.write_part("held_out", work / "eval.jsonl")
        g, t = config.generation, config.training
        settings = TrainSettings(
            source=args.source or config.model.source,
            device=args.device,
            lora_r=t.lora_r,
            lora_alpha=t.lora_alpha,
            lora_dropout=t.lora_dropout,
            target_modules=tuple(t.target_modules),
            learning_rate=t.learning_rate,
            epochs=args.epochs or t.epochs,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            warmup_ratio=t.warmup_ratio,
            attention=args.attention,
            max_steps=args.steps,
            min_steps=t.min_steps,
            max_seq_tokens=config.training.max_seq_tokens,
            seed=config.training.seed,
            torch_threads=args.threads,
            persona_checks=persona_payload(config, card, material.checks),
            persona_char=card.char_name,
            persona_samples=args.samples,
            persona_temperature=g.temperature,
            persona_top_p=g.top_p,
            persona_repetition_penalty=g.repetition_penalty,
            train_file=str(work / "train.jsonl"),
            eval_file=str(work / "eval.jsonl"),
            general_file=str(GENERAL_REFERENCE),
            out_dir=str(work / "adapter"),
        )
        (work / "settings.json").write_text(settings.to_json(), encoding="utf-8")
        result = _run_worker(work / "settings.json")
        if result is None:
            return 1
        _ship(work / "adapter", out, result, tune.summary(), settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(result)
    print(f"adapter -> {out}")
    return 0


def _run_worker(settings_path: Path) -> dict[str, object] | None:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "models.training.worker", str(settings_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    result = None
    for line in process.stdout:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        kind = event.get("event")
        if kind == "result":
            result = event
        elif kind == "error":
            print(f"training failed: {event.get('message')}", file=sys.stderr)
        elif kind == "progress":
            print(f"  step {event['step']}/{event['total_steps']} loss {event['loss']} "
                  f"{event['tokens_per_s']} tok/s, eta {event['eta_s']} s", flush=True)  # fmt: skip
        elif kind in ("phase", "start"):
            print(f"  {event.get('message') or event}", flush=True)
    process.wait()
    print(f"  worker finished in {time.perf_counter() - started:.0f} s (exit {process.returncode})")
    return result


def _ship(adapter: Path, out: Path, result: dict[str, object], summary: str, settings: TrainSettings) -> None:
    """The adapter in float16 with its figures, replacing ``out`` whole (written beside it, then renamed)."""
    from safetensors.torch import load_file, save_file

    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy(adapter / "adapter_config.json", staging / "adapter_config.json")
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file(
        {k: v.half().contiguous() for k, v in tensors.items()}, str(staging / "adapter_model.safetensors")
    )
    meta = {
        "base_model": settings.source,
        "learnt_from": summary,
        "figures": {k: v for k, v in result.items() if k not in ("event", "out_dir")},
        "settings": {k: v for k, v in dataclasses.asdict(settings).items()
                     if k not in ("persona_checks", "train_file", "eval_file", "general_file", "out_dir",
                                  "dialogue_eval_file", "extra", "checkpoint_dir", "resume_from")},
        "created_at": time.time(),
    }  # fmt: skip
    (staging / "familiar_meta.json").write_text(
        json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _report(result: dict[str, object]) -> None:
    def f(key: str) -> float:
        return float(result.get(key) or float("nan"))  # type: ignore[arg-type]

    persona_before, persona_after = f("persona_serving"), f("persona_candidate")
    general_before, general_after = f("general_serving"), f("general_candidate")
    rows = [
        ("persona score (held-out checks, sampled)", f"{persona_before:.1%}", f"{persona_after:.1%}",
         f">= {PERSONA_TARGET:.0%}", persona_after >= PERSONA_TARGET),
        ("general-chat reference loss", f"{general_before:.4f}", f"{general_after:.4f}",
         f"<= +{GENERAL_TOLERANCE:.0%}", general_after <= general_before * (1 + GENERAL_TOLERANCE)),
        ("held-out dialogue loss", f"{f('serving_loss'):.4f}", f"{f('candidate_loss'):.4f}", "lower",
         f("candidate_loss") < f("serving_loss")),
    ]  # fmt: skip
    print(f"\n{'figure':44} {'untuned':>9} {'tuned':>9}  target")
    for name, before, after, target, ok in rows:
        print(f"{name:44} {before:>9} {after:>9}  {target:10} {'met' if ok else 'NOT MET'}")
    print(f"training: {result.get('steps')} steps, {result.get('tokens_per_s')} tok/s, "
          f"{result.get('total_seconds')} s in all")  # fmt: skip
    failures = result.get("persona_failures") or []
    for question, reply in failures:  # type: ignore[attr-defined]
        print(f"  unfaithful: {question!r} -> {reply!r}")


if __name__ == "__main__":
    sys.exit(main())
