"""KV-cache helpers: read and build transformers caches, and a cache layer that grows in place.

transformers' DynamicLayer appends each step's keys/values with ``torch.cat``, copying the whole cache every
step: for 16 rows of 450 tokens that is ~330 MB of copying per token on the embedded model, a third of a CPU
decode step. :class:`PreallocatedLayer` keeps keys/values in buffers with room for the reply and writes each step
in place; ``keys``/``values`` are views of the filled part, so attention code sees an ordinary cache.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

LayerKV = tuple[torch.Tensor, torch.Tensor]  # keys, values: (B, H, T, D) each


def cache_layers(cache: DynamicCache) -> list[LayerKV]:
    """The per-layer (keys, values) of a cache, for transformers 5 (``layers``) and 4 (``key_cache``)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # type: ignore[attr-defined]


def cache_from_layers(layers: list[LayerKV]) -> DynamicCache:
    """A new cache holding ``layers`` (the tensors are not modified later: updates concatenate new ones)."""
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


class PreallocatedLayer(DynamicLayer):
    """A cache layer over (B, H, capacity, D) buffers of which the first ``length`` positions are filled."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self._key_buf, self._value_buf, self._length = keys, values, length
        self.is_initialized = True
        self.device, self.dtype = keys.device, keys.dtype
        self._expose()

    def _expose(self) -> None:
        self.keys = self._key_buf[:, :, : self._length]
        self.values = self._value_buf[:, :, : self._length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> LayerKV:
        new = key_states.shape[-2]
        if self._length + new > self._key_buf.shape[-2]:  # out of room (callers reserve enough): double it
            grow = max(new, self._key_buf.shape[-2])
            self._key_buf = torch.cat(
                [self._key_buf, self._key_buf.new_zeros(_with_time(self._key_buf, grow))], -2
            )
            self._value_buf = torch.cat(
                [self._value_buf, self._value_buf.new_zeros(_with_time(self._value_buf, grow))], -2
            )
        self._key_buf[:, :, self._length : self._length + new] = key_states
        self._value_buf[:, :, self._length : self._length + new] = value_states
        self._length += new
        self._expose()
        return self._key_buf[:, :, : self._length], self._value_buf[:, :, : self._length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._key_buf, self._value_buf = self._key_buf[indices], self._value_buf[indices]
        self._expose()

    def keep_rows(self, count: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Copy rows ``src`` onto rows ``dst``, then keep the first ``count`` rows (a view: the buffers stay)."""
        if len(dst):
            self._key_buf[dst] = self._key_buf[src]
            self._value_buf[dst] = self._value_buf[src]
        self._key_buf, self._value_buf = self._key_buf[:count], self._value_buf[:count]
        self._expose()

    def drop_leading(self, count: int) -> None:
        """Forget the first ``count`` positions (a view: no copy)."""
        self._key_buf, self._value_buf = self._key_buf[:, :, count:], self._value_buf[:, :, count:]
        self._length -= count
        self._expose()


def _with_time(buf: torch.Tensor, length: int) -> tuple[int, ...]:
    return (buf.shape[0], buf.shape[1], length, buf.shape[3])


def preallocation_supported() -> bool:
    """Whether this transformers has per-layer cache objects, which :func:`preallocated_cache` needs."""
    return hasattr(DynamicCache(), "layers")


def preallocated_cache(layers: list[LayerKV], length: int) -> DynamicCache:
    """A cache over per-layer (B, H, capacity, D) buffers whose first ``length`` positions are filled.

    Falls back to an ordinary (copying) cache on transformers versions without per-layer cache objects.
    """
    if not preallocation_supported():
        return cache_from_layers([(k[:, :, :length], v[:, :, :length]) for k, v in layers])
    cache = DynamicCache()
    cache.layers = [PreallocatedLayer(keys, values, length) for keys, values in layers]
    return cache


def keep_rows(cache: DynamicCache, order: Sequence[int]) -> None:
    """Make row i of every layer the old row ``order[i]``, for a batch whose rows left.

    A preallocated cache copies only the rows that move into the first ``len(order)`` rows of its buffers and keeps
    those: when rows leave a batch of 32, copying its whole cache (~0.25 GB of the embedded model's, reserve included)
    cost ~25 ms, a step's worth. The memory of rows that left is released when the batch next restacks (rows join)
    or empties. Any other cache selects the rows (a copy).
    """
    layers = getattr(cache, "layers", None) or ()
    device = layers[0].keys.device if layers else None
    if layers and all(isinstance(layer, PreallocatedLayer) for layer in layers):
        moved = [(new, old) for new, old in enumerate(order) if new != old]
        dst = torch.tensor([new for new, _ in moved], dtype=torch.long, device=device)
        src = torch.tensor([old for _, old in moved], dtype=torch.long, device=device)
        for layer in layers:
            layer.keep_rows(len(order), dst, src)
        return
    cache.batch_select_indices(torch.tensor(order, dtype=torch.long, device=device))


def compacted_order(groups: Sequence[object], gone: Collection[int]) -> list[int]:
    """Where each remaining row comes from (new position -> old) when rows ``gone`` leave a batch.

    ``groups`` holds a key per row; rows of one key are neighbours and stay so, keys keep their order, and a row
    already inside its key's new range stays where it is, so that as few rows as possible move (:func:`keep_rows`).
    """
    order: list[int] = []
    row = 0
    while row < len(groups):
        end = row
        while end < len(groups) and groups[end] == groups[row]:
            end += 1
        kept = [old for old in range(row, end) if old not in gone]
        start, stop = len(order), len(order) + len(kept)
        movers = iter(old for old in kept if not start <= old < stop)
        order.extend(slot if slot in kept else next(movers) for slot in range(start, stop))
        row = end
    return order


def drop_leading_positions(cache: DynamicCache, count: int) -> bool:
    """Remove the first ``count`` positions from every layer; False if this cache's layout is unknown."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    for layer in layers:
        if isinstance(layer, PreallocatedLayer):
            layer.drop_leading(count)
        elif isinstance(getattr(layer, "keys", None), torch.Tensor):
            layer.keys = layer.keys[:, :, count:]  # (B, H, T, D)
            layer.values = layer.values[:, :, count:]
        else:
            return False
    return True


# What a consumed entry of stack_right_aligned's input holds.
_RELEASED: LayerKV = (torch.empty(0), torch.empty(0))


def stack_right_aligned(
    parts: list[list[LayerKV]], reserve: int, order: list[int] | None = None
) -> tuple[list[LayerKV], int]:
    """Stack row sets (per layer (B_i, H, L_i, D)) into new (sum B_i, H, W + reserve, D) buffers, W = max L_i.

    Each set is right-aligned at W (shorter ones get zero padding on the left, which their mask must hide). Rows go
    in the order of ``parts`` unless ``order`` says which input row (counted across the parts) each output row is.
    Returns the buffers and W, the filled width. The lists in ``parts`` are consumed: each entry is replaced by an
    empty placeholder once copied, so a set nobody else holds is freed layer by layer and the peak holds one layer
    twice rather than the whole cache (for 32 rows of the embedded model, ~0.4 GB less). Tensors that something
    else still references (a running batch's cache) are not affected.
    """
    width = max(layers[0][0].shape[2] for layers in parts)
    rows = sum(layers[0][0].shape[0] for layers in parts)
    slot_of = list(range(rows))  # input row -> output row
    for slot, source in enumerate(order or ()):
        slot_of[source] = slot
    slots: list[slice | torch.Tensor] = []  # where each part's rows go: a slice when they stay together
    start = 0
    for layers in parts:
        mine = slot_of[start : start + layers[0][0].shape[0]]
        start += len(mine)
        together = mine == list(range(mine[0], mine[0] + len(mine)))
        slots.append(
            slice(mine[0], mine[-1] + 1) if together else torch.tensor(mine, device=layers[0][0].device)
        )
    stacked: list[LayerKV] = []
    for layer in range(len(parts[0])):
        keys0, values0 = parts[0][layer]
        keys = keys0.new_zeros((rows, keys0.shape[1], width + reserve, keys0.shape[3]))  # (B, H, W + R, D)
        values = values0.new_zeros((rows, values0.shape[1], width + reserve, values0.shape[3]))
        for layers, where in zip(parts, slots, strict=True):
            part_keys, part_values = layers[layer]
            length = part_keys.shape[2]
            keys[where, :, width - length : width] = part_keys
            values[where, :, width - length : width] = part_values
            layers[layer] = _RELEASED
        stacked.append((keys, values))
    return stacked, width
