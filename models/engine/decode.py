"""The running batch: one token per row per step over a shared KV cache; rows join between steps.

Continuous batching: new requests are prefilled (prefill.py) and stacked into the running batch between two decode
steps instead of waiting for it to finish. Each row carries its own sampling parameters, token budget and stop
strings; it streams text as it goes (when asked) and is handed back the moment it finishes; finished and
cancelled rows are dropped from the batch (cache, mask and all) so the rest go faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from models.engine.api import GenerationRequest
from models.engine.forward import ModelCall
from models.engine.kvcache import (
    LayerKV,
    cache_layers,
    compacted_order,
    drop_leading_positions,
    keep_rows,
    preallocated_cache,
    preallocation_supported,
    stack_right_aligned,
)
from models.engine.lean import LeanDecoder
from models.engine.prefill import PrefixCache, prefill
from models.engine.prompt import EncodedPrompt
from models.engine.sampling import RowSampler
from models.engine.shared_prefix import (
    SharedPrefixes,
    SystemTurn,
    grouped_order,
    shared_attention_supported,
    turn_keys,
)
from models.loader import LoadedModel

# A stop string of n characters spans at most 4 tokens per character (byte-level BPE splits a UTF-8 character into
# up to 4 byte tokens); the margin covers a token that straddles the start of the string.
STOP_TAIL_TOKENS_PER_CHAR = 4
STOP_TAIL_MARGIN_TOKENS = 4
# A batch of at least this many rows keeps one copy of each system turn (shared_prefix.py). Below it, whole rows: a
# turn's own attention call and blend cost ~70 us a layer, more than small batches save by reading one copy (measured
# on the 2-core machine with the bench's prompts, two turns of 116 and 197 tokens: 4 rows 8.3 vs 7.3 ms a token,
# 8 rows 7.2 vs 6.9, 16 rows 5.2 vs 5.3, 32 rows 3.8 vs 4.0).
SHARED_PREFIX_MIN_ROWS = 16


@dataclass(frozen=True)
class RowOutcome:
    """What one row produced; the engine adds timings and the model version."""

    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    new_tokens: int


class _StopMatcher:
    """Finds stop strings in a row's output by decoding only the tail that could contain a new match."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], lock: AbstractContextManager[Any]) -> None:
        self.tokenizer = tokenizer
        self.lock = lock
        self.stop = tuple(stop)
        longest = max((len(s) for s in self.stop), default=0)
        self.tail_tokens = longest * STOP_TAIL_TOKENS_PER_CHAR + STOP_TAIL_MARGIN_TOKENS

    def hit(self, tokens: list[int]) -> bool:
        if not self.stop:
            return False
        with self.lock:
            tail = self.tokenizer.decode(tokens[-self.tail_tokens :], skip_special_tokens=True)
        return any(s in tail for s in self.stop)

    def final_text(self, tokens: list[int]) -> str:
        """The row's whole output, up to (not including) the earliest stop string."""
        with self.lock:
            text: str = self.tokenizer.decode(tokens, skip_special_tokens=True)
        positions = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return text[: min(positions)] if positions else text


def streamable(text: str, stop: Sequence[str]) -> str:
    """The part of ``text`` that is safe to show: no half-decoded character, no possible start of a stop string."""
    text = text.rstrip("\ufffd")  # a character split across tokens decodes as U+FFFD until it is complete
    hold = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return text[: len(text) - hold] if hold else text


@dataclass(eq=False)
class Row:
    """One request in the batch. ``handle`` is the engine's own object, passed back to its callbacks."""

    handle: Any
    request: GenerationRequest
    prompt: EncodedPrompt
    streams: bool = False
    generated: list[int] = field(default_factory=list)
    shown: str = ""  # text already streamed


class DecodeBatch:
    """The rows being decoded together, and their shared cache; not thread-safe (the engine's worker owns it).

    ``on_done(handle, outcome)`` is called the moment a row finishes, ``on_delta(handle, text)`` with each new
    piece of a streaming row's text, ``is_cancelled(handle)`` before every step (a cancelled row is dropped
    without a callback). An exception from :meth:`admit`'s prefill leaves the running rows untouched; one from
    :meth:`step`, or from restacking the cache when rows join (out of memory), leaves the batch unusable (the engine
    fails its rows and starts a new one).

    Layout: row i's cache is right-aligned; its last positions are its own tokens, those after its system turn (the
    rest of its prompt, then its reply so far; prefill right-aligns the rests). A whole-row batch keeps the system
    turn in front of them; a shared batch (from ``shared_prefix_rows`` rows on, when the lean step runs on a CPU)
    keeps one copy of each system turn for all its rows instead, and stays shared until it empties. Rows that finish
    are removed by moving others into their places (kvcache.keep_rows), so the order of the rows changes.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        shared_generator: torch.Generator,
        on_done: Callable[[Any, RowOutcome], None],
        on_delta: Callable[[Any, str], None],
        is_cancelled: Callable[[Any], bool],
        call: ModelCall | None = None,
        prefixes: PrefixCache | None = None,
        tokenizer_lock: AbstractContextManager[Any] | None = None,
        lean_decode: bool = True,
        shared_prefix_rows: int = SHARED_PREFIX_MIN_ROWS,
    ) -> None:
        self.loaded = loaded
        self._call = call or ModelCall.for_model(loaded.model)
        # Decode steps skip transformers' forward where the model allows it (lean.py); prefill never does.
        self._lean = LeanDecoder.for_model(loaded.model) if lean_decode else None
        self._prefixes = prefixes
        self._lock = tokenizer_lock if tokenizer_lock is not None else nullcontext()
        self._generator = shared_generator
        self._on_done, self._on_delta, self._is_cancelled = on_done, on_delta, is_cancelled
        self._eos = frozenset(loaded.eos_token_ids)
        self.rows: list[Row] = []
        self._matchers: list[_StopMatcher] = []
        self._cache: Any = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)  # (B, W)
        self._next_pos = torch.zeros((0,), dtype=torch.long)  # (B,)
        self._logits = torch.zeros((0, 0))  # (B, V): each row's next-token logits
        self._sampler: RowSampler | None = None
        # The largest KV cache this batch has held: the engine trims the heap after a big one.
        self.peak_cache_bytes = 0
        self._lean_ready = False  # whether the current cache is one the lean step can write to
        self._systems: list[SystemTurn | None] = []
        self._shared: SharedPrefixes | None = None  # set while the batch keeps one copy of each system turn
        self._can_share = (
            self._lean is not None and preallocation_supported() and shared_attention_supported(loaded.device)
        )
        self._shared_prefix_rows = shared_prefix_rows

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, rows: Sequence[Row]) -> None:
        """Prefill ``rows`` in padded passes and stack them into the batch (its cache is copied once)."""
        if not rows:
            return
        device = self.loaded.device
        groups, order = prefill(self.loaded, self._call, [r.prompt for r in rows], self._prefixes)
        rows = [rows[i] for i in order]  # the batch takes the rows in the prefilled groups' order
        sampler = RowSampler(
            [r.request for r in rows],
            [r.prompt.ids for r in rows],
            device=device,
            shared_generator=self._generator,
        )
        everyone = [*self.rows, *rows]
        # Per-row state of the running rows (if any), then of each prefilled group.
        running = bool(self.rows)
        systems = [*self._systems, *(system for group in groups for system in group.systems)]
        reserve = max(r.request.max_new_tokens - len(r.generated) for r in everyone)
        parts = [cache_layers(self._cache)] if running else []
        parts += [group.layers for group in groups]
        masks = [self._mask] * running + [group.mask for group in groups]
        next_pos = torch.cat([self._next_pos] * running + [group.next_pos for group in groups])
        logits = torch.cat([self._logits] * running + [group.logits for group in groups])
        for group in groups:  # from here `parts` alone holds their KV, for the stacking to consume
            group.layers = []
        shared = self._shared is not None or self._should_share(systems)
        grouping: list[int] | None = None
        if shared:  # each part keeps its rows' own tokens only (a view: the stacking below copies)
            sizes = [len(self.rows)] * running + [len(group.next_pos) for group in groups]
            owns = _own_lengths(everyone, systems, device).split(sizes)
            # A shared batch's running rows hold only their own tokens already.
            already = 1 if running and self._shared is not None else 0
            for index in range(already, len(parts)):
                parts[index], masks[index] = _own_positions(parts[index], owns[index])
            grouping = grouped_order(systems)  # rows of one system turn must be neighbours
            if grouping == list(range(len(grouping))):
                grouping = None
        # From here the running rows' cache lives only in `parts`, which the stacking consumes layer by layer: the
        # batch never holds its old and its new cache whole at once (~0.25 GB at 32 rows of the embedded model).
        # A failure now (out of memory) leaves the batch without a cache: its next step raises, and the engine
        # fails its rows.
        self._cache = None
        layers, width = stack_right_aligned(parts, reserve, grouping)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        # Everything below only assigns.
        mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for m in masks])  # (B, W)
        if self._sampler is None or not self.rows:
            self._sampler = sampler
        else:
            self._sampler.extend(sampler)
        self._cache = preallocated_cache(layers, width)
        self._lean_ready = self._lean is not None and LeanDecoder.handles(self._cache)
        self._systems = systems
        self.peak_cache_bytes = max(self.peak_cache_bytes, size)
        self._mask = mask
        self._next_pos = next_pos
        self._logits = logits
        self._matchers.extend(_StopMatcher(self.loaded.tokenizer, r.request.stop, self._lock) for r in rows)
        self.rows = everyone
        if grouping is not None:  # the cache is in this order already; the rest follows
            self._select(grouping, logits=True)
        if shared:
            self._shared = SharedPrefixes(self._systems)

    def step(self) -> None:
        """Choose every row's next token, hand back finished rows, and run the model for the rest."""
        if not self.rows:
            return
        if self._cache is None:
            raise RuntimeError("this batch lost its cache while rows were joining (out of memory?)")
        assert self._sampler is not None
        tokens = self._sampler.next_tokens(self._logits)  # (B,)
        dropped: list[int] = []
        for j, (row, token) in enumerate(zip(self.rows, tokens.tolist(), strict=True)):
            if self._is_cancelled(row.handle):
                dropped.append(j)
            elif self._advance(row, self._matchers[j], token):
                dropped.append(j)
        if dropped:
            order = self._drop(set(dropped))
            if not order:
                return
            tokens = tokens[order]
        mask = torch.cat([self._mask, self._mask.new_ones((self._mask.shape[0], 1))], dim=-1)  # (B, W + 1)
        if self._lean_ready:
            assert self._lean is not None
            self._logits = self._lean.step(
                tokens[:, None], mask, self._next_pos[:, None], self._cache, self._shared
            )
        else:
            assert self._shared is None, "a shared batch needs the lean step"
            self._logits = self._call.last_logits(
                self.loaded.model, tokens[:, None], mask, self._next_pos[:, None], self._cache
            )
        self._mask = mask
        self._next_pos = self._next_pos + 1

    def _advance(self, row: Row, matcher: _StopMatcher, token: int) -> bool:
        """Record ``token`` for ``row``; stream its new text; True (after ``on_done``) if the row is finished."""
        request = row.request
        finish: str | None = None
        if token in self._eos:
            finish = "stop"
            new_tokens = len(row.generated) + 1  # the end-of-turn token was generated too
        else:
            row.generated.append(token)
            new_tokens = len(row.generated)
            if matcher.hit(row.generated):
                finish = "stop"
            elif new_tokens >= request.max_new_tokens:
                finish = "length"
        if finish is None:
            if row.streams:
                with self._lock:
                    text = self.loaded.tokenizer.decode(row.generated, skip_special_tokens=True)
                self._show(row, streamable(text, request.stop))
            return False
        text = matcher.final_text(row.generated)
        if row.streams:
            self._show(row, text)
        self._on_done(row.handle, RowOutcome(text, finish, len(row.prompt.ids), new_tokens))
        return True

    def _show(self, row: Row, text: str) -> None:
        """Stream the part of ``text`` not shown yet (decoding is prefix-stable; anything else waits)."""
        if len(text) > len(row.shown) and text.startswith(row.shown):
            self._on_delta(row.handle, text[len(row.shown) :])
            row.shown = text

    def _select(self, rows: list[int], *, logits: bool) -> None:
        """Keep the rows at positions ``rows``, in that order, in every per-row structure but the cache."""
        assert self._sampler is not None
        keep = torch.tensor(rows, dtype=torch.long, device=self.loaded.device)
        self.rows = [self.rows[j] for j in rows]
        self._matchers = [self._matchers[j] for j in rows]
        self._systems = [self._systems[j] for j in rows]
        self._mask, self._next_pos = self._mask[keep], self._next_pos[keep]
        if logits:
            self._logits = self._logits[keep]
        self._sampler.select(keep, rows)

    def _should_share(self, systems: list[SystemTurn | None]) -> bool:
        """Whether a batch of rows with these system turns should keep one copy of each (see the class docstring)."""
        if not self._can_share or len(systems) < self._shared_prefix_rows:
            return False
        keys = [key for key in turn_keys(systems) if key is not None]
        return len(set(keys)) < len(keys)  # some turn is shared: there is something to keep once

    def _drop(self, gone: set[int]) -> list[int]:
        """Remove rows (by batch position) from the cache, mask and sampler; returns where each remaining row was
        (the rows may be reordered: see kvcache.compacted_order), empty if none is left."""
        if len(gone) == len(self.rows):
            self.rows, self._matchers, self._systems = [], [], []
            self._cache, self._sampler, self._shared = None, None, None
            self._mask = self._mask[:0]
            self._next_pos = self._next_pos[:0]
            self._logits = self._logits[:0]
            return []
        # Rows of a system turn stay neighbours in a shared batch; otherwise one group, in any order.
        groups = turn_keys(self._systems) if self._shared is not None else [None] * len(self.rows)
        order = compacted_order(groups, gone)
        keep_rows(self._cache, order)
        self._select(order, logits=False)  # the next step replaces the logits
        if self._shared is not None:
            self._shared = SharedPrefixes(self._systems)
        # Columns that are padding for every remaining row (a long prompt left) cost attention for nothing.
        leading = int(self._mask.any(dim=0).to(torch.long).argmax())
        if leading > 0 and drop_leading_positions(self._cache, leading):
            self._mask = self._mask[:, leading:]
        return order


def _own_lengths(
    rows: Sequence[Row], systems: Sequence[SystemTurn | None], device: torch.device
) -> torch.Tensor:
    """(B,) how many tokens of each row's cache are its own: its prompt after its system turn, and its reply so far
    (between steps every generated token is in the cache)."""
    return torch.tensor(
        [
            len(row.prompt.ids) + len(row.generated) - (len(system[0]) if system is not None else 0)
            for row, system in zip(rows, systems, strict=True)
        ],
        dtype=torch.long,
        device=device,
    )


def _own_positions(layers: list[LayerKV], own: torch.Tensor) -> tuple[list[LayerKV], torch.Tensor]:
    """The last ``max(own)`` positions of whole-row layers (views) and a mask of each row's last ``own[i]``."""
    width = int(own.max())
    columns = torch.arange(width, device=own.device)
    mask = (columns[None, :] >= (width - own)[:, None]).to(torch.long)  # (B, width)
    return [(keys[:, :, -width:], values[:, :, -width:]) for keys, values in layers], mask
