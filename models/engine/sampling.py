"""Per-row next-token selection for a batch: each row keeps its own penalty, temperature, top-p and RNG."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.engine.api import GenerationRequest

# Nucleus sampling looks at the best this many tokens of each row first: sorting and drawing from a whole 49k-token
# row cost ~1 ms each, 60 ms a step for 32 sampled rows on the 2-core machine. A row whose nucleus is not inside its
# candidates (a flat distribution, or top_p = 1) falls back to the whole vocabulary, so the result is exact.
NUCLEUS_CANDIDATES = 256


class RowSampler:
    """Sampling state for the rows of one batch, kept as (B, ...) tensors so a step costs a few vector ops.

    Rows can be dropped (finished or cancelled) with :meth:`select`; everything stays aligned with the batch.
    """

    def __init__(
        self,
        requests: Sequence[GenerationRequest],
        prompt_ids: Sequence[Sequence[int]],
        *,
        device: torch.device,
        shared_generator: torch.Generator,
    ) -> None:
        self.temperature = torch.tensor([r.temperature for r in requests], dtype=torch.float32, device=device)
        self.top_p = torch.tensor([r.top_p for r in requests], dtype=torch.float32, device=device)
        self.penalty = torch.tensor(
            [r.repetition_penalty for r in requests], dtype=torch.float32, device=device
        )
        self.any_penalty = bool((self.penalty != 1.0).any())
        # (B, L) every token each row has seen (prompt + generated), as HF's repetition penalty uses: a few hundred
        # ids a row, where a (B, V) membership mask cost ~5 ms a step at 32 rows in full-vocabulary passes. A row
        # shorter than L repeats its own first id (gathering and scattering a token twice changes nothing).
        self.seen = _padded([sorted(set(ids)) for ids in prompt_ids], device)
        # A seeded request gets its own generator so its sample does not depend on who it is batched with.
        self.generators: list[torch.Generator] = [
            torch.Generator(device=device).manual_seed(r.seed) if r.seed is not None else shared_generator
            for r in requests
        ]

    def select(self, keep: torch.Tensor, keep_list: Sequence[int]) -> None:
        """Keep only the rows in ``keep`` (a (B',) index tensor; ``keep_list`` is the same as Python ints)."""
        self.temperature = self.temperature[keep]
        self.top_p = self.top_p[keep]
        self.penalty = self.penalty[keep]
        self.seen = self.seen[keep]
        self.generators = [self.generators[i] for i in keep_list]

    def extend(self, other: RowSampler) -> None:
        """Append ``other``'s rows after this sampler's (new requests joining a running batch)."""
        self.temperature = torch.cat([self.temperature, other.temperature])
        self.top_p = torch.cat([self.top_p, other.top_p])
        self.penalty = torch.cat([self.penalty, other.penalty])
        self.any_penalty = self.any_penalty or other.any_penalty
        self.seen = _padded_cat(self.seen, other.seen)
        self.generators = self.generators + other.generators

    def next_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """Choose one token per row from (B, V) logits; returns (B,) token ids and records them as seen."""
        logits = logits.float()  # (B, V); sampling maths in fp32 whatever the model dtype
        if self.any_penalty:
            # 1. repetition penalty (CTRL-style): shrink the logit of every seen token towards "less likely".
            penalty = self.penalty[:, None]  # (B, 1)
            seen = logits.gather(1, self.seen)  # (B, L)
            logits = logits.scatter(1, self.seen, torch.where(seen < 0, seen * penalty, seen / penalty))
        # 2. greedy rows take the argmax; computing it for all rows is cheaper than masking.
        chosen = logits.argmax(dim=-1)  # (B,)
        sampled_rows = (self.temperature > 0).nonzero().flatten().tolist()
        if sampled_rows:
            rows = torch.tensor(sampled_rows, dtype=torch.long, device=logits.device)
            # 3. temperature, then nucleus (top-p) filtering per row, then a draw with the row's own generator.
            scaled = logits[rows] / self.temperature[rows, None]  # (S, V)
            for j, token in enumerate(self._nucleus_draws(scaled, self.top_p[rows], sampled_rows)):
                chosen[sampled_rows[j]] = token
        self.seen = torch.cat([self.seen, chosen[:, None]], dim=1)
        return chosen

    def _nucleus_draws(self, scaled: torch.Tensor, top_p: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """One token per row of ``scaled`` (S, V): a draw from the smallest set of best tokens whose probability
        mass reaches the row's ``top_p`` (the best token always stays), with generator ``self.generators[rows[j]]``.
        """
        k = min(NUCLEUS_CANDIDATES, scaled.shape[-1])
        best, best_ids = scaled.topk(k, dim=-1)  # (S, k), sorted
        probs = torch.exp(best - torch.logsumexp(scaled, dim=-1, keepdim=True))  # true probabilities, (S, k)
        mass_before = probs.cumsum(dim=-1) - probs  # probability mass of strictly better tokens
        probs = probs.masked_fill(mass_before > top_p[:, None], 0.0)
        # Tokens past the candidates have mass_before >= the candidates' mass: when that exceeds top_p, all are cut.
        inside = (mass_before[:, -1] + probs[:, -1] > top_p).tolist()
        tokens: list[int] = []
        for j, row in enumerate(rows):
            generator = self.generators[row]
            if inside[j]:
                pick = torch.multinomial(probs[j], 1, generator=generator)
                tokens.append(int(best_ids[j, pick[0]]))
                continue
            full = torch.softmax(scaled[j], dim=-1)
            ordered, order = full.sort(descending=True)
            ordered = ordered.masked_fill(ordered.cumsum(dim=-1) - ordered > top_p[j], 0.0)
            pick = torch.multinomial(ordered, 1, generator=generator)
            tokens.append(int(order[pick[0]]))
        return tokens


def _padded(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """(B, L) ids, each row padded on the right with its own first id."""
    if not all(rows):
        raise ValueError("every row needs at least one prompt token")
    width = max(len(ids) for ids in rows)
    return torch.tensor(
        [[*ids, *[ids[0]] * (width - len(ids))] for ids in rows], dtype=torch.long, device=device
    )


def _padded_cat(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """Rows of ``top`` then of ``bottom``, the narrower padded with each row's first id."""
    width = max(top.shape[1], bottom.shape[1])

    def widen(ids: torch.Tensor) -> torch.Tensor:
        extra = width - ids.shape[1]
        return torch.cat([ids, ids[:, :1].expand(-1, extra)], dim=1) if extra else ids

    return torch.cat([widen(top), widen(bottom)])
