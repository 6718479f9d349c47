"""Attention over system turns that many rows share, each stored once instead of once per row (cascade attention).

Why: in a busy chat every request to the character starts with the same system turn, the persona: with the default
card it is ~240 of a chat prompt's ~280 tokens. Stored in every row, a burst of 32 holds 32 copies of its keys and
values (~170 MB of the embedded model's ~250 MB batch cache), and every decode step reads all of them: at 32 rows
attention over the cache is the largest part of a step on the 2-core machine, and it is bound by memory.

In a shared batch each row's cache holds only its own tokens (the rest of its prompt and its reply). A step attends
each row to its own tokens, as before, and all rows of one system turn at once to that turn's single copy: one call
whose queries are rows x query heads, which reads the copy once. The two partial results are merged exactly by
their log-sum-exp: together they are the softmax over the union of both sets of positions.

Only on a CPU, where this torch's flash attention kernel returns the log-sum-exp it needs; a GPU has the bandwidth
and keeps whole rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from models.engine.kvcache import LayerKV

SystemTurn = tuple[tuple[int, ...], list[LayerKV]]  # a system turn's token ids and its per-layer KV

_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def shared_attention_supported(device: torch.device) -> bool:
    """Whether rows can share their system turns' KV on ``device`` (the CPU flash kernel with log-sum-exp)."""
    return device.type == "cpu" and _FLASH is not None


@dataclass(frozen=True)
class _Group:
    start: int  # its rows are the batch's rows start..stop-1
    stop: int
    layers: list[LayerKV]  # the system turn's per-layer (1, KV, P, D) keys and values


def turn_keys(systems: Sequence[SystemTurn | None]) -> list[tuple[int, ...] | None]:
    """Each row's system turn as its token ids (what tells turns apart), None for a row without one."""
    return [system[0] if system is not None else None for system in systems]


def grouped_order(systems: Sequence[SystemTurn | None]) -> list[int]:
    """Row positions ordered so that rows of the same system turn are neighbours (first seen first, stable); rows
    without one last. :class:`SharedPrefixes` needs this order."""
    keys = turn_keys(systems)
    first: dict[tuple[int, ...], int] = {}
    for row, key in enumerate(keys):
        if key is not None:
            first.setdefault(key, row)
    return sorted(range(len(keys)), key=lambda row: len(keys) if (key := keys[row]) is None else first[key])


class SharedPrefixes:
    """The batch's distinct system turns and which rows read each; rows without one attend to their own tokens."""

    def __init__(self, systems: Sequence[SystemTurn | None]) -> None:
        self.groups: list[_Group] = []
        keys: list[tuple[int, ...]] = []
        for row, system in enumerate(systems):
            if system is None:
                continue
            if keys and keys[-1] == system[0] and self.groups[-1].stop == row:  # the run goes on
                self.groups[-1] = replace(self.groups[-1], stop=row + 1)
            elif system[0] in keys:
                raise ValueError("rows of one system turn must be neighbours (see grouped_order)")
            else:
                keys.append(system[0])
                self.groups.append(_Group(row, row + 1, system[1]))

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        bias: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """Attention of (B, KV, G, D) queries over each row's own (B, KV, W, D) cache (``bias`` (B, 1, 1, W): 0 or
        -inf) and over its system turn's shared copy; (B, KV, G, D) like scaled_dot_product_attention."""
        assert _FLASH is not None
        out, lse = _FLASH(q, keys, values, attn_mask=bias, scale=scale)  # (B, KV, G, D), (B, KV, G) in fp32
        kv_heads, groups, dim = q.shape[1:]
        for group in self.groups:
            count = group.stop - group.start
            # The group's rows become one sequence of count x G queries per KV head: a single read of the turn.
            queries = q[group.start : group.stop].transpose(0, 1).reshape(1, kv_heads, count * groups, dim)
            shared_out, shared_lse = _FLASH(queries, *group.layers[layer], scale=scale)
            shared_out = shared_out.view(kv_heads, count, groups, dim).transpose(0, 1)  # (n, KV, G, D)
            shared_lse = shared_lse.view(kv_heads, count, groups).transpose(0, 1)  # (n, KV, G)
            # The softmax over both sets of positions is a blend of the two partial results: the turn's share is
            # exp(lse_turn) / (exp(lse_turn) + exp(lse_own)), a sigmoid of the difference.
            share = torch.sigmoid(shared_lse - lse[group.start : group.stop]).unsqueeze(-1)
            out[group.start : group.stop].lerp_(shared_out, share.to(out.dtype))
        return out
