"""Measure what batching buys: the same 16 chat requests run one at a time, then all at once, in one process.

Run: ``python -m bench.engine_bench`` (``--quick`` for fewer tokens, ``--rounds N``). The machine is shared, so
only the ratio between the two modes, measured side by side here, means much; absolute tok/s drift with background
load. The modes alternate for ``--rounds`` rounds and the fastest run of each is compared.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from models.engine import Engine, Generation, GenerationRequest
from models.loader import ModelSpec, load_model
from models.threads import call_in_own_thread

REQUESTS = 16
NEW_TOKENS = 48
QUICK_NEW_TOKENS = 16
TARGET_RATIO = 4.0
DEFAULT_ROUNDS = 2

PERSONA = (
    "You are Mira, a cheerful red fox who lives at the edge of the Whispering Woods. You run a tiny tea stall for "
    "travellers, collect shiny buttons, and cannot resist a pun. You speak warmly and briefly, in one to three "
    "sentences, and you never mention being an AI. You remember regulars by name and ask about their day. "
    "You dislike thunderstorms, love blackberry scones, and your best friend is Oswin, a grumpy old badger who "
    "secretly enjoys your jokes. Stay in character as Mira at all times."
)
EXAMPLE_DIALOGUE = (
    "Example of how Mira talks:\nTraveller: Is the tea any good?\nMira: Good? It's tea-rrific! Fresh nettle and "
    "honey, brewed this morning.\nTraveller: Any news from the woods?\nMira: Oswin says the river's high, but he "
    "says that every spring. Grumpy badger, soft heart."
)
USER_LINES = (
    "Hi Mira! What tea do you recommend today?",
    "I had a long walk through the woods, my feet hurt.",
    "Have you seen Oswin lately? He owes me a book.",
    "Tell me a pun about foxes, please.",
    "It looks like rain. Are you closing the stall early?",
    "What's the strangest button in your collection?",
    "My sister is visiting next week. Any ideas for a gift?",
    "Do you ever leave the Whispering Woods?",
)
MIRA_LINES = (
    "Welcome back! The nettle and honey is lovely today.",
    "Oh no, sit down and rest those paws. Tea is on me.",
    "He was grumbling by the river this morning. I'll remind him!",
    "Why did the fox sit by the stall? For a little foxy tea!",
)


@dataclass(frozen=True)
class RunResult:
    """One way of running all the requests."""

    label: str
    wall_s: float
    generations: tuple[Generation, ...]

    @property
    def new_tokens(self) -> int:
        return sum(g.new_tokens for g in self.generations)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s

    def latency(self, quantile: float) -> float:
        latencies = sorted(g.latency_s for g in self.generations)
        return latencies[min(len(latencies) - 1, round(quantile * (len(latencies) - 1)))]


def build_requests(count: int, new_tokens: int) -> list[GenerationRequest]:
    """Persona-sized chat prompts whose histories grow from 0 to 7 earlier exchanges."""
    requests = []
    for index in range(count):
        system = f"{PERSONA}\n\n{EXAMPLE_DIALOGUE}" if index % 2 == 0 else PERSONA
        messages = [{"role": "system", "content": system}]
        for turn in range(index % 8):
            messages.append({"role": "user", "content": USER_LINES[turn]})
            messages.append({"role": "assistant", "content": MIRA_LINES[turn % len(MIRA_LINES)]})
        messages.append({"role": "user", "content": USER_LINES[(index * 3) % len(USER_LINES)]})
        requests.append(
            GenerationRequest(
                messages=messages, max_new_tokens=new_tokens, temperature=0.0, repetition_penalty=1.1
            )
        )
    return requests


async def run_sequential(engine: Engine, requests: Sequence[GenerationRequest]) -> RunResult:
    started = time.perf_counter()
    results = [await engine.generate(r) for r in requests]
    return RunResult("sequential", time.perf_counter() - started, tuple(results))


async def run_concurrent(engine: Engine, requests: Sequence[GenerationRequest]) -> RunResult:
    started = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(r) for r in requests))
    return RunResult("concurrent", time.perf_counter() - started, tuple(results))


def report(result: RunResult) -> None:
    print(
        f"{result.label:>11}: {result.new_tokens:4d} tokens in {result.wall_s:6.2f}s = {result.tokens_per_s:6.1f} tok/s"
        f" | latency p50 {result.latency(0.5):5.2f}s p95 {result.latency(0.95):5.2f}s"
    )


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    spec = ModelSpec(source="embedded", dtype=args.dtype, int4_small_batches=not args.no_int4)
    loaded = call_in_own_thread(lambda: load_model(spec))
    print(
        f"model {loaded.version} on {loaded.device} ({loaded.dtype}) loaded in {time.perf_counter() - started:.1f}s"
    )
    new_tokens = QUICK_NEW_TOKENS if args.quick else NEW_TOKENS
    requests = build_requests(REQUESTS, new_tokens)
    rounds: list[tuple[RunResult, RunResult]] = []
    async with Engine(loaded, max_batch=REQUESTS, max_queue=REQUESTS * 2, default_timeout_s=600.0) as engine:
        await engine.generate(build_requests(1, 4)[0])  # warm-up: first calls pay one-off allocation costs
        # Alternate the two modes so a burst of background load hits both rather than one.
        for _ in range(args.rounds):
            rounds.append((await run_sequential(engine, requests), await run_concurrent(engine, requests)))
        stats = engine.stats
    prompt_tokens = [g.prompt_tokens for g in rounds[0][0].generations]
    print(
        f"{REQUESTS} requests, greedy, max {new_tokens} new tokens, prompts {min(prompt_tokens)}-{max(prompt_tokens)}"
        f" tokens, {args.rounds} round(s)"
    )
    for index, (sequential, concurrent) in enumerate(rounds, 1):
        print(f"round {index}:")
        report(sequential)
        report(concurrent)
        print(f"      ratio: {concurrent.tokens_per_s / sequential.tokens_per_s:.2f}x")
    # The fastest run of each mode is the one least disturbed by other processes on a shared machine.
    best_sequential = min((r[0] for r in rounds), key=lambda r: r.wall_s)
    best_concurrent = min((r[1] for r in rounds), key=lambda r: r.wall_s)
    ratio = best_concurrent.tokens_per_s / best_sequential.tokens_per_s
    same = sum(a.text == b.text for s, c in rounds for a, b in zip(s.generations, c.generations, strict=True))
    print("best of each mode:")
    report(best_sequential)
    report(best_concurrent)
    print(f"throughput ratio concurrent/sequential: {ratio:.2f}x (target >= {TARGET_RATIO:.0f}x)")
    print(
        f"greedy outputs identical alone vs batched: {same}/{REQUESTS * len(rounds)}; largest batch "
        f"{stats.largest_batch}; prefix cache hits {stats.prefix_hits}, misses {stats.prefix_misses}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_NEW_TOKENS} new tokens instead of {NEW_TOKENS}"
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="alternating sequential/concurrent rounds"
    )
    parser.add_argument("--dtype", default="auto", help="auto (timed probe), float32 or bfloat16")
    parser.add_argument("--no-int4", action="store_true", help="no 4-bit path for small batches (bf16 only)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parse_args()))
