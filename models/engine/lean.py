"""A lean decode step for Llama-architecture models: the same weights and maths as transformers' forward, with a
fraction of its per-call overhead.

Why: once the weights are read in 4 bits, a single stream's decode step on the 2-core machine is mostly Python:
transformers' forward builds a 4D mask, dispatches through decorators, hooks and attention registries, and runs a
dozen small modules per layer (~10 ms of an 18 ms step for the embedded model's 30 layers). This step calls the
layers' own projections (so the 4-bit path and any swapped-in module still apply), the model's own rotary
embedding (so RoPE scaling variants stay right) and one fused RMSNorm per norm, and nothing else.

Used for decode steps (one new token per row) over the engine's preallocated cache; prefill and any model that is
not plainly a Llama (biases, sliding windows, other norms) keep transformers' forward. Logits match transformers'
forward to float rounding (tested in fp32 on a tiny random Llama and on the embedded model).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from models.engine.kvcache import PreallocatedLayer
from models.engine.shared_prefix import SharedPrefixes

SUPPORTED_MODEL_TYPES = ("llama",)


def _rms_norm(x: torch.Tensor, norm: Any) -> torch.Tensor:
    """LlamaRMSNorm as one fused op. The same maths; in bf16 it rounds once where transformers rounds twice."""
    return F.rms_norm(x, (x.shape[-1],), weight=norm.weight, eps=norm.variance_epsilon)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class LeanDecoder:
    """One decode step for a supported model; build it with :meth:`for_model`, which says None otherwise."""

    def __init__(self, model: Any) -> None:
        config = model.config
        inner = model.model
        self.layers = list(inner.layers)
        self.embed = inner.embed_tokens
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.head = model.lm_head
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads or config.num_attention_heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )

    @classmethod
    def for_model(cls, model: Any) -> LeanDecoder | None:
        """A decoder for ``model`` when it is a plain Llama (no biases, no sliding window), else None."""
        config = getattr(model, "config", None)
        inner = getattr(model, "model", None)
        if (
            config is None
            or inner is None
            or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES
        ):
            return None
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            return None
        if getattr(config, "sliding_window", None) or getattr(config, "pretraining_tp", 1) not in (None, 1):
            return None
        needed = ("layers", "embed_tokens", "norm", "rotary_emb")
        if not all(hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
            return None
        return cls(model)

    @staticmethod
    def handles(cache: Any) -> bool:
        """Whether ``cache`` is the engine's preallocated kind, the only one this step writes to."""
        layers = getattr(cache, "layers", None) or ()
        return bool(layers) and all(isinstance(layer, PreallocatedLayer) for layer in layers)

    def step(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        shared: SharedPrefixes | None = None,
    ) -> torch.Tensor:
        """(B, 1) new tokens, (B, W) mask (1 = real), (B, 1) positions -> (B, V) next-token logits.

        With ``shared``, ``cache`` and ``mask`` hold each row's own tokens only and rows also attend to their shared
        system turns (shared_prefix.py).
        """
        batch = input_ids.shape[0]
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        groups = heads // kv_heads
        x = self.embed(input_ids)  # (B, 1, hidden)
        cos, sin = self.rotary(x, positions)  # (B, 1, D) each
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, 1, D): the same for every head
        # An additive mask made once per step: a boolean one is converted by every layer's attention call.
        bias = torch.zeros((batch, 1, 1, mask.shape[1]), dtype=x.dtype, device=x.device)  # (B, 1, 1, W)
        bias.masked_fill_(mask[:, None, None, :] == 0, float("-inf"))
        for index, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = _rms_norm(x, layer.input_layernorm)
            qkv = getattr(attn, "qkv_int4", None)  # one 4-bit matmul for the three (models/int4.py)
            if qkv is not None and qkv.applies(h):
                qk, v = qkv(h).split([(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
            else:
                qk, v = torch.cat([attn.q_proj(h), attn.k_proj(h)], dim=-1), attn.v_proj(h)
            # Queries and keys rotate together: one set of small ops per layer instead of two.
            qk = _rotate(
                qk.view(batch, 1, heads + kv_heads, dim).transpose(1, 2), cos, sin
            )  # (B, H + KV, 1, D)
            q, k = qk[:, :heads], qk[:, heads:]
            v = v.view(batch, 1, kv_heads, dim).transpose(1, 2)  # (B, KV, 1, D)
            keys, values = cache.layers[index].update(k, v)  # (B, KV, W, D)
            # The query heads that share a key/value head become that head's G queries: no copy of the cache.
            q = q.reshape(batch, kv_heads, groups, dim)
            if shared is None:
                out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias, scale=attn.scaling)
            else:
                out = shared.attend(index, q, keys, values, bias, attn.scaling)  # (B, KV, G, D)
            x = x + attn.o_proj(out.reshape(batch, 1, heads * dim))
            h = _rms_norm(x, layer.post_attention_layernorm)
            gate_up = getattr(mlp, "gate_up_int4", None)
            if gate_up is not None and gate_up.applies(h):
                gate, up = gate_up(h).split(gate_up.splits, dim=-1)
            else:
                gate, up = mlp.gate_proj(h), mlp.up_proj(h)
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        return self.head(_rms_norm(x, self.norm))[:, -1, :]
