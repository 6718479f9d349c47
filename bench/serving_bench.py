"""Serving benchmark: what a bursty chat sees, measured side by side in one run (``python -m bench``).

Prints single-stream tok/s; aggregate tok/s at 1, 8 and 32 concurrent requests; p50/p95 reply latency for a burst
of 32 chat messages (64-token replies) through the ChatService; time-to-first-token with and without the prefix
cache; resident memory; start-up time to ready; and, when llama-cpp-python is installed (``pip install
'.[llamacpp]'``), the same prompts through it on the same GGUF file, serialized as it serves them. Each ratio is
printed against its target. The machine is shared: compare ratios from one run; repeat the run for a range.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.engine_bench import build_requests
from bot.config import ChatConfig, GenerationConfig, PromptConfig
from bot.store import ConversationLog, Store
from cogs.chat.service import ChatMessage, ChatService, Outcome
from models.engine import Engine, GenerationRequest
from models.int4 import low_bit_paths_off
from models.loader import LoadedModel, ModelSpec, load_model
from models.persona.card import default_card_path, load_card
from models.threads import call_in_own_thread

NEW_TOKENS = 64
QUICK_NEW_TOKENS = 16
CONCURRENCY = (1, 8, 32)
BURST = 32
TTFT_REPEATS = 3
# Targets from issue 7, for this 2-core machine.
TARGET_32_VS_SINGLE = 6.0
TARGET_32_VS_LLAMACPP = 4.0
TARGET_SINGLE_VS_LLAMACPP = 0.75
TARGET_P95_S = 10.0
TARGET_RSS_GB = 1.5
LLAMACPP_TIMEOUT_S = 900


@dataclass(frozen=True)
class Throughput:
    label: str
    tokens: int
    wall_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_gb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in GB."""
    current = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # KiB on Linux
    return current, peak


def requests_for(count: int, new_tokens: int) -> list[GenerationRequest]:
    """Chat-shaped greedy requests (persona, history of 0-7 exchanges) that all run to ``new_tokens``-ish."""
    return build_requests(count, new_tokens)


async def concurrent(engine: Engine, requests: Sequence[GenerationRequest], label: str) -> Throughput:
    started = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(r) for r in requests))
    return Throughput(label, sum(g.new_tokens for g in results), time.perf_counter() - started)


async def chat_burst(engine: Engine, count: int, new_tokens: int) -> list[float]:
    """Latency (s) of each of ``count`` chat messages sent at once to a ChatService, in several channels."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "bench.db")
        try:
            service = ChatService(
                backend=engine,
                card=load_card(default_card_path()),
                log_=ConversationLog(store),
                chat=ChatConfig(cooldown_s=0.0),
                generation=GenerationConfig(max_new_tokens=new_tokens),
                prompt=PromptConfig(),
            )
            lines = [r.messages[-1]["content"] for r in build_requests(count, 1)]

            async def one(index: int) -> float:
                started = time.perf_counter()
                reply = await service.respond(
                    ChatMessage(
                        platform="discord",
                        conversation_id=f"bench-{index % 8}",
                        channel_id=str(index % 8),
                        author_id=str(index),
                        author_name=f"viewer{index}",
                        content=lines[index],
                    )
                )
                if reply.outcome is not Outcome.REPLIED:
                    raise RuntimeError(f"chat burst message {index} was not answered: {reply.outcome}")
                return time.perf_counter() - started

            return list(await asyncio.gather(*(one(i) for i in range(count))))
        finally:
            await store.close()


async def single_without_int4(engine: Engine, loaded: LoadedModel, new_tokens: int) -> Throughput | None:
    """The single stream again with the low-bit copies switched off (every call on the bf16 weights), if any."""
    with low_bit_paths_off(loaded.model) as switched:
        if not switched:
            return None
        return await concurrent(engine, requests_for(1, new_tokens), "1 concurrent, bf16 only")


async def time_to_first_token(engine: Engine, request: GenerationRequest) -> float:
    started = time.perf_counter()
    async for _ in engine.stream(request):
        return time.perf_counter() - started
    return time.perf_counter() - started


async def ttft_pair(loaded: LoadedModel, request: GenerationRequest) -> tuple[float, float]:
    """Median time-to-first-token (s) with a warm prefix cache and with none, alternating.

    One engine at a time: two engines alive means two torch thread teams on the same cores (see models/threads.py).
    """
    cached: list[float] = []
    uncached: list[float] = []
    for _ in range(TTFT_REPEATS):
        async with Engine(loaded, batch_window_ms=0, prefix_cache=True) as with_cache:
            await with_cache.generate(replace(request, max_new_tokens=1))  # fills the cache with this persona
            cached.append(await time_to_first_token(with_cache, request))
        async with Engine(loaded, batch_window_ms=0, prefix_cache=False) as without:
            uncached.append(await time_to_first_token(without, request))
    return statistics.median(cached), statistics.median(uncached)


def llamacpp_runs(count: int, new_tokens: int, threads: int) -> tuple[Throughput, Throughput] | str:
    """(single stream, ``count`` requests served one after another) through llama-cpp-python, or why not."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python not installed"
    command = [
        sys.executable,
        "-m",
        "bench.llamacpp_peer",
        "--requests",
        str(count),
        "--new-tokens",
        str(new_tokens),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=LLAMACPP_TIMEOUT_S, check=False)
    if done.returncode != 0:
        return f"llama-cpp-python failed (exit {done.returncode}: {done.stderr.strip()[-200:]})"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return (
        Throughput("llama-cpp single stream", int(result["single"][0]), float(result["single"][1])),
        Throughput(f"llama-cpp {count} serialized", int(result["serial"][0]), float(result["serial"][1])),
    )


def verdict(value: float, target: float, *, at_most: bool = False) -> str:
    ok = value <= target if at_most else value >= target
    return f"{'MET' if ok else 'NOT MET'} (target {'<=' if at_most else '>='} {target:g})"


async def main(args: argparse.Namespace) -> None:
    new_tokens = QUICK_NEW_TOKENS if args.quick else NEW_TOKENS
    threads = args.threads or os.cpu_count() or 1
    # The peer runs first, in a child process, before this process starts torch's thread pool (idle pool threads
    # spin and slowed it several-fold when it ran last).
    llama = (
        "llama-cpp skipped (--no-llamacpp)"
        if args.no_llamacpp
        else llamacpp_runs(max(CONCURRENCY), new_tokens, threads)
    )
    started = time.perf_counter()
    spec = ModelSpec(source="embedded", dtype=args.dtype, int4_small_batches=not args.no_int4)
    loaded = call_in_own_thread(lambda: load_model(spec))
    async with Engine(
        loaded, max_batch=max(CONCURRENCY), max_queue=128, default_timeout_s=900.0, torch_threads=threads
    ) as engine:
        await engine.generate(requests_for(1, 1)[0])
        startup_s = time.perf_counter() - started
        print(f"model {loaded.version} ({str(loaded.dtype).removeprefix('torch.')}), torch threads {threads}")
        print(f"start-up to ready (load, dtype probe, first token): {startup_s:.1f}s")
        loaded_rss, loaded_peak = rss_gb()
        print(f"resident memory when ready: {loaded_rss:.2f} GB, peak so far (loading) {loaded_peak:.2f} GB")

        runs: dict[int, Throughput] = {}
        for n in CONCURRENCY:
            runs[n] = await concurrent(engine, requests_for(n, new_tokens), f"{n} concurrent")
        single = runs[1]
        latencies = await chat_burst(engine, BURST, new_tokens)
        stats = engine.stats
        without_int4 = await single_without_int4(engine, loaded, new_tokens)
    cached_ttft, uncached_ttft = await ttft_pair(loaded, requests_for(1, new_tokens)[0])
    rss, peak = rss_gb()

    print(f"\n{'':28}{'tokens':>8}{'wall s':>9}{'tok/s':>9}")
    for t in (*runs.values(), *(llama if isinstance(llama, tuple) else ())):
        print(f"{t.label:28}{t.tokens:8d}{t.wall_s:9.2f}{t.tokens_per_s:9.1f}")
    print(
        f"chat burst of {BURST} x {new_tokens}-token replies: p50 {quantile(latencies, 0.5):.2f}s, "
        f"p95 {quantile(latencies, 0.95):.2f}s"
    )
    print(
        f"time to first token: prefix cache {cached_ttft * 1000:.0f} ms, no cache {uncached_ttft * 1000:.0f} ms "
        f"({uncached_ttft / cached_ttft:.1f}x)"
    )
    if without_int4 is not None:
        print(
            f"single stream without the 4-bit path: {without_int4.tokens_per_s:.1f} tok/s; "
            f"with it {single.tokens_per_s / without_int4.tokens_per_s:.2f}x that"
        )
    print(f"resident memory: {rss:.2f} GB now, {peak:.2f} GB peak")
    print(
        f"engine: largest batch {stats.largest_batch}, joined a running batch {stats.joined_running}, "
        f"prefix hits {stats.prefix_hits} / misses {stats.prefix_misses}"
    )

    print("\nratios against the targets:")
    scale = runs[32].tokens_per_s / single.tokens_per_s
    print(f"  32 concurrent / single stream: {scale:.2f}x  {verdict(scale, TARGET_32_VS_SINGLE)}")
    if isinstance(llama, str):
        print(f"  {llama}: ratio skipped")
    else:
        vs_serial = runs[32].tokens_per_s / llama[1].tokens_per_s
        vs_single = single.tokens_per_s / llama[0].tokens_per_s
        print(
            f"  32 concurrent / llama-cpp serving the same 32: {vs_serial:.2f}x  "
            f"{verdict(vs_serial, TARGET_32_VS_LLAMACPP)}"
        )
        print(
            f"  single stream / llama-cpp single: {vs_single:.2f}x  {verdict(vs_single, TARGET_SINGLE_VS_LLAMACPP)}"
        )
    p95 = quantile(latencies, 0.95)
    print(f"  chat burst p95: {p95:.2f}s  {verdict(p95, TARGET_P95_S, at_most=True)}")
    print(f"  peak resident memory: {peak:.2f} GB  {verdict(peak, TARGET_RSS_GB, at_most=True)}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_NEW_TOKENS} new tokens instead of {NEW_TOKENS}"
    )
    parser.add_argument("--dtype", default="auto", help="model dtype: auto (probe), float32 or bfloat16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = one per core)")
    parser.add_argument("--no-int4", action="store_true", help="no 4-bit path for small batches")
    parser.add_argument("--no-llamacpp", action="store_true", help="skip the llama-cpp-python comparison")
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # results appear as they come
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "aiosqlite", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(main(parse_args(argv)))
