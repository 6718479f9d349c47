"""Prefill: turn a batch of prompts into a left-padded KV cache, reusing cached system-turn prefixes.

Each prompt is prefilled on its own (no padding, so no compute spent on pad tokens) in two parts: the system turn,
whose KV state is kept in a small LRU (every request for the same character shares it), then the rest. The
per-row caches are then copied right-aligned into one batch cache. Because every prompt always takes the same
two-part path, a prompt's prefill is bit-identical whether it runs alone or in a batch, cached or not.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from models.engine.forward import ModelCall
from models.engine.kvcache import LayerKV, cache_from_layers, cache_layers, preallocated_cache
from models.engine.prompt import EncodedPrompt
from models.loader import LoadedModel

# Bounds for the prefix cache. An entry for a 500-token system turn of the embedded model is ~23 MB of fp32 KV.
MAX_PREFIX_ENTRIES = 8
MAX_PREFIX_CACHE_TOKENS = 8192
# Shorter prefixes are cheaper to recompute than to look up and copy.
MIN_PREFIX_TOKENS = 16


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
    """The batch after prefill: everything the decode loop needs for its first step."""

    cache: DynamicCache
    mask: torch.Tensor  # (B, W) 1 = real token, left padding = 0
    next_pos: torch.Tensor  # (B,) position of the next token of each row
    logits: torch.Tensor  # (B, V) logits for each row's first new token


def _prefill_row(
    model: Any, call: ModelCall, prompt: EncodedPrompt, device: torch.device, prefixes: PrefixCache | None
) -> tuple[list[LayerKV], torch.Tensor]:
    """Prefill one prompt (system turn from the cache when possible); returns its KV layers and (V,) logits."""
    ids = prompt.ids
    split = prompt.prefix_len if prefixes is not None and prompt.prefix_len >= MIN_PREFIX_TOKENS else 0
    split = min(split, len(ids) - 1)  # keep at least one token to compute the next-token logits from
    if split > 0:
        assert prefixes is not None
        key = tuple(ids[:split])
        layers = prefixes.get(key)
        if layers is None:
            head = DynamicCache()
            head_ids = torch.tensor([ids[:split]], dtype=torch.long, device=device)
            positions = torch.arange(split, device=device)[None]
            call.last_logits(model, head_ids, torch.ones_like(head_ids), positions, head)
            layers = cache_layers(head)
            prefixes.put(key, layers)
        cache = cache_from_layers(layers)
    else:
        cache = DynamicCache()
    tail = torch.tensor([ids[split:]], dtype=torch.long, device=device)  # (1, T - split)
    mask = torch.ones((1, len(ids)), dtype=torch.long, device=device)
    positions = torch.arange(split, len(ids), device=device)[None]
    logits = call.last_logits(model, tail, mask, positions, cache)  # (1, V)
    return cache_layers(cache), logits[0]


def prefill(
    loaded: LoadedModel,
    call: ModelCall,
    prompts: list[EncodedPrompt],
    prefixes: PrefixCache | None,
    reserve: int,
) -> Prefilled:
    """Prefill every prompt and assemble one left-padded batch cache with room for ``reserve`` more tokens."""
    device = loaded.device
    rows = [_prefill_row(loaded.model, call, p, device, prefixes) for p in prompts]
    batch, width = len(prompts), max(len(p.ids) for p in prompts)
    merged: list[LayerKV] = []
    for layer in range(len(rows[0][0])):
        keys0, values0 = rows[0][0][layer]
        keys = keys0.new_zeros((batch, keys0.shape[1], width + reserve, keys0.shape[3]))  # (B, H, W + R, D)
        values = values0.new_zeros((batch, values0.shape[1], width + reserve, values0.shape[3]))
        for row, (row_layers, _) in enumerate(rows):
            length = row_layers[layer][0].shape[2]
            keys[row, :, width - length : width] = row_layers[layer][0][0]
            values[row, :, width - length : width] = row_layers[layer][1][0]
        merged.append((keys, values))
    mask = torch.zeros((batch, width), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        mask[row, width - len(prompt.ids) :] = 1
    next_pos = torch.tensor([len(p.ids) for p in prompts], dtype=torch.long, device=device)
    logits = torch.stack([row_logits for _, row_logits in rows])  # (B, V)
    return Prefilled(preallocated_cache(merged, width), mask, next_pos, logits)
