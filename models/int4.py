"""A 4-bit copy of the layers' weights for single streams on a CPU, next to the bf16 weights batches use.

Why: decoding one sequence reads every weight once per token and does almost no arithmetic with it, so its speed is
the speed of memory. bf16 weights (270 MB for the embedded model) cost ~23 ms a token on the 2-core machine; the
same weights in 4 bits (groups of 32 with a scale and a zero point, which is exactly how the embedded GGUF stores
them as Q4_1) are a quarter of that. A batch, on the other hand, is bound by arithmetic, where bf16 on AMX is several
times faster than unpacking 4-bit weights: each layer keeps both and picks by the number of rows in the call.

Quality: for the embedded model the 4-bit weights are the file's own (Q4_1 blocks of 32), so a single stream runs
the model as published; bf16 batches run its dequantized weights. Greedy output alone and in a batch can therefore
differ in bf16, as bf16 rounding already makes it; with ``dtype = "float32"`` no 4-bit path is added.
"""

from __future__ import annotations

from typing import Any

import torch

GROUP_SIZE = 32  # GGUF Q4_0/Q4_1 block size; must divide in_features
# Calls with at most this many rows (tokens x batch) take the 4-bit path. Measured on the 2-core machine, a whole
# decode step of the embedded model: 1 row 18 ms (bf16 39 ms), 8 rows 40 ms (53), 12 rows 52 ms (56), 16 rows even,
# 32 rows 114 ms (95): past a dozen rows the arithmetic, where bf16 on AMX is faster, outweighs reading the weights.
MAX_INT4_ROWS = 12
INNER_K_TILES = 2  # the packing the CPU kernel expects


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


class TwoPathLinear(torch.nn.Module):
    """``nn.Linear`` (no bias) that runs calls of few rows on a 4-bit copy of its weight and the rest in bf16."""

    in_features: int
    out_features: int
    max_int4_rows: int
    weight: torch.nn.Parameter
    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, linear: torch.nn.Linear, *, max_int4_rows: int = MAX_INT4_ROWS) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("TwoPathLinear takes bias-free layers only")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # kept as is: batches, and anything that reads .weight, see the original
        self.max_int4_rows = max_int4_rows
        packed, scales_and_zeros = quantize_int4(linear.weight)
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_and_zeros", scales_and_zeros, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > self.max_int4_rows or x.dtype != self.scales_and_zeros.dtype:
            return torch.nn.functional.linear(x, self.weight)
        flat = x.reshape(rows, self.in_features)
        out = torch._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP_SIZE, self.scales_and_zeros)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 up to {self.max_int4_rows} rows"


def add_int4_path(model: Any, *, max_int4_rows: int = MAX_INT4_ROWS) -> int:
    """Give every bias-free linear layer of the decoder blocks a 4-bit path; returns how many were converted.

    The LM head (tied to the embeddings) and layers whose width does not fit the group size stay as they are.
    """
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        return 0
    converted = 0
    for block in layers:
        for parent in block.modules():
            for name, child in list(parent.named_children()):
                if (
                    type(child) is torch.nn.Linear
                    and child.bias is None
                    and child.in_features % GROUP_SIZE == 0
                    and child.weight.dtype == torch.bfloat16
                ):
                    setattr(parent, name, TwoPathLinear(child, max_int4_rows=max_int4_rows))
                    converted += 1
    return converted
