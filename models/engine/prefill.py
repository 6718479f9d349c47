"""Prefill: turn new prompts into batch rows (KV cache, mask, positions, first logits) ready to join decoding.

1. Every prompt is split into its system turn (the persona, shared by most requests) and the rest. The system
   turn's KV state comes from a small LRU (:class:`PrefixCache`) or is computed on its own, one system turn per
   pass: the same computation whether it is cached, shared within this admission, or not cached at all, so the
   cache never changes an output.
2. The rests of all prompts run together in padded passes. Row i is laid out as
   ``[pad][system_i][pad][rest_i]`` over a cache of width P (longest system turn) and an input of width S (longest
   rest): the attention mask hides the pads and the position ids count only real tokens, so each row attends to
   exactly its own prompt, at its own positions.
3. Rows are sorted by rest length and grouped so padding costs at most ``MAX_PAD_WASTE`` of the real work and a
   pass holds at most ``MAX_PASS_TOKENS`` input positions. The groups are handed over as they are: the batch stacks
   them with its running rows in one copy (decode.py), so a new row's KV is copied once after its pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from models.engine.forward import ModelCall
from models.engine.kvcache import LayerKV, cache_from_layers, cache_layers
from models.engine.prompt import EncodedPrompt
from models.engine.shared_prefix import SystemTurn
from models.loader import LoadedModel

# Bounds for the prefix cache. An entry for a 500-token system turn of the embedded model is ~23 MB of fp32 KV.
MAX_PREFIX_ENTRIES = 8
MAX_PREFIX_CACHE_TOKENS = 8192
# Shorter prefixes are cheaper to recompute than to look up and copy.
MIN_PREFIX_TOKENS = 16
# A padded pass may compute at most this share more positions than the real tokens it holds (prefill is
# compute-bound on a CPU: padding is paid in full), and at most this many positions in all (activation memory).
MAX_PAD_WASTE = 0.25
MAX_PASS_TOKENS = 4096


class PrefixCache:
    """LRU of system-turn KV states for one model, bounded in entries and in total tokens."""

    def __init__(
        self,
        owner: LoadedModel,
        *,
        max_entries: int = MAX_PREFIX_ENTRIES,
        max_tokens: int = MAX_PREFIX_CACHE_TOKENS,
    ) -> None:
        self.owner = owner
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[int, ...], list[LayerKV]] = OrderedDict()
        self._tokens = 0

    def get(self, key: tuple[int, ...]) -> list[LayerKV] | None:
        layers = self._entries.get(key)
        if layers is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return layers

    def put(self, key: tuple[int, ...], layers: list[LayerKV]) -> None:
        if len(key) > self.max_tokens or key in self._entries:
            return
        self._entries[key] = layers
        self._tokens += len(key)
        while len(self._entries) > self.max_entries or self._tokens > self.max_tokens:
            evicted, _ = self._entries.popitem(last=False)
            self._tokens -= len(evicted)


@dataclass
class Prefilled:
    """Rows after prefill: everything the decode loop needs for their first step."""

    layers: list[LayerKV]  # per layer (B, H, W, D) keys and values; pads hold zeros
    mask: torch.Tensor  # (B, W) 1 = real token, 0 = padding (left of and between a row's parts)
    next_pos: torch.Tensor  # (B,) position of the next token of each row
    logits: torch.Tensor  # (B, V) logits for each row's first new token
    # Each row's system turn, (token ids, per-layer (1, H, P, D) KV) or None: shared objects, never copied.
    systems: list[SystemTurn | None]


def system_split(prompt: EncodedPrompt) -> int:
    """How many leading tokens of ``prompt`` are prefilled as its (cacheable) system turn; 0 = none."""
    split = prompt.prefix_len if prompt.prefix_len >= MIN_PREFIX_TOKENS else 0
    return min(split, len(prompt.ids) - 1)  # keep at least one token to compute the next-token logits from


def _system_layers(
    model: Any,
    call: ModelCall,
    key: tuple[int, ...],
    device: torch.device,
    prefixes: PrefixCache | None,
    computed: dict[tuple[int, ...], list[LayerKV]],
) -> list[LayerKV]:
    """The (1, H, P, D) KV layers of one system turn: from the LRU, from this admission, or computed alone."""
    if key in computed:  # another prompt of this admission has the same system turn
        if prefixes is not None:
            prefixes.hits += 1
        return computed[key]
    layers = prefixes.get(key) if prefixes is not None else None
    if layers is None:
        head = DynamicCache()
        ids = torch.tensor([key], dtype=torch.long, device=device)  # (1, P)
        positions = torch.arange(len(key), device=device)[None]
        call.last_logits(model, ids, torch.ones_like(ids), positions, head)
        layers = cache_layers(head)
        if prefixes is not None:
            prefixes.put(key, layers)
    computed[key] = layers
    return layers


def group_rows(rests: Sequence[int]) -> list[list[int]]:
    """Row indices grouped into passes of similar rest length (see the module docstring, step 3)."""
    order = sorted(range(len(rests)), key=lambda i: rests[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:  # ascending, so row i is the widest of its group so far
        width = rests[i]
        padded = (len(current) + 1) * width
        if current and (padded > (1 + MAX_PAD_WASTE) * (real + width) or padded > MAX_PASS_TOKENS):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += width
    if current:
        groups.append(current)
    return groups


def _prefill_group(
    loaded: LoadedModel,
    call: ModelCall,
    prompts: Sequence[EncodedPrompt],
    heads: Sequence[list[LayerKV] | None],
    splits: Sequence[int],
) -> Prefilled:
    """One padded pass over the rests of ``prompts``, on top of their system turns' KV (``heads``)."""
    device = loaded.device
    batch = len(prompts)
    p_width = max(splits)
    s_width = max(len(p.ids) - s for p, s in zip(prompts, splits, strict=True))
    cache = DynamicCache()
    if p_width:
        known = next(h for h in heads if h is not None)
        stacked: list[LayerKV] = []
        for layer, (keys0, values0) in enumerate(known):
            keys = keys0.new_zeros((batch, keys0.shape[1], p_width, keys0.shape[3]))  # (B, H, P, D)
            values = values0.new_zeros((batch, values0.shape[1], p_width, values0.shape[3]))
            for row, head in enumerate(heads):
                if head is not None:
                    keys[row, :, p_width - splits[row] :] = head[layer][0][0]
                    values[row, :, p_width - splits[row] :] = head[layer][1][0]
            stacked.append((keys, values))
        cache = cache_from_layers(stacked)
    pad_id = loaded.tokenizer.pad_token_id or 0
    ids = torch.full((batch, s_width), pad_id, dtype=torch.long, device=device)  # (B, S)
    mask = torch.zeros((batch, p_width + s_width), dtype=torch.long, device=device)  # (B, P + S)
    positions = torch.zeros((batch, s_width), dtype=torch.long, device=device)  # (B, S)
    for row, (prompt, split) in enumerate(zip(prompts, splits, strict=True)):
        rest = prompt.ids[split:]
        start = s_width - len(rest)
        ids[row, start:] = torch.tensor(rest, dtype=torch.long, device=device)
        mask[row, p_width - split : p_width] = 1
        mask[row, p_width + start :] = 1
        positions[row, start:] = torch.arange(split, len(prompt.ids), device=device)
        positions[row, :start] = split  # pads: any valid position; their outputs are never attended to
    logits = call.last_logits(loaded.model, ids, mask, positions, cache)  # (B, V)
    layers = cache_layers(cache)
    # Zero the pads' keys and values: masked out anyway, but then no stray value can ever leak into a row. In place:
    # these tensors were made by this pass (the cached system turns were copied into them, not aliased).
    keep = mask.to(layers[0][0].dtype)[:, None, :, None]  # (B, 1, P + S, 1)
    for keys, values in layers:
        keys.mul_(keep)
        values.mul_(keep)
    next_pos = torch.tensor([len(p.ids) for p in prompts], dtype=torch.long, device=device)
    systems = [
        (tuple(p.ids[:s]), head) if head is not None else None
        for p, s, head in zip(prompts, splits, heads, strict=True)
    ]
    return Prefilled(layers, mask, next_pos, logits, systems)


def prefill(
    loaded: LoadedModel,
    call: ModelCall,
    prompts: Sequence[EncodedPrompt],
    prefixes: PrefixCache | None,
) -> tuple[list[Prefilled], list[int]]:
    """Prefill ``prompts`` in groups; returns the groups and, for each of their rows in turn, its prompt's index.

    The groups are not stacked here: the batch stacks them with its running rows in one copy (decode.py).
    ``prefixes=None`` computes every system turn afresh.
    """
    splits = [system_split(p) for p in prompts]
    computed: dict[tuple[int, ...], list[LayerKV]] = {}
    heads = [
        _system_layers(loaded.model, call, tuple(p.ids[:s]), loaded.device, prefixes, computed) if s else None
        for p, s in zip(prompts, splits, strict=True)
    ]
    parts: list[Prefilled] = []
    order: list[int] = []
    for group in group_rows([len(p.ids) - s for p, s in zip(prompts, splits, strict=True)]):
        parts.append(
            _prefill_group(
                loaded,
                call,
                [prompts[i] for i in group],
                [heads[i] for i in group],
                [splits[i] for i in group],
            )
        )
        order.extend(group)
    return parts, order
