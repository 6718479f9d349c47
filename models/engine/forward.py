"""How to call a causal LM's forward pass across transformers versions, returning only what decoding needs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache


@dataclass(frozen=True)
class ModelCall:
    """How to call a model's forward: transformers renamed both keywords between 4.x and 5.x."""

    cache_kw: str
    logits_kw: str | None

    @classmethod
    def for_model(cls, model: Any) -> ModelCall:
        params = inspect.signature(model.forward).parameters
        has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        cache_kw = "past_key_values" if "past_key_values" in params else "cache"
        if "logits_to_keep" in params or (has_var_kw and "num_logits_to_keep" not in params):
            logits_kw: str | None = "logits_to_keep"
        elif "num_logits_to_keep" in params:
            logits_kw = "num_logits_to_keep"
        else:
            logits_kw = None
        return cls(cache_kw=cache_kw, logits_kw=logits_kw)

    def last_logits(
        self,
        model: Any,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache,
    ) -> torch.Tensor:
        """Run the model on (B, T) inputs and return the (B, V) logits of the last position."""
        kwargs: dict[str, Any] = {self.cache_kw: cache}
        if self.logits_kw == "logits_to_keep":
            # (B, 1, V) instead of (B, T, V): the prefill of 16 long prompts would need GBs. An index tensor, not
            # the int 1: transformers slices hidden[:, -1:] for an int, a non-contiguous view that makes the LM
            # head's matmul expand (copy) its whole (H, V) weight once per row (0.5 GB for 8 rows in bf16).
            kwargs[self.logits_kw] = torch.tensor([input_ids.shape[1] - 1], device=input_ids.device)
        elif self.logits_kw is not None:
            kwargs[self.logits_kw] = 1
        out = model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs
        )
        return out.logits[:, -1, :]
