"""Loss masks, batching and the schedule, with the embedded model's real tokenizer (no weights loaded)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from models.dataset import DatasetLimits, build_dataset
from models.persona import Card
from models.training.data import (
    IGNORE_INDEX,
    collate,
    encode_all,
    encode_example,
    end_of_turn_id,
    length_grouped_batches,
)
from models.training.settings import TrainSettings
from models.training.trainer import ReplyLoss, lr_factor, plan_steps, train


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from models.loader import embedded_gguf_path

    path = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


RAW = DatasetLimits(quality=None)  # logged_rows() is templated: the quality step would drop most of it


def logged_rows():
    rows, i = [], 0
    for c in range(6):
        for k in range(3):
            i += 1
            rows.append(dict(id=i, platform="console", conversation_id=f"c{c}", platform_message_id=None,
                             author_id="local", author_name="Ann", role="user", content=f"tell me about lamp {c}.{k}",
                             reply_to_platform_id=None, created_at=float(i), rating=None))  # fmt: skip
            i += 1
            rows.append(dict(id=i, platform="console", conversation_id=f"c{c}", platform_message_id=None,
                             author_id="familiar", author_name="Wick", role="assistant",
                             content=f"Lamp {c}.{k} glows {'warmly ' * k}tonight.", reply_to_platform_id=None,
                             created_at=float(i), rating=None))  # fmt: skip
    return rows


def test_every_example_mask_is_nonempty_and_ends_with_end_of_turn(tokenizer):
    card = Card(
        name="Wick",
        description="A candle spirit in a lantern.",
        mes_example="<START>\n{{user}}: hi\n{{char}}: Hello!",
    )
    ds = build_dataset(
        logged_rows(),
        card=card,
        allowed=lambda p, u, t: True,
        limits=DatasetLimits(eval_fraction=0.2, quality=None),
    )
    assert ds.size == 18
    eot = end_of_turn_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(eot) == "<|im_end|>"
    encoded, skipped = encode_all(tokenizer, ds.train + ds.eval, max_tokens=512)
    assert skipped == 0 and len(encoded) == 18
    for item, example in zip(encoded, ds.train + ds.eval, strict=True):
        targets = [t for t, label in zip(item.input_ids, item.labels, strict=True) if label != IGNORE_INDEX]
        assert targets, "empty loss mask"
        assert targets[-1] == eot and item.input_ids[-1] == eot
        # the masked-in tokens are exactly the reply and its end-of-turn token
        assert tokenizer.decode(targets[:-1]) == example["messages"][-1]["content"]
        first = item.labels.index(next(label for label in item.labels if label != IGNORE_INDEX))
        assert all(label == IGNORE_INDEX for label in item.labels[:first])


def test_packed_example_learns_every_marked_reply_with_its_end_of_turn(tokenizer):
    from models.training.data import encode_example

    messages = [
        {"role": "system", "content": "You are Wick."},
        {"role": "user", "content": "Ann: hi"},
        {"role": "assistant", "content": "Hello Ann!", "train": True},
        {"role": "user", "content": "Bo: rain?"},
        {"role": "assistant", "content": "*shrinks* No rain, please.", "train": True},
    ]
    encoded = encode_example(tokenizer, messages, 512)
    assert encoded is not None
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    whole = tokenizer(tokenizer.apply_chat_template(plain, tokenize=False), add_special_tokens=False)[
        "input_ids"
    ]
    assert (
        encoded.input_ids == whole[: len(encoded.input_ids)]
    )  # the same ids as the whole chat, segment by segment
    learnt = tokenizer.decode(
        [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != -100]
    )
    assert learnt == "Hello Ann!<|im_end|>*shrinks* No rain, please.<|im_end|>"
    assert encode_example(tokenizer, messages, 20) is None  # a packed example is never shortened: left out


def test_too_long_examples_lose_old_context_never_the_reply(tokenizer):
    messages = [
        {"role": "system", "content": "You are Wick."},
        *[{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 40} for i in range(6)],
        {"role": "user", "content": "Ann: last question"},
        {"role": "assistant", "content": "The final answer."},
    ]
    full = encode_example(tokenizer, messages, max_tokens=10_000)
    short = encode_example(tokenizer, messages, max_tokens=120)
    assert short is not None and len(short.input_ids) <= 120 < len(full.input_ids)
    assert short.target_tokens == full.target_tokens
    assert encode_example(tokenizer, messages, max_tokens=10) is None


def test_length_grouped_batches_are_deterministic_and_cover_everything(tokenizer):
    ds = build_dataset(logged_rows(), card=Card(name="Wick"), allowed=lambda p, u, t: True, limits=RAW)
    items, _ = encode_all(tokenizer, ds.train + ds.eval, 512)
    a = length_grouped_batches(items, 4, seed=1)
    assert a == length_grouped_batches(items, 4, seed=1)
    assert a != length_grouped_batches(items, 4, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(len(items)))
    batch = collate([items[i] for i in a[0]], tokenizer.pad_token_id)
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
    assert batch.tokens == int(batch.attention_mask.sum())


def test_schedule_warms_up_then_decays():
    values = [lr_factor(s, total=20, warmup=4, min_ratio=0.1) for s in range(21)]
    assert values[0] == pytest.approx(0.25) and values[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[3:]))
    assert values[20] == pytest.approx(0.1)
    assert plan_steps(TrainSettings(batch_size=4, grad_accum=2, epochs=3), 18) == (8, 3)
    assert plan_steps(TrainSettings(batch_size=4, grad_accum=2, max_steps=5), 18) == (5, 2)
    # A small dataset (a card alone) is gone over more often to reach min_steps, but never more than 30 times.
    assert plan_steps(TrainSettings(batch_size=4, grad_accum=2, epochs=3, min_steps=30), 18) == (30, 12)
    assert plan_steps(TrainSettings(batch_size=4, grad_accum=1, epochs=3, min_steps=30), 400) == (300, 3)
    assert plan_steps(TrainSettings(batch_size=4, grad_accum=1, epochs=3, min_steps=100), 4) == (30, 30)


def test_tiny_model_trains_only_lora_and_reports_progress(tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ds = build_dataset(logged_rows(), card=Card(name="Wick"), allowed=lambda p, u, t: True, limits=RAW)
    items, _ = encode_all(tokenizer, ds.train, 256)
    events = []
    settings = TrainSettings(batch_size=4, grad_accum=2, max_steps=6, learning_rate=5e-3, warmup_ratio=0.2)
    loss_module = ReplyLoss(model)
    stats = train(loss_module, items, settings, pad_id=tokenizer.pad_token_id, device=torch.device("cpu"),
                  report=events.append)  # fmt: skip
    assert stats.steps == 6 and stats.tokens > 0
    assert events[0]["step"] == 1 and events[-1]["step"] == 6 and events[-1]["eta_s"] == 0
    json.dumps(events)  # progress events are plain JSON
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"{name} changed"
    # The loss module's summed loss equals a plain full-logits cross-entropy over the same targets.
    batch = collate(items[:3], tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        ours = loss_module(batch.input_ids, batch.attention_mask, batch.labels)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        ref = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch.labels[:, 1:].reshape(-1), reduction="sum"
        )
    assert float(ours) == pytest.approx(float(ref), rel=1e-4)


def test_tiny_model_resumes_from_a_checkpoint_to_the_same_weights(tokenizer, tmp_path):
    """Stopped after 3 of 6 steps and resumed from its checkpoint, a run ends where an uninterrupted one does."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.training import checkpoint

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    ds = build_dataset(logged_rows(), card=Card(name="Wick"), allowed=lambda p, u, t: True, limits=RAW)
    items, _ = encode_all(tokenizer, ds.train, 256)

    def fresh_model():
        torch.manual_seed(0)
        # Dropout draws random numbers: the checkpoint must restore the generators too.
        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.1)
        return get_peft_model(LlamaForCausalLM(config), lora)

    def run(model, settings, report):
        torch.manual_seed(1)  # the same dropout draws in every run (a resumed one restores its own)
        return train(ReplyLoss(model), items, settings, pad_id=tokenizer.pad_token_id, device=torch.device("cpu"),
                     report=report)  # fmt: skip

    def lora_weights(model):
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    base = TrainSettings(batch_size=4, grad_accum=1, max_steps=6, learning_rate=5e-3, warmup_ratio=0.2)
    whole = fresh_model()
    run(whole, base, lambda event: None)

    # The stopped run: the same plan, cut after step 3 (a checkpoint after every step: interval 0).
    ckpt_dir = tmp_path / "checkpoints"
    stopped_events: list[dict] = []
    stopped = fresh_model()
    plan = TrainSettings(**{**base.__dict__, "checkpoint_dir": str(ckpt_dir), "checkpoint_every_s": 0.0})
    with pytest.raises(_Stopped):
        run(stopped, plan, _StopAfter(3, stopped_events))
    assert [e["step"] for e in stopped_events if e["event"] == "checkpoint"] == [1, 2, 3]
    latest = checkpoint.latest(ckpt_dir)
    assert latest is not None and checkpoint.info(latest)["step"] == 3
    assert [p.name for p in ckpt_dir.iterdir()] == [latest.name]  # older checkpoints are dropped

    resumed_events: list[dict] = []
    resumed = fresh_model()  # a new process: fresh LoRA init, everything comes from the checkpoint
    stats = run(
        resumed, TrainSettings(**{**plan.__dict__, "resume_from": str(latest)}), resumed_events.append
    )
    assert resumed_events[0] == {"event": "resume", "step": 3, "total_steps": 6}
    steps = [e["step"] for e in resumed_events if e["event"] == "progress"]
    assert steps[0] == 4 and steps[-1] == 6 and stats.steps == 6 and stats.resumed_from == 3
    assert checkpoint.info(checkpoint.latest(ckpt_dir))["step"] == 6  # the last step is always saved
    expected = lora_weights(whole)
    for name, value in lora_weights(resumed).items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


class _Stopped(Exception):
    pass


class _StopAfter:
    """A report callback that stops training once the checkpoint of step `n` is saved (as a kill would, later)."""

    def __init__(self, n: int, events: list) -> None:
        self.n, self.events = n, events

    def __call__(self, event: dict) -> None:
        self.events.append(event)
        if event["event"] == "checkpoint" and event["step"] == self.n:
            raise _Stopped
