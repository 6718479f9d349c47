"""Per-row next-token selection for a batch: each row keeps its own penalty, temperature, top-p and RNG."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.engine.api import GenerationRequest


class RowSampler:
    """Sampling state for the rows of one batch, kept as (B, ...) tensors so a step costs a few vector ops.

    Rows can be dropped (finished or cancelled) with :meth:`select`; everything stays aligned with the batch.
    """

    def __init__(
        self,
        requests: Sequence[GenerationRequest],
        prompt_ids: Sequence[Sequence[int]],
        *,
        vocab_size: int,
        device: torch.device,
        shared_generator: torch.Generator,
    ) -> None:
        batch = len(requests)
        self.temperature = torch.tensor([r.temperature for r in requests], dtype=torch.float32, device=device)
        self.top_p = torch.tensor([r.top_p for r in requests], dtype=torch.float32, device=device)
        self.penalty = torch.tensor(
            [r.repetition_penalty for r in requests], dtype=torch.float32, device=device
        )
        self.any_penalty = bool((self.penalty != 1.0).any())
        # (B, V) membership of every token seen so far (prompt + generated), as HF's repetition penalty uses.
        self.seen = torch.zeros(batch, vocab_size, dtype=torch.bool, device=device)
        for row, ids in enumerate(prompt_ids):
            self.seen[row, torch.tensor(ids, dtype=torch.long, device=device)] = True
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
        self.seen = torch.cat([self.seen, other.seen])
        self.generators = self.generators + other.generators

    def next_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """Choose one token per row from (B, V) logits; returns (B,) token ids and records them as seen."""
        logits = logits.float()  # (B, V); sampling maths in fp32 whatever the model dtype
        if self.any_penalty:
            # 1. repetition penalty (CTRL-style): shrink the logit of every seen token towards "less likely".
            penalty = self.penalty[:, None]  # (B, 1)
            penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
            logits = torch.where(self.seen, penalised, logits)
        # 2. greedy rows take the argmax; computing it for all rows is cheaper than masking.
        chosen = logits.argmax(dim=-1)  # (B,)
        sampled_rows = (self.temperature > 0).nonzero().flatten().tolist()
        if sampled_rows:
            rows = torch.tensor(sampled_rows, dtype=torch.long, device=logits.device)
            # 3. temperature, then nucleus (top-p) filtering per row.
            scaled = logits[rows] / self.temperature[rows, None]  # (S, V)
            probs = torch.softmax(scaled, dim=-1)
            sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
            mass_before = (
                sorted_probs.cumsum(dim=-1) - sorted_probs
            )  # probability mass of strictly better tokens
            sorted_probs = sorted_probs.masked_fill(
                mass_before > self.top_p[rows, None], 0.0
            )  # keeps the top token
            # 4. draw each row with its own generator (torch.multinomial takes a single generator per call).
            for j, row in enumerate(sampled_rows):
                pick = torch.multinomial(sorted_probs[j], 1, generator=self.generators[row])
                chosen[row] = sorted_idx[j, pick[0]]
        self.seen[torch.arange(chosen.shape[0], device=chosen.device), chosen] = True
        return chosen
