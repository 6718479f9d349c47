"""The batched decode loop: prefill (prefill.py), then one token per row per step over a shared KV cache.

Each row carries its own sampling parameters, token budget and stop strings, and is handed back the moment it
finishes; finished and cancelled rows are dropped from the batch (cache, mask and all) so the rest go faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from models.engine.api import GenerationRequest
from models.engine.forward import ModelCall
from models.engine.kvcache import drop_leading_positions
from models.engine.prefill import PrefixCache, prefill
from models.engine.prompt import EncodedPrompt
from models.engine.sampling import RowSampler
from models.loader import LoadedModel

# A stop string of n characters spans at most 4 tokens per character (byte-level BPE splits a UTF-8 character into
# up to 4 byte tokens); the margin covers a token that straddles the start of the string.
STOP_TAIL_TOKENS_PER_CHAR = 4
STOP_TAIL_MARGIN_TOKENS = 4


@dataclass(frozen=True)
class RowOutcome:
    """What one row produced; the engine adds timings and the model version."""

    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    new_tokens: int


class BatchAborted(Exception):
    """The engine asked the loop to stop (it is closing); unfinished rows get no outcome."""


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


def run_batch(
    loaded: LoadedModel,
    requests: Sequence[GenerationRequest],
    prompts: Sequence[EncodedPrompt],
    *,
    shared_generator: torch.Generator,
    on_done: Callable[[int, RowOutcome], None],
    is_cancelled: Callable[[int], bool],
    should_abort: Callable[[], bool],
    call: ModelCall | None = None,
    prefixes: PrefixCache | None = None,
    tokenizer_lock: AbstractContextManager[Any] | None = None,
) -> None:
    """Decode ``requests`` together; call ``on_done(index, outcome)`` for each row as soon as it finishes.

    ``index`` is the row's position in ``requests``. A cancelled row is dropped silently (no callback). If
    ``should_abort()`` turns true, raises :class:`BatchAborted`; any other exception propagates to the engine,
    which fails the rows that have not finished. ``prefixes`` caches system-turn KV states across batches;
    ``tokenizer_lock`` is held around every tokenizer call.
    """
    lock = tokenizer_lock if tokenizer_lock is not None else nullcontext()
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    call = call or ModelCall.for_model(model)
    eos = frozenset(loaded.eos_token_ids)
    matchers = [_StopMatcher(tokenizer, r.stop, lock) for r in requests]
    # The sampler's tensors must match the logits, which follow the model's (possibly padded) vocabulary.
    vocab_size = int(getattr(getattr(model, "config", None), "vocab_size", 0) or len(tokenizer))
    sampler = RowSampler(
        requests,
        [p.ids for p in prompts],
        vocab_size=vocab_size,
        device=device,
        shared_generator=shared_generator,
    )
    live = list(range(len(requests)))  # live[j] = index in `requests` of the row at batch position j
    generated: list[list[int]] = [[] for _ in requests]

    # 1. Prefill every prompt into one left-padded cache, then 2. step every live row until none is left.
    state = prefill(loaded, call, list(prompts), prefixes, reserve=max(r.max_new_tokens for r in requests))
    cache, mask, next_pos, logits = state.cache, state.mask, state.next_pos, state.logits
    while True:
        if should_abort():
            raise BatchAborted
        tokens = sampler.next_tokens(logits)  # (B',)
        dropped: list[int] = []
        for j, (row, token) in enumerate(zip(live, tokens.tolist(), strict=True)):
            request = requests[row]
            if is_cancelled(row):
                dropped.append(j)
                continue
            finish: str | None = None
            if token in eos:
                finish = "stop"
                new_tokens = len(generated[row]) + 1  # the end-of-turn token was generated too
            else:
                generated[row].append(token)
                new_tokens = len(generated[row])
                if matchers[row].hit(generated[row]):
                    finish = "stop"
                elif new_tokens >= request.max_new_tokens:
                    finish = "length"
            if finish is not None:
                text = matchers[row].final_text(generated[row])
                on_done(row, RowOutcome(text, finish, len(prompts[row].ids), new_tokens))
                dropped.append(j)
        if dropped:
            if len(dropped) == len(live):
                return
            # 3. Shrink the batch: the finished rows' cache, mask and sampling state go.
            gone = set(dropped)
            keep_list = [j for j in range(len(live)) if j not in gone]
            keep = torch.tensor(keep_list, dtype=torch.long, device=device)
            cache.batch_select_indices(keep)
            mask, next_pos, tokens = mask[keep], next_pos[keep], tokens[keep]
            sampler.select(keep, keep_list)
            live = [live[j] for j in keep_list]
            # Columns that are padding for every remaining row (a long prompt left) cost attention for nothing.
            leading = int(mask.any(dim=0).to(torch.long).argmax())
            if leading > 0 and drop_leading_positions(cache, leading):
                mask = mask[:, leading:]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)  # (B', T+1)
        logits = call.last_logits(model, tokens[:, None], mask, next_pos[:, None], cache)
        next_pos = next_pos + 1
