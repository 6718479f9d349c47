"""Training speed against a stock Hugging Face Trainer, and chat latency while a retrain runs.

Run: ``python -m bench.training_bench`` (``--quick`` for fewer steps). Both trainers fit the same LoRA (r=8,
q/k/v/o) on the same encoded examples, same batch size, steps and threads, one after the other in this process;
throughput counts real (non-padding) tokens. Then the engine answers a few chat requests idle and again while the
real training worker runs in its subprocess. The machine is shared: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models.dataset import DatasetLimits, build_dataset
from models.engine import Engine, GenerationRequest
from models.loader import ModelSpec, load_model
from models.persona import default_card_path, load_card
from models.prompt import PromptBudget
from models.training.data import IGNORE_INDEX, collate, encode_all
from models.training.job import TrainingProcess
from models.training.settings import TrainSettings
from models.training.trainer import ReplyLoss, seed_everything, train

BATCH = 8
STEPS = 12
QUICK_STEPS = 4
MAX_TOKENS = 384
CHAT_REQUESTS = 5
TARGET_RATIO = 1.0
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
    items_json: list[dict], system: str, steps: int
) -> tuple[float, float, float]:
    engine = Engine(load_model(ModelSpec(device="cpu", dtype="float32")), max_batch=4, torch_threads=1)
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps instead of {STEPS}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    steps = QUICK_STEPS if args.quick else STEPS
    threads = max(1, min(2, os.cpu_count() or 1))
    torch.set_num_threads(threads)

    card = load_card(default_card_path())
    examples = corpus(card)
    loaded = load_model(ModelSpec(device="cpu", dtype="float32"))
    tokenizer = loaded.tokenizer
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
    del base, loaded

    system = examples[0]["messages"][0]["content"]
    idle, during, worker_tps = asyncio.run(latency_during_training(examples, system, steps))
    print(f"chat latency (24 new tokens, median of {CHAT_REQUESTS}): idle {idle:.2f}s, during training "
          f"{during:.2f}s -> {during / idle:.2f}x slower; the worker trained at {worker_tps:.0f} tok/s meanwhile")  # fmt: skip


if __name__ == "__main__":
    main()
