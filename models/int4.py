"""Low-bit copies of the weights for small batches on a CPU, next to the bf16 weights big batches use.

Why: decoding one sequence reads every weight once per token and does almost no arithmetic with it, so its speed is
the speed of memory. bf16 weights (270 MB for the embedded model) cost ~23 ms a token on the 2-core machine; the
layers in 4 bits (groups of 32 with a scale and a zero point, which is exactly how the embedded GGUF stores them as
Q4_1) are a quarter of that. The LM head gets 8 bits (the GGUF's own is Q8_0, and it decides every token). A batch,
on the other hand, is bound by arithmetic, where bf16 on AMX is several times faster than unpacking low-bit
weights: each layer keeps both and picks by the number of rows in the call. For the lean decode step
(models/engine/lean.py) q/k/v and gate/up also get one fused 4-bit copy each: fewer, larger calls.

Quality: for the embedded model the 4-bit weights are the file's own (Q4_1 blocks of 32), so a single stream runs
the model as published; bf16 batches run its dequantized weights. Greedy output alone and in a batch can therefore
differ in bf16, as bf16 rounding already makes it; with ``dtype = "float32"`` no low-bit path is added.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

GROUP_SIZE = 32  # GGUF Q4_0/Q4_1 block size; must divide in_features
# Calls with at most this many rows (tokens x batch) take the 4-bit path. Measured on the 2-core machine, a whole
# decode step of the embedded model: 1 row 18 ms (bf16 39 ms), 8 rows 40 ms (53), 12 rows 52 ms (56), 16 rows even,
# 32 rows 114 ms (95): past a dozen rows the arithmetic, where bf16 on AMX is faster, outweighs reading the weights.
MAX_INT4_ROWS = 12
INNER_K_TILES = 2  # the packing the CPU kernel expects
# The 8-bit head gains ~1 ms a step up to 4 rows and loses from 12 on (measured on the 2-core machine).
HEAD_INT8_ROWS = 4


def int4_supported(device: torch.device) -> bool:
    """Whether this torch has the CPU 4-bit matmul (torch >= 2.5) and ``device`` is a CPU."""
    return (
        device.type == "cpu"
        and hasattr(torch, "_weight_int4pack_mm_for_cpu")
        and hasattr(torch, "_convert_weight_to_int4pack_for_cpu")
    )


def quantize_int4(weight: torch.Tensor, group: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed weight, scales and zeros) of a (N, K) weight, asymmetric 4-bit per ``group`` inputs.

    Each group is stored as ``w = (q - 8) * scale + zero`` with ``q`` in 0..15, the kernel's convention; a GGUF Q4_1
    block (``w = q * d + m``) maps onto it exactly with ``scale = d`` and ``zero = m + 8 d``.
    """
    n, k = weight.shape
    if k % group:
        raise ValueError(f"in_features {k} is not a multiple of the group size {group}")
    w = weight.detach().float().reshape(n, k // group, group)
    low, high = w.amin(-1), w.amax(-1)
    scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).reshape(n, k)
    zero = low + 8 * scale
    scales_and_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(weight.dtype).contiguous()  # (K/g, N, 2)
    packed = torch._convert_weight_to_int4pack_for_cpu(q, INNER_K_TILES)
    return packed, scales_and_zeros


def int4_matmul(x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` for a weight quantized by :func:`quantize_int4`; ``x`` is (..., K), the result (..., N)."""
    out = torch._weight_int4pack_mm_for_cpu(x.reshape(-1, x.shape[-1]), packed, GROUP_SIZE, scales_and_zeros)
    return out.reshape(*x.shape[:-1], -1)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, per-output-channel scales) of a (N, K) weight: ``w = q * scale``, ``q`` in -127..127."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)  # (N,)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.to(weight.dtype)


class TwoPathLinear(torch.nn.Module):
    """``nn.Linear`` (no bias) that runs calls of few rows on a low-bit copy of its weight and the rest in bf16.

    ``bits=4``: groups of :data:`GROUP_SIZE` with a scale and a zero point (the layers). ``bits=8``: one scale per
    output (the LM head, whose GGUF weights are 8-bit and which decides every token: it keeps more precision).
    """

    in_features: int
    out_features: int
    max_rows: int
    bits: int
    weight: torch.nn.Parameter
    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, linear: torch.nn.Linear, *, max_rows: int = MAX_INT4_ROWS, bits: int = 4) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("TwoPathLinear takes bias-free layers only")
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # kept as is: batches, and anything that reads .weight, see the original
        self.max_rows = max_rows
        self.bits = bits
        packed, scales = quantize_int4(linear.weight) if bits == 4 else quantize_int8(linear.weight)
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_and_zeros", scales, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > self.max_rows or x.dtype != self.scales_and_zeros.dtype:
            return torch.nn.functional.linear(x, self.weight)
        if self.bits == 4:
            return int4_matmul(x, self.packed, self.scales_and_zeros)
        out = torch._weight_int8pack_mm(x.reshape(rows, self.in_features), self.packed, self.scales_and_zeros)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"int{self.bits} up to {self.max_rows} rows"
        )


class FusedInt4(torch.nn.Module):
    """Projections of the same input (q, k, v; gate, up) as one 4-bit matmul: fewer, larger calls for the lean
    decode step (models/engine/lean.py). The 4-bit values are the same as the separate layers' (groups run along
    the input, so stacking outputs changes nothing). Only a 4-bit copy: larger calls use the separate layers.
    """

    max_rows: int
    splits: list[int]
    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, linears: list[torch.nn.Linear], *, max_rows: int = MAX_INT4_ROWS) -> None:
        super().__init__()
        self.max_rows = max_rows
        self.splits = [layer.out_features for layer in linears]
        packed, scales_and_zeros = quantize_int4(torch.cat([layer.weight for layer in linears]))
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_and_zeros", scales_and_zeros, persistent=False)

    def applies(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is small enough (and of the right dtype) for the 4-bit path."""
        return x.numel() // x.shape[-1] <= self.max_rows and x.dtype == self.scales_and_zeros.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All the projections side by side, in the order given (``splits`` are their widths)."""
        return int4_matmul(x, self.packed, self.scales_and_zeros)


def _fuse(parent: Any, names: tuple[str, ...], max_rows: int) -> FusedInt4 | None:
    """A fused 4-bit copy of ``parent``'s layers ``names`` when all are convertible and share their input width."""
    linears = [getattr(parent, name, None) for name in names]
    if not all(layer is not None and _convertible(layer) for layer in linears):
        return None
    if len({layer.in_features for layer in linears}) != 1:  # type: ignore[union-attr]
        return None
    return FusedInt4(linears, max_rows=max_rows)  # type: ignore[arg-type]


def add_int4_path(model: Any, *, max_rows: int = MAX_INT4_ROWS, head_rows: int | None = None) -> int:
    """Give every bias-free bf16 linear layer of the decoder blocks a 4-bit path, and the LM head an 8-bit one;
    returns how many layers were converted. Layers whose width does not fit the group size stay as they are.
    """
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        return 0
    converted = 0
    for block in layers:
        attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
        qkv = _fuse(attn, ("q_proj", "k_proj", "v_proj"), max_rows) if attn is not None else None
        gate_up = _fuse(mlp, ("gate_proj", "up_proj"), max_rows) if mlp is not None else None
        for parent in block.modules():
            for name, child in list(parent.named_children()):
                if _convertible(child):
                    setattr(parent, name, TwoPathLinear(child, max_rows=max_rows))
                    converted += 1
        if qkv is not None:
            attn.qkv_int4 = qkv  # type: ignore[union-attr]
        if gate_up is not None:
            mlp.gate_up_int4 = gate_up  # type: ignore[union-attr]
    head = getattr(model, "lm_head", None)
    if head is not None and _convertible(head) and hasattr(torch, "_weight_int8pack_mm"):
        # Tied to the embeddings: the module is replaced, the shared weight is not.
        limit = HEAD_INT8_ROWS if head_rows is None else head_rows
        model.lm_head = TwoPathLinear(head, max_rows=limit, bits=8)
        converted += 1
    return converted


def _convertible(module: Any) -> bool:
    return (
        type(module) is torch.nn.Linear
        and module.bias is None
        and module.in_features % GROUP_SIZE == 0
        and module.weight.dtype == torch.bfloat16
    )


@contextmanager
def low_bit_paths_off(model: Any) -> Iterator[int]:
    """Within the block every call of ``model`` uses its bf16 weights (for measuring what the low-bit copies buy);
    yields how many low-bit copies were switched off."""
    switched = [m for m in model.modules() if isinstance(m, TwoPathLinear | FusedInt4)]
    limits = [m.max_rows for m in switched]
    for module in switched:
        module.max_rows = 0
    try:
        yield len(switched)
    finally:
        for module, limit in zip(switched, limits, strict=True):
            module.max_rows = limit
