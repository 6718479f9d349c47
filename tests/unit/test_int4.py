"""The 4-bit path for small batches: exact for GGUF Q4_1 blocks, taken only for few bf16 rows, and only in layers."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache

from models.engine import Engine, GenerationRequest
from models.engine.forward import ModelCall
from models.engine.prompt import encode_prompt
from models.int4 import (
    GROUP_SIZE,
    MAX_INT4_ROWS,
    FusedInt4,
    TwoPathLinear,
    add_int4_path,
    int4_supported,
    low_bit_paths_off,
    quantize_int4,
)
from models.loader import LoadedModel, ModelSpec, load_model
from models.threads import call_in_own_thread

pytestmark = pytest.mark.skipif(
    not int4_supported(torch.device("cpu")), reason="this torch has no CPU int4 matmul"
)


def q4_1_weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """A weight as a GGUF Q4_1 file stores it: per block of 32, ``q * d + m`` with q in 0..15 (both ends used)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k // GROUP_SIZE, GROUP_SIZE), generator=g)
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(n, k // GROUP_SIZE, 1, generator=g) * 0.01 + 0.001).bfloat16().float()
    m = (torch.randn(n, k // GROUP_SIZE, 1, generator=g) * 0.05).bfloat16().float()
    return (q * d + m).reshape(n, k)


def linear(weight: torch.Tensor) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = torch.nn.Parameter(weight.bfloat16(), requires_grad=False)
    return layer


def test_q4_1_blocks_are_reproduced_by_the_4_bit_matmul() -> None:
    w = q4_1_weight(192, 576)
    packed, scales_and_zeros = quantize_int4(w.bfloat16())
    x = torch.randn(3, 576).bfloat16()
    got = torch._weight_int4pack_mm_for_cpu(x, packed, GROUP_SIZE, scales_and_zeros).float()
    want = x.float() @ w.t()
    assert ((got - want).norm() / want.norm()).item() < 1e-2  # bf16 accumulation, not quantization error


def test_few_rows_take_the_4_bit_path_and_many_rows_the_bf16_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = TwoPathLinear(linear(q4_1_weight(64, 128)), max_rows=4)
    calls: list[tuple[int, ...]] = []
    real = torch._weight_int4pack_mm_for_cpu

    def spy(x: torch.Tensor, *args: object) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return real(x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "_weight_int4pack_mm_for_cpu", spy)
    small = torch.randn(2, 1, 128).bfloat16()  # two streams decoding: (B, T, K)
    out = layer(small)
    assert calls == [(2, 128)] and out.shape == (2, 1, 64)
    assert torch.allclose(out.float(), torch.nn.functional.linear(small, layer.weight).float(), atol=0.05)

    big = torch.randn(5, 1, 128).bfloat16()
    assert torch.equal(layer(big), torch.nn.functional.linear(big, layer.weight))
    assert calls == [(2, 128)]


def test_widths_that_do_not_fit_the_group_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of the group size"):
        quantize_int4(torch.randn(8, 40).bfloat16())
    with pytest.raises(ValueError, match="bias-free"):
        TwoPathLinear(torch.nn.Linear(64, 8, bias=True).bfloat16())


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).bfloat16().eval()


def test_every_layer_linear_gets_4_bits_and_the_head_8_bits() -> None:
    model = tiny_llama()
    assert add_int4_path(model) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer; the head
    assert isinstance(model.lm_head, TwoPathLinear) and model.lm_head.bits == 8
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.qkv_int4, FusedInt4) and attn.qkv_int4.splits == [64, 32, 32]


def test_fused_projections_equal_the_separate_4_bit_layers() -> None:
    model = tiny_llama()
    add_int4_path(model)
    attn, mlp = model.model.layers[1].self_attn, model.model.layers[1].mlp
    x = torch.randn(3, 1, 64).bfloat16()
    assert attn.qkv_int4.applies(x)
    for fused, separate in [
        (
            attn.qkv_int4(x).split(attn.qkv_int4.splits, dim=-1),
            [attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)],
        ),
        (mlp.gate_up_int4(x).split(mlp.gate_up_int4.splits, dim=-1), [mlp.gate_proj(x), mlp.up_proj(x)]),
    ]:
        for ours, theirs in zip(fused, separate, strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-2, rtol=1e-2)


def test_the_8_bit_head_scores_like_the_bf16_one() -> None:
    layer = TwoPathLinear(linear(torch.randn(500, 64) * 0.05), bits=8)
    x = torch.randn(2, 64).bfloat16()
    got, want = layer(x).float(), torch.nn.functional.linear(x, layer.weight).float()
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert ((got - want).norm() / want.norm()).item() < 2e-2


def test_a_converted_model_predicts_like_the_original() -> None:
    original = tiny_llama()
    converted = tiny_llama()
    add_int4_path(converted)
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = original(input_ids=ids[:, :1]).logits.float()
        got = converted(input_ids=ids[:, :1]).logits.float()
    cosine = torch.nn.functional.cosine_similarity(want.flatten(), got.flatten(), dim=0).item()
    assert cosine > 0.98


def test_float32_models_are_left_alone() -> None:
    model = tiny_llama().float()
    assert add_int4_path(model) == 0


@pytest.mark.slow
async def test_embedded_model_with_the_4_bit_path_predicts_like_fp32_and_serves(
    loaded_model: LoadedModel,
) -> None:
    spec = ModelSpec(source="embedded", device="cpu", dtype="bfloat16", int4_small_batches=True)
    fast = call_in_own_thread(lambda: load_model(spec))
    layers = [m for m in fast.model.modules() if isinstance(m, TwoPathLinear)]
    assert len(layers) == 30 * 7 + 1  # and the head, in 8 bits
    messages = [
        {"role": "system", "content": "You are Wick, a candle spirit who lives in a lantern."},
        {"role": "user", "content": "Ana: Wick, what do you do when it rains?"},
    ]
    ids = torch.tensor([encode_prompt(fast, messages, 16).ids])
    with torch.inference_mode():
        want = loaded_model.model(input_ids=ids).logits[0].argmax(-1)
        # One token a call: every call takes the 4-bit path, as a decoding stream does.
        cache = {ModelCall.for_model(fast.model).cache_kw: DynamicCache()}
        got = torch.stack(
            [
                fast.model(input_ids=ids[:, i : i + 1], use_cache=True, **cache).logits[0, -1].argmax()
                for i in range(ids.shape[1])
            ]
        )
    agreement = (want == got).float().mean().item()
    assert agreement > 0.9, f"4-bit single-stream top-1 agrees with fp32 at only {agreement:.0%} of positions"
    async with Engine(fast, max_batch=4) as engine:
        reply = await engine.generate(GenerationRequest(messages=messages, max_new_tokens=12))
    assert reply.new_tokens > 0 and reply.text.strip()


def test_low_bit_paths_can_be_switched_off_for_a_measurement() -> None:
    model = tiny_llama()
    add_int4_path(model)
    layer = model.model.layers[0].mlp.down_proj
    x = torch.randn(1, 1, 128).bfloat16()
    with low_bit_paths_off(model) as switched:
        assert switched == 2 * (7 + 2) + 1  # per layer 7 layers and 2 fused copies; the head
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight))
        assert not model.model.layers[0].self_attn.qkv_int4.applies(x[..., :64])
    assert layer.max_rows == MAX_INT4_ROWS and model.model.layers[0].self_attn.qkv_int4.applies(x[..., :64])
