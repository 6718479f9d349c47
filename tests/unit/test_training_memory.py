"""Training memory (models/training/memory.py): no full-vocabulary logits, sdpa, the bf16 matmul weights, row chunks
and checkpointing are applied, and none of them changes what is learnt. A tiny random Llama stands in for the model."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models.loader import LoadedModel
from models.training import memory, trainer, worker
from models.training.data import IGNORE_INDEX, Encoded, collate
from models.training.memory import (
    FrozenLinear,
    MemoryPlan,
    lean_autocast,
    lean_lora_inputs,
    load_for_training,
)
from models.training.settings import TrainSettings
from models.training.trainer import ReplyLoss, train

VOCAB = 512
ROWS, WIDTH, TARGETS = 4, 48, 20  # a micro-batch: 4 rows of up to 48 tokens, the last 20 of each learnt
HIDDEN = 64
CPU = torch.device("cpu")


def tiny_llama(attention: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation=attention)  # fmt: skip
    model = LlamaForCausalLM(config)
    model.requires_grad_(False)
    return model


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(TrainSettings().target_modules)
    )
    return get_peft_model(model, lora)


def examples(count: int = ROWS) -> list[Encoded]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for k in range(count):
        n = WIDTH - 3 * (k % 3)
        ids = torch.randint(3, VOCAB, (n,), generator=generator).tolist()
        out.append(Encoded(ids, [IGNORE_INDEX] * (n - TARGETS) + ids[n - TARGETS :]))
    return out


class Shapes(TorchDispatchMode):
    """Every op's name and the shapes of the tensors it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(str(func))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.shapes.append(tuple(value.shape))
        return out

    def largest_with_last_dim(self, size: int) -> int:
        return max((torch.Size(s).numel() for s in self.shapes if s and s[-1] == size), default=0)


def one_step(loss_module, items, **overrides) -> None:
    settings = TrainSettings(
        batch_size=len(items), grad_accum=1, max_steps=1, learning_rate=1e-2, **overrides
    )
    train(loss_module, items, settings, pad_id=0, device=CPU, report=lambda event: None)


def test_the_training_step_never_materialises_logits_for_every_position(monkeypatch):
    model = with_lora(tiny_llama())
    items = examples()
    with Shapes() as seen:
        one_step(ReplyLoss(model), items)
    targets = sum(item.target_tokens for item in items)
    # The head ran on the target positions only: (targets, vocabulary) at most, never (rows x width, vocabulary).
    assert (targets, VOCAB) in seen.shapes
    assert seen.largest_with_last_dim(VOCAB) == targets * VOCAB
    assert HIDDEN < targets < ROWS * (WIDTH - 1)
    # And in chunks when there are more targets than HEAD_ROWS, in training and in evaluation: nothing larger than
    # the head's (transposed) weight.
    monkeypatch.setattr(trainer, "HEAD_ROWS", 5)
    with Shapes() as seen:
        one_step(ReplyLoss(model), items)
        batch = collate(items, 0)
        with torch.no_grad():
            ReplyLoss(model)(batch.input_ids, batch.attention_mask, batch.labels)
    assert (5, VOCAB) in seen.shapes
    assert seen.largest_with_last_dim(VOCAB) == HIDDEN * VOCAB


def test_training_loads_with_sdpa_and_attention_never_builds_score_matrices(monkeypatch):
    loaded = LoadedModel(model=tiny_llama(attention="eager"), tokenizer=None, device=CPU, dtype=torch.float32,
                         name="tiny", version="tiny", eos_token_ids=(2,))  # fmt: skip
    monkeypatch.setattr("models.loader.load_model", lambda spec: loaded)
    model = load_for_training(TrainSettings(), CPU, "no").model
    assert model.config._attn_implementation == "sdpa"
    assert "load_for_training(" in inspect.getsource(worker.run)  # the worker loads through it
    items = examples()
    with Shapes() as seen:
        one_step(ReplyLoss(with_lora(model)), items)
    assert any("scaled_dot_product" in op for op in seen.ops)
    assert not any(
        len(s) == 4 and s[-2:] == (WIDTH, WIDTH) and s[1] > 1 for s in seen.shapes
    )  # (rows, heads, T, T)


def test_bf16_matmul_weights_compute_what_autocast_computed():
    items = examples()
    batch = collate(items, 0)

    def loss_and_grads(lean: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        base = tiny_llama()
        if lean:
            assert lean_autocast(base, torch.bfloat16) == 2 * 7
        model = with_lora(base)
        if lean:
            lean_lora_inputs(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = ReplyLoss(model)(batch.input_ids, batch.attention_mask, batch.labels)
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]

    before, grads_before = loss_and_grads(lean=False)
    after, grads_after = loss_and_grads(lean=True)
    assert torch.equal(before, after)
    for old, new in zip(grads_before, grads_after, strict=True):
        assert torch.equal(new, old)

    base = tiny_llama()
    lean_autocast(base, torch.bfloat16)
    layer = base.model.layers[0].mlp.down_proj
    assert isinstance(layer, FrozenLinear) and layer.weight.dtype == torch.bfloat16
    assert base.model.embed_tokens.weight.dtype == torch.float32  # the residual stream stays fp32
    with torch.no_grad():  # outside autocast (evaluation, sampling) it still runs, in fp32 out
        assert base(input_ids=batch.input_ids).logits.dtype == torch.float32


def test_row_chunks_accumulate_the_gradients_of_the_whole_micro_batch():
    items = examples()
    grads = {}
    for budget_mb in (0, 1):  # 0: the whole micro-batch at once; 1 MiB: one row at a time
        model = with_lora(tiny_llama())
        plan = MemoryPlan(model, TrainSettings(memory_budget_mb=budget_mb, checkpointing="off"), CPU)
        chunks = plan.chunks(items, WIDTH)
        assert [len(c.rows) for c in chunks] == ([ROWS] if budget_mb == 0 else [1] * ROWS)
        assert [row for c in chunks for row in c.rows] == items
        loss_module = ReplyLoss(model)
        for chunk in chunks:
            batch = collate(chunk.rows, 0)
            loss_module(batch.input_ids, batch.attention_mask, batch.labels).backward()
        grads[budget_mb] = [p.grad for p in model.parameters() if p.requires_grad]
    for whole, chunked in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-6)


def test_a_wider_batch_gets_fewer_rows_per_chunk_then_checkpointing():
    model = with_lora(tiny_llama())
    plan = MemoryPlan(model, TrainSettings(memory_budget_mb=1000), CPU)
    size, checkpoint = plan.rows_per_chunk(1024, 64)
    assert not checkpoint and 1 <= size < 64
    per_token = plan.plain_per_token
    assert plan.estimate(size * 1024, per_token) <= plan.budget < plan.estimate((size + 1) * 1024, per_token)
    assert plan.rows_per_chunk(4096, 64)[0] < size
    room = plan.budget - plan.fixed
    wide = int(room // (memory.FRAGMENTATION * plan.plain_per_token)) * 2  # one row of this does not fit
    assert plan.rows_per_chunk(wide, 4)[1] is True
    assert MemoryPlan(model, TrainSettings(memory_budget_mb=1000, checkpointing="off"), CPU).rows_per_chunk(
        wide, 4
    ) == (1, False)


@pytest.mark.parametrize(("overrides", "recomputed"), [
    ({"checkpointing": "off"}, False),
    ({"checkpointing": "all"}, True),
    ({"checkpointing": "auto", "memory_budget_mb": 1}, True),  # not even one row fits: checkpoint
    ({"checkpointing": "auto"}, False),  # it fits: nothing recomputed
])  # fmt: skip
def test_checkpointing_recomputes_the_layers_only_when_the_settings_say(overrides, recomputed, monkeypatch):
    monkeypatch.setattr(
        MemoryPlan, "_measure", lambda self, device, dtype: 4096
    )  # no calibration forward to count
    model = with_lora(tiny_llama())
    calls = []
    for (
        layer
    ) in model.get_base_model().model.layers:  # a child's hooks run again when its layer is recomputed
        layer.self_attn.register_forward_pre_hook(
            lambda module, args, kwargs: calls.append(1), with_kwargs=True
        )
    items = examples()
    one_step(ReplyLoss(model), items, **overrides)
    chunks = ROWS if overrides.get("memory_budget_mb") == 1 else 1
    calls_per_forward = 2 * chunks  # two layers, once per chunk
    assert len(calls) == calls_per_forward * (2 if recomputed else 1)
    # Every layer's adapter learnt, checkpointed or not (LoRA B starts at zero).
    for name, param in model.named_parameters():
        if "lora_B" in name:
            assert param.abs().sum() > 0, name
    assert not any(
        layer.gradient_checkpointing for layer in model.get_base_model().model.layers
    )  # reset after
