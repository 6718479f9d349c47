"""Training memory and speed, against the previous setup and a stock Hugging Face Trainer; chat latency meanwhile.

Run: ``python -m bench.training_bench`` (``--quick`` or ``--steps N`` for fewer steps, ``--only memory`` for one
part, ``--source``/``--device`` for another model or device).

1. Memory: the real training worker (``python -m models.training.worker``) at the default settings (TrainSettings:
   batch, sequence length, LoRA, precision) on packed synthetic examples just under ``max_seq_tokens``, run with
   the previous setup (fp32 frozen weights, whole micro-batches: ``OLD_SETUP``), the new one, and the previous one
   again (A-B-A against drifting load). Peak RSS is the worker's own ``ru_maxrss`` (``os.wait4``); tokens/s is the
   worker's training throughput. Each is checked against its target (peak <= 2.5 GB, tokens/s >= the previous).
2. Both trainers fit the same LoRA (r=8, q/k/v/o) on the same encoded examples, same batch size, steps and
   threads, one after the other in this process; throughput counts real (non-padding) tokens.
3. The engine answers a few chat requests idle and again while the real training worker runs in its subprocess.

The machine is shared: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.dataset import DatasetLimits, build_dataset
from models.engine import Engine, GenerationRequest
from models.loader import ModelSpec, load_model
from models.persona import default_card_path, load_card
from models.prompt import PromptBudget
from models.training.data import IGNORE_INDEX, collate, encode_all, encode_example
from models.training.job import PROJECT_ROOT, TrainingProcess, worker_command
from models.training.settings import TrainSettings
from models.training.trainer import ReplyLoss, default_threads, seed_everything, train

BATCH = 8
STEPS = 12
QUICK_STEPS = 4
MAX_TOKENS = 384
CHAT_REQUESTS = 5
TARGET_RATIO = 1.0
MEMORY_STEPS = 3
MEMORY_TARGET_GB = 2.5  # peak resident memory of the training worker, GB of 10^9 bytes
EVAL_EXAMPLES = 4
# The trainer before models/training/memory.py: fp32 copies of the frozen weights (cast to bf16 by autocast on
# every call), whole micro-batches, nothing recomputed. Attention stays the loader's default (sdpa) in both.
OLD_SETUP = {"frozen_dtype": "float32", "memory_budget_mb": 0, "checkpointing": "off"}
TOPICS = (
    "rain",
    "marshmallows",
    "the stream",
    "dragons",
    "candles",
    "puns",
    "water",
    "the moon",
    "tea",
    "drafts",
)


def corpus(card, n_conversations: int = 12) -> list[dict]:
    """Chat examples shaped like the real log: the default card's system prompt, a few turns of context, a reply."""
    rows, i = [], 0
    for c in range(n_conversations):
        for k in range(4):
            topic = TOPICS[(c + k) % len(TOPICS)]
            for role, author, text in (
                (
                    "user",
                    f"viewer{c}",
                    f"Hey Wick, what do you think about {topic}? Asking for stream {c}, part {k}.",
                ),
                (
                    "assistant",
                    "familiar",
                    f"*flickers* {topic.title()}? " + "A warm little thought. " * (1 + k % 3),
                ),
            ):
                i += 1
                rows.append(
                    {"id": i, "platform": "console", "conversation_id": f"c{c}", "platform_message_id": None,
                     "author_id": author, "author_name": author.title(), "role": role, "content": text,
                     "reply_to_platform_id": None, "created_at": float(i), "rating": None}
                )  # fmt: skip
    limits = DatasetLimits(  # templated rows: no data-quality step, it would keep two per topic
        eval_fraction=0.1, budget=PromptBudget(total_tokens=MAX_TOKENS, examples_max_tokens=128), quality=None
    )
    ds = build_dataset(rows, card=card, allowed=lambda p, u, t: True, limits=limits)
    return ds.train + ds.eval


def fresh_lora(base):
    from peft import LoraConfig, get_peft_model

    seed_everything(0)
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    return get_peft_model(base, config)


def bench_ours(base, items, pad_id, steps: int) -> float:
    model = fresh_lora(base)
    settings = TrainSettings(batch_size=BATCH, grad_accum=1, max_steps=steps, learning_rate=2e-4, seed=0)
    stats = train(
        ReplyLoss(model), items, settings, pad_id=pad_id, device=torch.device("cpu"), report=lambda e: None
    )
    model.unload()
    return stats.tokens / stats.seconds


def bench_hf_trainer(base, items, pad_id, steps: int) -> float:
    from transformers import Trainer, TrainingArguments

    # The GGUF weights were dequantized to fp32 at load; only the marker remains, and the Trainer refuses it.
    base.is_quantized = False
    base.hf_quantizer = None
    model = fresh_lora(base)
    data = [{"input_ids": it.input_ids, "labels": it.labels} for it in items]
    seen_tokens = 0

    def collator(features):
        nonlocal seen_tokens
        from models.training.data import Encoded

        batch = collate([Encoded(f["input_ids"], f["labels"]) for f in features], pad_id)
        seen_tokens += batch.tokens
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=2e-4,
            warmup_steps=max(1, steps // 10), lr_scheduler_type="cosine", save_strategy="no", report_to=[], use_cpu=True,
            disable_tqdm=True, logging_strategy="no", dataloader_num_workers=0, seed=0,
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    model.unload()
    return seen_tokens / seconds


def long_examples(tokenizer, system: str, max_tokens: int, count: int) -> list[dict]:
    """Packed chat examples (every reply learnt, as the tune data) of just under ``max_tokens`` tokens each."""
    out = []
    for k in range(count):
        messages: list[dict] = [{"role": "system", "content": system}]
        for turn in range(1000):
            topic = TOPICS[(k + turn) % len(TOPICS)]
            more = [
                {"role": "user", "content": f"Viewer{turn}: Wick, what do you make of {topic}? ({k}/{turn})"},
                {"role": "assistant", "content": f"*flickers* {topic.title()}? " + "A warm little thought. " * (1 + turn % 4),
                 "train": True},
            ]  # fmt: skip
            if encode_example(tokenizer, [*messages, *more], max_tokens) is None:
                break
            messages += more
        out.append({"messages": messages})
    return out


def run_worker(settings: TrainSettings, folder: Path) -> tuple[int, float]:
    """Run the training worker on ``settings``; return its peak RSS (bytes) and its training tokens/s."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.json"
    path.write_text(settings.to_json(), encoding="utf-8")
    threads = settings.torch_threads or default_threads()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    with open(folder / "worker.log", "wb") as log:
        process = subprocess.Popen(
            worker_command(path), stdout=subprocess.PIPE, stderr=log, cwd=PROJECT_ROOT, env=env
        )
        assert process.stdout is not None
        result = None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").strip()
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "result":
                result = event
            elif event.get("event") == "error":
                print(f"  worker error: {event.get('message')}")
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: ru_maxrss is its peak
        process.returncode = os.waitstatus_to_exitcode(status)
    if result is None:
        tail = (folder / "worker.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"the worker failed (exit {process.returncode}): {tail}")
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return peak, float(result["tokens_per_s"])


def bench_memory(tokenizer, system: str, *, source: str, device: str, steps: int) -> None:
    """The training worker's peak RSS and tokens/s: the previous setup, the new one, the previous one again."""
    defaults = TrainSettings()
    count = defaults.batch_size * defaults.grad_accum * steps
    examples = long_examples(tokenizer, system, defaults.max_seq_tokens, count + EVAL_EXAMPLES)
    items, _ = encode_all(tokenizer, examples, defaults.max_seq_tokens)
    lengths = [len(it.input_ids) for it in items]
    share = sum(it.target_tokens for it in items) / sum(lengths)
    print(f"memory: the training worker on {count} packed examples of {min(lengths)}-{max(lengths)} tokens "
          f"({share:.0%} carry loss), batch {defaults.batch_size} x grad_accum {defaults.grad_accum}, {steps} steps, "
          f"LoRA r={defaults.lora_r} on {len(defaults.target_modules)} modules, precision {defaults.precision}, "
          f"{defaults.torch_threads or default_threads()} thread(s)")  # fmt: skip
    runs: dict[str, list[tuple[int, float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        train_file, eval_file = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        train_file.write_text("".join(json.dumps(e) + "\n" for e in examples[:count]), encoding="utf-8")
        eval_file.write_text("".join(json.dumps(e) + "\n" for e in examples[count:]), encoding="utf-8")
        common = {"source": source, "device": device, "max_steps": steps, "train_file": str(train_file),
                  "eval_file": str(eval_file)}  # fmt: skip
        for n, label in enumerate(("old", "new", "old")):
            setup = OLD_SETUP if label == "old" else {}
            settings = TrainSettings(**common, **setup, out_dir=str(Path(tmp) / f"out{n}"))
            runs[label].append(run_worker(settings, Path(tmp) / f"run{n}"))
    old_peak = max(peak for peak, _ in runs["old"])
    old_tps = statistics.mean(tps for _, tps in runs["old"])
    new_peak, new_tps = runs["new"][0]
    target = MEMORY_TARGET_GB * 1e9
    old_list = " / ".join(f"{tps:.0f}" for _, tps in runs["old"])
    for label, peak, tps, detail in (
        ("previous", old_peak, old_tps, f"({old_list} tok/s, before and after)"),
        ("new", new_peak, new_tps, f"-> {new_tps / old_tps:.2f}x previous"),
    ):
        memory_ok = "OK" if peak <= target else "ABOVE TARGET"
        speed_ok = "" if label == "previous" else (" OK" if new_tps >= old_tps else " BELOW TARGET")
        print(f"  {label:8s} peak RSS {peak / 1e9:5.2f} GB (target <= {MEMORY_TARGET_GB} GB) {memory_ok:12s} "
              f"{tps:6.1f} tok/s {detail}{' (target >= 1.00x)' if label == 'new' else ''}{speed_ok}")  # fmt: skip


async def chat_latencies(engine: Engine, system: str, n: int) -> list[float]:
    out = []
    for k in range(n):
        request = GenerationRequest(
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": f"Ann: hello Wick ({k})"},
            ],
            max_new_tokens=24,
            temperature=0.0,
        )
        started = time.perf_counter()
        await engine.generate(request)
        out.append(time.perf_counter() - started)
    return out


async def latency_during_training(
    items_json: list[dict], system: str, steps: int, source: str = "embedded"
) -> tuple[float, float, float]:
    engine = Engine(
        load_model(ModelSpec(source=source, device="cpu", dtype="float32")), max_batch=4, torch_threads=1
    )
    await engine.start()
    try:
        await chat_latencies(engine, system, 1)  # warm-up
        idle = await chat_latencies(engine, system, CHAT_REQUESTS)
        with tempfile.TemporaryDirectory() as tmp:
            import json

            train_file, eval_file = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
            train_file.write_text("".join(json.dumps(e) + "\n" for e in items_json))
            eval_file.write_text("".join(json.dumps(e) + "\n" for e in items_json[:4]))
            settings = TrainSettings(
                device="cpu", batch_size=BATCH, grad_accum=1, max_steps=max(steps * 3, 20), torch_threads=1,
                max_seq_tokens=MAX_TOKENS, system_prompt=system, persona_names=("Wick",),
                train_file=str(train_file), eval_file=str(eval_file), out_dir=str(Path(tmp) / "out"),
            )  # fmt: skip
            settings_path = Path(tmp) / "settings.json"
            settings_path.write_text(settings.to_json())
            process = TrainingProcess(settings_path, threads=1)
            training = asyncio.Event()
            events = []

            def on_event(event):
                events.append(event)
                if event.get("event") == "progress":
                    training.set()

            run = asyncio.create_task(process.run(on_event))
            await asyncio.wait_for(training.wait(), 300)
            during = await chat_latencies(engine, system, CHAT_REQUESTS)
            still_training = not run.done()
            await process.cancel()
            try:
                await run
            except Exception:  # cancelled on purpose: its outcome is not the point
                pass
        if not still_training:
            print("  (training finished before the chat requests did: the 'during' figure is optimistic)")
        tps = [e["tokens_per_s"] for e in events if e.get("event") == "progress"]
        return statistics.median(idle), statistics.median(during), (tps[-1] if tps else 0.0)
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps instead of {STEPS}")
    parser.add_argument(
        "--steps", type=int, default=0, help="optimizer steps of every part (overrides --quick)"
    )
    parser.add_argument(
        "--source", default="embedded", help="model source (as [model] source); default embedded"
    )
    parser.add_argument("--device", default="cpu", help="device of the memory part's worker; default cpu")
    parser.add_argument("--only", choices=("memory", "trainer", "chat"), help="run one part only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    steps = args.steps or (QUICK_STEPS if args.quick else STEPS)
    threads = max(1, min(2, os.cpu_count() or 1))
    torch.set_num_threads(threads)

    card = load_card(default_card_path())
    examples = corpus(card)
    system = examples[0]["messages"][0]["content"]
    loaded = load_model(ModelSpec(source=args.source, device="cpu", dtype="float32"))
    tokenizer = loaded.tokenizer
    if args.only in (None, "memory"):
        bench_memory(tokenizer, system, source=args.source, device=args.device,
                     steps=args.steps or (QUICK_STEPS // 2 if args.quick else MEMORY_STEPS))  # fmt: skip
    if args.only in (None, "trainer"):
        items, _ = encode_all(tokenizer, examples, MAX_TOKENS)
        base = loaded.model
        share = sum(it.target_tokens for it in items) / sum(len(it.input_ids) for it in items)
        print(f"{len(items)} examples, {BATCH} per batch, {steps} steps, {threads} thread(s); "
              f"{share:.0%} of tokens carry loss")  # fmt: skip
        assert all(label != IGNORE_INDEX for label in [it.labels[-1] for it in items])

        hf = bench_hf_trainer(base, items, tokenizer.pad_token_id, steps)
        ours = bench_ours(base, items, tokenizer.pad_token_id, steps)
        hf_again = bench_hf_trainer(base, items, tokenizer.pad_token_id, steps)  # A-B-A against drifting load
        hf_mean = (hf + hf_again) / 2
        ratio = ours / hf_mean
        print(f"training: ours {ours:.0f} tok/s, HF Trainer {hf:.0f} / {hf_again:.0f} tok/s -> {ratio:.2f}x "
              f"(target >= {TARGET_RATIO:.1f}x) {'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")  # fmt: skip
        del base
    del loaded

    if args.only in (None, "chat"):
        idle, during, worker_tps = asyncio.run(latency_during_training(examples, system, steps, args.source))
        print(f"chat latency (24 new tokens, median of {CHAT_REQUESTS}): idle {idle:.2f}s, during training "
              f"{during:.2f}s -> {during / idle:.2f}x slower; the worker trained at {worker_tps:.0f} tok/s meanwhile")  # fmt: skip


if __name__ == "__main__":
    main()
