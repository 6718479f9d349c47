"""Training that fits in memory: the frozen weights' dtype, the attention kernel and activation checkpointing.

LoRA training of the 135M embedded model (batch 8 x up to 512 tokens) kept 12 GB resident in fp32: ~180 MB of
saved activations per decoder layer, 30 layers, plus what glibc's heap keeps of the freed ones. What brings the
worker under its budget (``TrainSettings.memory_budget_mb``), measured with ``bench/training_bench.py``:

* The frozen base weights in bf16 on a CPU with fast bf16 (AMX or AVX512-BF16; ``frozen_dtype = "auto"``): half
  the weights and activations, and the matmuls run on AMX, which pays for the checkpointing below. The LoRA
  weights, their optimizer state and the loss stay fp32 (peft keeps adapters fp32; :class:`ReplyLoss` computes
  the output head in fp32). Other CPUs keep fp32, where bf16 would be slower.
* torch's fused attention (``attn_implementation = "sdpa"``): no (batch, heads, T, T) score matrices.
* Activation checkpointing, per micro-batch and only as far as needed: :class:`CheckpointPlan` keeps the
  activations of as many decoder layers as the budget allows and recomputes the others in the backward pass
  (non-reentrant ``torch.utils.checkpoint``). A batch of short examples runs without any recomputation.
* Transparent huge pages for large tensors (:data:`WORKER_ENV`, set when the worker is started): fewer page faults
  and, measured, a much smaller peak of glibc's heap than its default layout.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
from torch import nn

from models.training.settings import TrainSettings

log = logging.getLogger(__name__)

# The training worker's environment (models/training/job.py): torch reads it once, at its first allocation, so it
# must be there when the process starts. An entry already in the environment wins.
WORKER_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}
CALIBRATION_TOKENS = 64  # the tiny forward that measures one decoder layer's saved activations per token
# The plan's allowance for what a micro-batch holds besides the saved activations: the recomputed layer and its
# gradients in the backward pass (in layers' worth of activations), and heap fragmentation (a factor).
TRANSIENT_LAYERS = 2.0
FRAGMENTATION = 1.5
MIB = 1 << 20


def frozen_dtype(settings: TrainSettings, device: torch.device) -> str:
    """The dtype to load the frozen base weights in: bf16 on CUDA and on CPUs with fast bf16, else fp32."""
    if device.type != "cpu":
        return "bfloat16"
    if settings.frozen_dtype != "auto":
        return settings.frozen_dtype
    from models.loader import cpu_has_fast_bf16

    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def load_for_training(settings: TrainSettings, device: torch.device) -> Any:
    """The base model and tokenizer (a ``LoadedModel``) as training wants them: dtype and attention set."""
    from models.loader import ModelSpec, load_model

    loaded = load_model(
        ModelSpec(source=settings.source, device=str(device), dtype=frozen_dtype(settings, device))
    )
    use_attention(loaded.model, settings.attn_implementation)
    return loaded


def use_attention(model: Any, name: str) -> None:
    """Switch ``model`` to the attention kernel ``name`` ("sdpa", "eager", ...); "" leaves it as loaded."""
    if not name:
        return
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(name)
    else:  # older transformers: the config field is what the attention layers read
        model.config._attn_implementation = name


def plan_checkpointing(model: Any, settings: TrainSettings) -> CheckpointPlan | None:
    """Enable activation checkpointing on ``model`` (a PeftModel or a bare model) as ``settings.checkpointing`` says.

    "off": none. "all": every decoder layer recomputed. "auto": a :class:`CheckpointPlan` chooses, for each
    micro-batch, how many layers keep their activations within ``settings.memory_budget_mb``. Returns that plan.
    """
    mode = settings.checkpointing
    if mode not in ("off", "all", "auto"):
        raise ValueError(f"checkpointing must be off, all or auto, not {mode!r}")
    if mode == "off":
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    enable = getattr(base, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:  # transformers < 5
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    plan = CheckpointPlan(model, settings.memory_budget_mb * MIB, everything=mode == "all")
    from models.loader import return_free_memory

    return_free_memory()  # the training's heap starts from what is live, not from loading's and eval's peaks
    return plan


class CheckpointPlan:
    """Before each training forward, choose which decoder layers recompute their activations in the backward pass.

    The last ``keep`` layers keep their activations (the backward pass frees them first), the others are
    checkpointed; ``keep`` is the largest number whose estimated peak fits the budget:
    resident now + tokens x (kept layers' activations + checkpointed layers' inputs + the transient), times the
    fragmentation allowance. A layer's activations per token are measured once, at construction.
    """

    def __init__(self, model: Any, budget_bytes: int, *, everything: bool = False) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder: nn.Module = base.get_decoder()
        self.layers = [layer for layer in self.decoder.modules() if hasattr(layer, "gradient_checkpointing")]
        self.layers = [layer for layer in self.layers if layer is not self.decoder]
        if not self.layers:
            raise ValueError(f"{type(base).__name__} has no layers that can be checkpointed")
        self.budget = budget_bytes
        self.everything = everything
        config = base.config
        hidden_dtype = next(p.dtype for p in self.decoder.parameters() if p.is_floating_point())
        self.input_per_token = int(config.hidden_size) * torch.finfo(hidden_dtype).bits // 8
        self.layer_per_token = 0 if everything else self._measure_layer(base)
        self.last: tuple[int, int] | None = None  # (tokens, layers checkpointed) of the latest training forward
        self._hook = self.decoder.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    def checkpointed(self, tokens: int, resident: int) -> int:
        """How many layers to checkpoint for a micro-batch of ``tokens`` when ``resident`` bytes are in use."""
        count = len(self.layers)
        if self.everything:
            return count
        for keep in range(count, 0, -1):
            per_token = (
                keep * self.layer_per_token
                + (count - keep) * self.input_per_token
                + TRANSIENT_LAYERS * self.layer_per_token
            )
            if resident + FRAGMENTATION * tokens * per_token <= self.budget:
                return count - keep
        return count

    def remove(self) -> None:
        """Stop planning and checkpoint nothing (the model runs as it was loaded)."""
        self._hook.remove()
        for layer in self.layers:
            layer.gradient_checkpointing = False

    def _before_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"][..., 0]
        tokens = int(ids.numel())
        count = self.checkpointed(tokens, resident_bytes())
        for index, layer in enumerate(self.layers):
            layer.gradient_checkpointing = index < count
        if self.last is None or self.last[1] != count:
            log.info("checkpointing %d of %d layers for %d tokens", count, len(self.layers), tokens)
        self.last = (tokens, count)

    def _measure_layer(self, base: Any) -> int:
        """Bytes per token that one decoder layer saves for the backward pass (parameters aside), in train mode."""
        params = {p.untyped_storage().data_ptr() for p in base.parameters()}
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        device = next(base.parameters()).device
        ids = torch.zeros((1, CALIBRATION_TOKENS), dtype=torch.long, device=device)
        was_training = self.decoder.training
        flags = [layer.gradient_checkpointing for layer in self.layers]
        for layer in self.layers:
            layer.gradient_checkpointing = False
        self.decoder.train()
        try:
            with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                self.decoder(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        finally:
            self.decoder.train(was_training)
            for layer, flag in zip(self.layers, flags, strict=True):
                layer.gradient_checkpointing = flag
        return max(self.input_per_token, sum(seen.values()) // (CALIBRATION_TOKENS * len(self.layers)))


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere the peak so far, an upper bound)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class BernoulliDropout(nn.Module):
    """Dropout with the same law as ``nn.Dropout`` (keep with probability 1 - p, scale by 1 / (1 - p)), ~4x faster
    on a CPU: the mask comes from 15-bit slices of bulk 64-bit random words instead of one Bernoulli draw per
    element. Measured, torch's CPU dropout on the LoRA inputs was a quarter of a training step's time."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), not {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return _Dropout.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask, True with probability 1 - p (to 1/32768), from the default generator."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_()  # 63 random bits each
    lanes = words.view(torch.int16)[:count].view(shape)
    return (lanes & 0x7FFF) >= round(p * 0x8000)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return torch.where(keep, x * ctx.scale, 0.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0.0), None


def faster_dropout(model: nn.Module) -> int:
    """Swap the LoRA layers' ``nn.Dropout`` for :class:`BernoulliDropout` (CPU only); returns how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout and dropout.p > 0:
                replacement = BernoulliDropout(dropout.p)
                replacement.train(dropout.training)
                dropouts[name] = replacement
                swapped += 1
    return swapped
