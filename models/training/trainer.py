"""LoRA supervised fine-tuning: the loop, the held-out loss and the persona check.

The loss is computed only where it counts: the decoder runs over the whole sequence, but the output head (a
576 x 49k matrix for SmolLM2, a fifth of the model's compute) and the softmax run only at target positions, the
character's reply. That, plus length-grouped batches, is why this loop beats a stock Trainer on the same data.

A run can be stopped and resumed: it checkpoints at a bounded interval (`models/training/checkpoint.py`), and a run
started from a checkpoint restores the weights, optimizer, schedule and random generators, then skips the steps
already done. The steps are fixed up front from the seed, so the resumed run ends where an uninterrupted one would.

Memory (`models/training/memory.py`): each micro-batch runs as chunks of as many rows as the worker's memory budget
allows (gradients accumulated: the same sum), the decoder layers are checkpointed only when one row does not fit,
and the output head runs in chunks of target positions.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpoint_fn

from models.loader import return_free_memory
from models.training import checkpoint
from models.training.data import IGNORE_INDEX, Batch, Encoded, collate, length_grouped_batches
from models.training.memory import HEAD_ROWS, MemoryPlan, lean_lora_inputs
from models.training.settings import TrainSettings

Report = Callable[[dict[str, Any]], None]
EVAL_BATCH_SIZE = 8
MAX_EPOCHS = 30  # how often `min_steps` may make a run go over a small dataset
PROGRESS_EVERY_S = 2.0  # at most one progress line per this many seconds (plus the first and the last step)


def default_threads() -> int:
    """Half the cores, at least one: on a 2-core machine the trainer takes one and leaves one to the chat."""
    return max(1, (os.cpu_count() or 2) // 2)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class ReplyLoss(nn.Module):
    """Summed cross-entropy over target tokens, with the output head applied to those positions only.

    Never (rows, T, vocabulary) logits: the head runs on the target positions, in chunks of at most ``HEAD_ROWS``
    without gradients (eval) and, when ``head_rows`` is set, in checkpointed chunks of that many with them. With
    weights below fp32 and no autocast (eval of a bf16 base), the head runs in fp32, so the loss is not the loss of
    rounded logits.
    """

    def __init__(self, model: nn.Module, head_rows: int = 0) -> None:
        super().__init__()
        # A PeftModel (LoRA layers injected into the base in place) or a bare model: Hugging Face methods,
        # duck-typed (nn.Module's attribute lookup types them as Tensor | Module).
        self.model: Any = model
        self.head_rows = head_rows

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state  # (B,T,C)
        targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted from position t
        keep = targets != IGNORE_INDEX
        picked = hidden[:, :-1][keep]  # (N, C)
        wanted = targets[keep]
        head = base.get_output_embeddings()
        weight, bias = head.weight, head.bias
        if weight.dtype != torch.float32 and not torch.is_autocast_enabled(picked.device.type):
            weight, picked = weight.float(), picked.float()
            bias = bias.float() if bias is not None else None
        grad = torch.is_grad_enabled()
        rows = HEAD_ROWS if not grad else self.head_rows
        if rows <= 0 or picked.shape[0] <= rows:
            return _head_loss(picked, wanted, weight, bias)
        total = torch.zeros((), device=picked.device)
        for start in range(0, picked.shape[0], rows):
            part = (picked[start : start + rows], wanted[start : start + rows], weight, bias)
            total = total + (
                checkpoint_fn(_head_loss, *part, use_reentrant=False) if grad else _head_loss(*part)
            )
        return total


def _head_loss(
    picked: torch.Tensor, wanted: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    logits = nn.functional.linear(picked, weight, bias).float()  # (N, V)
    return nn.functional.cross_entropy(logits, wanted, reduction="sum")


def lr_factor(step: int, *, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainStats:
    steps: int
    examples: int
    tokens: int
    target_tokens: int
    seconds: float
    final_loss: float
    resumed_from: int = 0  # the step the run started after (0: from the start)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def plan_steps(settings: TrainSettings, examples: int, processes: int = 1) -> tuple[int, int]:
    """(optimizer steps, epochs) for ``examples`` examples."""
    batches_per_epoch = max(1, math.ceil(examples / settings.batch_size / processes))
    if settings.max_steps > 0:
        return settings.max_steps, math.ceil(settings.max_steps * settings.grad_accum / batches_per_epoch)
    epochs = settings.epochs
    if settings.min_steps > 0:  # a small dataset (a card alone) is gone over more often, up to MAX_EPOCHS
        per_epoch = batches_per_epoch / settings.grad_accum
        epochs = min(max(epochs, math.ceil(settings.min_steps / per_epoch)), max(MAX_EPOCHS, epochs))
    return math.ceil(batches_per_epoch * epochs / settings.grad_accum), epochs


def train(
    loss_module: nn.Module,
    items: Sequence[Encoded],
    settings: TrainSettings,
    *,
    pad_id: int,
    device: torch.device,
    report: Report,
    accelerator: Any = None,
) -> TrainStats:
    """Run the optimisation; ``report`` gets a progress dict at most every PROGRESS_EVERY_S seconds.

    With ``settings.checkpoint_dir``, a checkpoint is saved at most every ``checkpoint_every_s`` seconds and after
    the last step (each reported as ``{"event": "checkpoint", ...}``); with ``settings.resume_from``, the run starts
    from that checkpoint (reported as ``{"event": "resume", ...}``).
    """
    params = [p for p in loss_module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    processes = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    main = accelerator is None or accelerator.is_main_process
    total_steps, epochs = plan_steps(settings, len(items), processes)
    warmup = round(total_steps * settings.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total_steps, warmup=warmup, min_ratio=settings.min_lr_ratio)
    )
    # Memory (models/training/memory.py): each micro-batch runs as chunks of rows that fit the budget.
    lean_lora_inputs(loss_module)
    plan = MemoryPlan(
        getattr(loss_module, "model", loss_module), settings, device, _autocast_dtype(accelerator)
    )
    if plan.budget and isinstance(loss_module, ReplyLoss):
        loss_module.head_rows = HEAD_ROWS
    done_before = _Counters()
    if settings.resume_from:  # before `prepare`: every process restores the same state
        done_before = _restore(checkpoint.load(settings.resume_from), loss_module, optimizer, scheduler)
        report({"event": "resume", "step": done_before.step, "total_steps": total_steps})
    model = loss_module
    if accelerator is not None:
        model, optimizer = accelerator.prepare(loss_module, optimizer)

    # 1. The micro-batches of every optimizer step, fixed up front so each step's loss is normalised by its
    #    own number of target tokens (and so a resumed run takes exactly the steps the stopped one had left).
    micro: list[list[int]] = []
    for epoch in range(epochs):
        epoch_batches = length_grouped_batches(items, settings.batch_size, seed=settings.seed, epoch=epoch)
        micro.extend(epoch_batches[rank::processes])
    steps = [micro[i : i + settings.grad_accum] for i in range(0, len(micro), settings.grad_accum)][
        :total_steps
    ]
    total_steps = len(steps)

    # 2. The steps not done yet.
    model.train()
    started = last_checkpoint = time.perf_counter()
    last_report = 0.0
    run_tokens = 0
    tokens, target_tokens, loss_value = done_before.tokens, done_before.target_tokens, done_before.loss
    for step in range(done_before.step, total_steps):
        groups = [[items[i] for i in ids] for ids in steps[step]]
        step_targets = sum(item.target_tokens for group in groups for item in group)
        chunks = [c for g in groups for c in plan.chunks(g, max(len(item.input_ids) for item in g))]
        step_loss = 0.0
        for index, chunk in enumerate(chunks):
            batch = collate(chunk.rows, pad_id)
            plan.checkpoint(chunk.checkpoint)
            loss = _forward(model, batch, device, accelerator) / step_targets
            if accelerator is not None and index < len(chunks) - 1:
                with accelerator.no_sync(model):
                    accelerator.backward(loss)
            elif accelerator is not None:
                accelerator.backward(loss)
            else:
                loss.backward()
            step_loss += float(loss.detach())
            run_tokens += batch.tokens
            tokens += batch.tokens
            target_tokens += batch.target_tokens
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = step_loss

        now = time.perf_counter()
        elapsed = now - started
        done = step + 1
        if step == done_before.step or done == total_steps or now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            report(
                {
                    "event": "progress",
                    "step": done,
                    "total_steps": total_steps,
                    "loss": round(loss_value, 4),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s": round(run_tokens / elapsed, 1) if elapsed > 0 else 0.0,
                    "elapsed_s": round(elapsed, 1),
                    "eta_s": round(elapsed / (done - done_before.step) * (total_steps - done), 1),
                }
            )
        due = done == total_steps or now - last_checkpoint >= settings.checkpoint_every_s
        if settings.checkpoint_dir and due and main:
            counters = _Counters(done, tokens, target_tokens, loss_value, done_before.seconds + elapsed)
            path = checkpoint.save(
                settings.checkpoint_dir,
                done,
                _state(counters, loss_module, optimizer, scheduler),
                {"total_steps": total_steps, "loss": round(loss_value, 4)},
            )
            last_checkpoint = time.perf_counter()
            report({"event": "checkpoint", "step": done, "total_steps": total_steps, "path": str(path)})
    stats = TrainStats(
        steps=total_steps,
        examples=len(items),
        tokens=tokens,
        target_tokens=target_tokens,
        seconds=done_before.seconds + time.perf_counter() - started,
        final_loss=loss_value,
        resumed_from=done_before.step,
    )
    plan.checkpoint(False)
    return_free_memory()  # what the evaluation after training allocates starts from what is live, not the peak
    return stats


@dataclass(frozen=True)
class _Counters:
    """How far a run got: what a checkpoint carries besides the tensors."""

    step: int = 0
    tokens: int = 0
    target_tokens: int = 0
    loss: float = float("nan")
    seconds: float = 0.0


def _state(counters: _Counters, loss_module: nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly: trainable weights, optimizer, schedule, generators."""
    return {
        **dataclasses.asdict(counters),
        "trainable": {n: p.detach().cpu() for n, p in loss_module.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python_rng": random.getstate(),
    }


def _restore(state: dict[str, Any], loss_module: nn.Module, optimizer: Any, scheduler: Any) -> _Counters:
    trainable = {n: p for n, p in loss_module.named_parameters() if p.requires_grad}
    saved: dict[str, torch.Tensor] = state["trainable"]
    if set(saved) != set(trainable):
        raise ValueError(
            "the checkpoint does not match this model's trainable weights (were the settings changed?)"
        )
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(saved[name].to(param.device, param.dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    return _Counters(
        step=int(state["step"]),
        tokens=int(state["tokens"]),
        target_tokens=int(state["target_tokens"]),
        loss=float(state["loss"]),
        seconds=float(state["seconds"]),
    )


def _autocast_dtype(accelerator: Any) -> torch.dtype | None:
    """The dtype the training forward autocasts to (accelerate's mixed precision), None without autocast."""
    precision = getattr(accelerator, "mixed_precision", "no") if accelerator is not None else "no"
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(precision))


def _forward(model: nn.Module, batch: Batch, device: torch.device, accelerator: Any) -> torch.Tensor:
    ids = batch.input_ids.to(device)
    mask = batch.attention_mask.to(device)
    labels = batch.labels.to(device)
    if accelerator is not None:
        with accelerator.autocast():
            return model(ids, mask, labels)
    return model(ids, mask, labels)


@torch.no_grad()
def eval_loss(
    loss_module: nn.Module, items: Sequence[Encoded], *, pad_id: int, device: torch.device
) -> float:
    """Mean cross-entropy per target token over ``items`` (the same number for any batch size)."""
    if not items:
        raise ValueError("the eval set is empty")
    was_training = loss_module.training
    loss_module.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    total = 0.0
    count = 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    for start in range(0, len(order), EVAL_BATCH_SIZE):
        batch = collate([items[i] for i in order[start : start + EVAL_BATCH_SIZE]], pad_id)
        with autocast:
            total += float(
                loss_module(
                    batch.input_ids.to(device), batch.attention_mask.to(device), batch.labels.to(device)
                )
            )
        count += batch.target_tokens
    loss_module.train(was_training)
    return total / count


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
