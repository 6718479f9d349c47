"""Training that fits in memory, and no slower: frozen weights, the LoRA path, row chunks and checkpointing.

LoRA training of the embedded 135M model (4 packed examples of ~512 tokens per micro-batch) kept ~5 GB resident:
each decoder layer saves ~25-30 KB per token for the backward pass, 30 layers, and glibc's heap holds about as
much again in freed blocks it cannot reuse. What brings the worker within ``TrainSettings.memory_budget_mb``, measured
with ``bench/training_bench.py`` (the figures are in docs/training.md):

* Frozen weights in the dtype training computes in (``frozen_dtype = "auto"``, :func:`lean_autocast`): under bf16
  autocast on a CPU (AMX or AVX512-BF16), the decoder's matmul weights are stored in bf16 instead of fp32 copies
  cast to bf16 at every call. The same numbers: embeddings, norms, the residual stream, the LoRA weights and the
  loss stay fp32.
* No fp32 copies of LoRA inputs (:func:`lean_lora_inputs`): peft casts each LoRA layer's input to the adapter's
  fp32, which the LoRA matmul under autocast casts straight back to bf16; skipped under autocast (the same numbers).
* Row chunks (:class:`MemoryPlan`): the activations of a micro-batch grow with its rows, so it is run as chunks of
  as many rows as the budget allows, gradients accumulated: the same sum, ~5% slower per halving, no recomputation.
  Only when a single row does not fit (a long ``max_seq_tokens``) are the decoder layers checkpointed as well
  (non-reentrant ``torch.utils.checkpoint``, ~30% slower on a CPU).
* torch's fused attention (``attention = ""`` means "sdpa" when training): no (rows, heads, T, T) score matrices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from models.training.settings import TrainSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
MIB = 1 << 20
# A tiny forward measures what the decoder saves for the backward pass, per token.
CALIBRATION_TOKENS = 64
# What the plan adds to the activations it measures: the Python runtime, torch and the tokenizer (measured ~450 MB
# besides the weights), glibc's heap fragmentation (measured 2-2.2x the saved activations, transients included),
# and the output head over at most HEAD_ROWS targets (logits, their log-softmax and its gradient, fp32).
RUNTIME_BYTES = 450 * MIB
FRAGMENTATION = 2.3
HEAD_ROWS = 512  # targets per output-head chunk (models/training/trainer.py: ReplyLoss)


# -- loading -----------------------------------------------------------------------------------------------------


def load_for_training(settings: TrainSettings, device: torch.device, mixed_precision: str = "no") -> Any:
    """The base model and its tokenizer (a ``LoadedModel``) as training wants them: the attention kernel, and under
    bf16 autocast on a CPU (``frozen_dtype = "auto"``) the matmul weights stored in bf16 (:func:`lean_autocast`)."""
    from models.loader import ModelSpec, load_model

    dtype = "float32" if device.type == "cpu" else "bfloat16"  # CUDA trains on a bf16 base, as it always did
    loaded = load_model(ModelSpec(source=settings.source, device=str(device), dtype=dtype))
    use_attention(loaded.model, settings.attention or "sdpa")
    if settings.frozen_dtype not in ("auto", "float32"):
        raise ValueError(f"frozen_dtype must be auto or float32, not {settings.frozen_dtype!r}")
    if device.type == "cpu" and mixed_precision == "bf16" and settings.frozen_dtype == "auto":
        lean_autocast(loaded.model, torch.bfloat16)
    return loaded


def lean_autocast(model: Any, dtype: torch.dtype) -> int:
    """Store the decoder's frozen ``nn.Linear`` weights in ``dtype`` (as :class:`FrozenLinear`). Training under
    ``dtype`` autocast computes the very same numbers (autocast casts fp32 weights to ``dtype`` at every matmul
    anyway), without fp32 copies and a cast of every weight on every call. Embeddings, norms and the output head
    keep fp32, so the residual stream, and the gradients summed into it, stay fp32. Returns the layers converted."""
    converted = 0
    for module in model.get_decoder().modules():
        if type(module) is nn.Linear and not module.weight.requires_grad:
            module.to(dtype)
            module.__class__ = FrozenLinear
            converted += 1
    return converted


class FrozenLinear(nn.Linear):
    """A frozen ``nn.Linear`` whose weights are stored below the activations' precision. Under autocast it is a
    plain ``nn.Linear``; outside (evaluation, sampling) it computes in the weights' dtype, as autocast would, and
    returns its input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype or torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        return super().forward(x.to(self.weight.dtype)).to(x.dtype)


def use_attention(model: Any, name: str) -> None:
    """Switch ``model`` to the attention kernel ``name`` ("sdpa", "eager", ...); "" leaves it as loaded."""
    if not name:
        return
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(name)
    else:  # older transformers: the config field is what the attention layers read
        model.config._attn_implementation = name


# -- the LoRA inputs ---------------------------------------------------------------------------------------------


def lean_lora_inputs(model: nn.Module) -> int:
    """Under autocast, let peft's LoRA layers take their input as it comes instead of copying it to the adapter's
    fp32 (the LoRA matmul casts it straight back: the same numbers, one copy less per layer, and q/k/v share one
    saved input again). Outside autocast (eval, sampling) the cast stays. Returns the layers changed."""
    changed = 0
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "_cast_input_dtype"):
            if not getattr(module, "_lean_inputs", False):
                module.register_forward_pre_hook(_cast_inputs_outside_autocast)
                setattr(module, "_lean_inputs", True)  # noqa: B010  (nn.Module types attributes as tensors)
                changed += 1
    return changed


def _cast_inputs_outside_autocast(module: nn.Module, args: tuple[Any, ...]) -> None:
    x = args[0] if args else None
    autocast = isinstance(x, torch.Tensor) and torch.is_autocast_enabled(x.device.type)
    setattr(module, "cast_input_dtype_enabled", not autocast)  # noqa: B010


# -- the plan ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """Rows of a micro-batch that run forward and backward together; ``checkpoint``: recompute the layers."""

    rows: list[Any]
    checkpoint: bool


class MemoryPlan:
    """How each micro-batch runs within the budget: in chunks of rows, with the decoder layers checkpointed only
    when one row does not fit otherwise. Deterministic: it depends on the model, the settings and the batch's
    width, never on what happens to be resident, so a resumed run takes the very steps of an uninterrupted one.

    Estimated peak of a chunk = weights + RUNTIME_BYTES + FRAGMENTATION x rows x width x (saved bytes per token)
    + the output head's chunk. Saved bytes per token are measured once, on a tiny forward in the training dtype.
    """

    def __init__(
        self,
        model: Any,
        settings: TrainSettings,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if settings.checkpointing not in ("auto", "all", "off"):
            raise ValueError(f"checkpointing must be auto, all or off, not {settings.checkpointing!r}")
        self.mode = settings.checkpointing
        # The budget bounds resident memory, which is host memory only on a CPU.
        self.budget = settings.memory_budget_mb * MIB if device.type == "cpu" else 0
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder: nn.Module = base.get_decoder()
        self.layers = [m for m in self.decoder.modules() if hasattr(m, "gradient_checkpointing")]
        self.layers = [m for m in self.layers if m is not self.decoder]
        if self.mode != "off":
            if not self.layers:
                raise ValueError(f"{type(base).__name__} has no layers that can be checkpointed")
            enable = getattr(base, "activation_checkpointing_enable", None)
            if enable is not None:
                enable({"use_reentrant": False})
            else:  # transformers < 5
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.checkpoint(self.mode == "all")
        config = base.config
        self.vocab = int(config.vocab_size)
        self.fixed = sum(p.numel() * p.element_size() for p in base.parameters()) + RUNTIME_BYTES
        hidden = next(p for p in self.decoder.parameters() if p.is_floating_point())
        hidden_bytes = int(config.hidden_size) * hidden.element_size()
        self.plain_per_token = self._measure(device, autocast_dtype) if self.budget else 0
        # Checkpointed: each layer keeps its input; the layer being recomputed holds all of its own activations.
        self.checkpointed_per_token = len(self.layers) * hidden_bytes + self.plain_per_token // max(
            1, len(self.layers)
        )

    def chunks(self, rows: Sequence[T], width: int) -> list[Chunk]:
        """``rows`` (one micro-batch, padded to ``width`` tokens) as the chunks to run."""
        if not rows:
            return []
        size, checkpoint = self.rows_per_chunk(width, len(rows))
        return [Chunk(list(rows[i : i + size]), checkpoint) for i in range(0, len(rows), size)]

    def rows_per_chunk(self, width: int, rows: int) -> tuple[int, bool]:
        """(rows per chunk, checkpointed) for a micro-batch of ``rows`` rows of ``width`` tokens."""
        if not self.budget:
            return rows, self.mode == "all"
        options = {"off": (False,), "all": (True,), "auto": (False, True)}[self.mode]
        for checkpoint in options:
            per_token = self.checkpointed_per_token if checkpoint else self.plain_per_token
            for size in range(rows, 0, -1):
                if self.estimate(size * width, per_token) <= self.budget:
                    return size, checkpoint
        return 1, options[-1]

    def estimate(self, tokens: int, per_token: int) -> float:
        """Estimated peak resident bytes of a chunk of ``tokens`` tokens."""
        head = 3 * min(HEAD_ROWS, tokens) * self.vocab * 4
        return self.fixed + FRAGMENTATION * tokens * per_token + head

    def checkpoint(self, on: bool) -> None:
        """Recompute (or not) the decoder layers' activations in the backward pass of the next forward."""
        for layer in self.layers:
            layer.gradient_checkpointing = on and self.mode != "off"

    def _measure(self, device: torch.device, autocast_dtype: torch.dtype | None) -> int:
        """Bytes the decoder saves for the backward pass per token (parameters aside), no layer checkpointed."""
        params = {p.untyped_storage().data_ptr() for p in self.decoder.parameters()}
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        ids = torch.zeros((1, CALIBRATION_TOKENS), dtype=torch.long, device=device)
        was_training = self.decoder.training
        flags = [layer.gradient_checkpointing for layer in self.layers]
        self.checkpoint(False)
        self.decoder.train()
        autocast = torch.autocast(
            device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        )
        try:
            with (
                torch.random.fork_rng(devices=[]),
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
                autocast,
            ):
                self.decoder(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        finally:
            self.decoder.train(was_training)
            for layer, flag in zip(self.layers, flags, strict=True):
                layer.gradient_checkpointing = flag
        return sum(seen.values()) // CALIBRATION_TOKENS
