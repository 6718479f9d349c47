"""The process-wide generation engine: a bounded queue in front of one worker thread that owns the model.

Callers on the event loop ``await engine.generate(request)`` (or iterate ``engine.stream(request)``). The worker
thread keeps one running batch (decode.py). When it is idle, the first request waits ``batch_window_ms`` for
company; while it runs, requests that arrive join it between two decode steps (continuous batching), up to
``max_batch`` rows. Each result goes back to the loop the moment its row finishes. The event loop never runs the
model; the model is never touched by two threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from types import TracebackType

import torch

from models.engine.api import (
    EngineBusy,
    EngineClosed,
    EngineError,
    EngineStats,
    EngineTimeout,
    Generation,
    GenerationRequest,
)
from models.engine.decode import DecodeBatch, Row, RowOutcome
from models.engine.forward import ModelCall
from models.engine.prefill import PrefixCache
from models.engine.prompt import EncodedPrompt, encode_prompt
from models.loader import LoadedModel, trim_heap

log = logging.getLogger(__name__)

# Bounds on the constructor's knobs: beyond these a setting is a typo, not a tuning choice.
MAX_BATCH_LIMIT = 64
MAX_BATCH_WINDOW_MS = 1000
MAX_QUEUE_LIMIT = 4096
WORKER_THREAD_NAME = "familiar-engine"
TRIM_AFTER_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(eq=False)
class _Job:
    """One request travelling from the loop to the worker and back."""

    request: GenerationRequest
    prompt: EncodedPrompt
    encoded_with: LoadedModel  # re-encode if the model was swapped before the job ran
    future: asyncio.Future[Generation]
    submitted: float  # time.monotonic()
    started: float = 0.0
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Streaming jobs get their text here, piece by piece, then None; at most one piece per token (bounded).
    deltas: asyncio.Queue[str | None] | None = None


def _settle(job: _Job, result: Generation | BaseException) -> None:
    """Complete the job's future on its loop unless its awaiter already gave up (cancelled or timed out)."""
    if job.deltas is not None:
        job.deltas.put_nowait(None)  # end of stream: the reader then reads the future
    future = job.future
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Engine:
    """Batched generation for the whole process; implements :class:`models.backend.GenerationBackend`.

    Use as ``async with Engine(loaded) as engine:`` or call :meth:`start` and :meth:`close` yourself.
    At most ``max_queue`` requests wait and at most ``max_batch`` run at once; a request beyond that is refused
    with :class:`EngineBusy` straight away rather than queued without bound. Each result goes back to the event
    loop that awaited it, so callers on different loops (e.g. tests) can share one engine. The KV state of recent
    system turns (the persona) is cached, so requests for the same character skip most of their prefill.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch: int = 16,
        batch_window_ms: int = 15,
        max_queue: int = 64,
        default_timeout_s: float = 60.0,
        torch_threads: int | None = None,
        prefix_cache: bool = True,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH_LIMIT:
            raise ValueError(f"max_batch must be in 1..{MAX_BATCH_LIMIT}, got {max_batch}")
        if not 0 <= batch_window_ms <= MAX_BATCH_WINDOW_MS:
            raise ValueError(f"batch_window_ms must be in 0..{MAX_BATCH_WINDOW_MS}, got {batch_window_ms}")
        if not 1 <= max_queue <= MAX_QUEUE_LIMIT:
            raise ValueError(f"max_queue must be in 1..{MAX_QUEUE_LIMIT}, got {max_queue}")
        if default_timeout_s <= 0:
            raise ValueError(f"default_timeout_s must be > 0, got {default_timeout_s}")
        if torch_threads is not None and not 1 <= torch_threads <= (os.cpu_count() or 1) * 2:
            raise ValueError(f"torch_threads must be between 1 and twice the CPU count, got {torch_threads}")
        self._loaded = loaded
        self._call = ModelCall.for_model(loaded.model)
        self._max_batch = max_batch
        self._batch_window_s = batch_window_ms / 1000
        self._max_queue = max_queue
        self._default_timeout_s = default_timeout_s
        # None = one thread per core: decode is a chain of small matmuls, more threads than cores only contend.
        self._torch_threads = torch_threads or os.cpu_count() or 1
        self._use_prefix_cache = prefix_cache

        # One condition guards the queue, the running batch, the model reference and the counters.
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._closing = False
        self._started = False
        self._thread: threading.Thread | None = None
        # Fast tokenizers are not guaranteed safe to share between threads; calls are short, so a lock is cheap.
        self._tokenizer_lock = threading.Lock()
        self._generators: dict[torch.device, torch.Generator] = {}
        self._prefixes: PrefixCache | None = None  # worker thread only
        self._prefix_counted = (0, 0)  # the prefix cache's (hits, misses) already in the stats
        self._stats = EngineStats()

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker thread; requests may be submitted from this event loop afterwards."""
        if self._closing:
            raise EngineClosed("this engine has been closed; create a new one")
        if self._started:
            return
        self._thread = threading.Thread(target=self._worker, name=WORKER_THREAD_NAME, daemon=True)
        self._started = True
        self._thread.start()
        log.info(
            "engine started: %s (%s), max_batch=%d, window=%.0fms, max_queue=%d, torch threads=%d",
            self._loaded.version,
            str(self._loaded.dtype).removeprefix("torch."),
            self._max_batch,
            self._batch_window_s * 1000,
            self._max_queue,
            self._torch_threads,
        )

    async def close(self) -> None:
        """Fail waiting requests with :class:`EngineClosed`, stop the running batch, and join the worker."""
        with self._cond:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                waiting = list(self._pending)
                self._pending.clear()
                self._cond.notify_all()
        if already:
            return
        for job in waiting:
            _settle(job, EngineClosed("the engine closed before this request ran"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        log.info("engine closed: %s", self.stats)

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the backend API ----------------------------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """Version of the model that the next batch will use."""
        return self._loaded.version

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the ones running now)."""
        return len(self._pending)

    @property
    def stats(self) -> EngineStats:
        """A snapshot of the counters."""
        with self._cond:
            return self._stats

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the current model's tokenizer (no special tokens added)."""
        with self._tokenizer_lock:
            return len(self._loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def generate(self, request: GenerationRequest, *, timeout: float | None = None) -> Generation:
        """Run ``request`` (joining the running batch as soon as there is room) and return its result.

        Raises ValueError (prompt does not fit the context), :class:`EngineBusy` (queue full),
        :class:`EngineTimeout`, :class:`EngineClosed` or :class:`EngineError` (the batch crashed).
        """
        job = self._submit(request, streaming=False)
        limit = self._default_timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await job.future
        except TimeoutError:
            self._withdraw(job)
            raise EngineTimeout(f"generation did not finish within {limit:.1f}s") from None
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    async def stream(self, request: GenerationRequest, *, timeout: float | None = None) -> AsyncIterator[str]:
        """Yield the reply's text as it is generated, in pieces; raw like :meth:`generate`'s ``text``.

        The pieces join to exactly that text: a stop string (or the start of one) is never shown, nor half of a
        character. Raises what :meth:`generate` raises; leaving the loop early cancels the request.
        """
        job = self._submit(request, streaming=True)
        assert job.deltas is not None
        limit = self._default_timeout_s if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + limit
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        piece = await job.deltas.get()
                except TimeoutError:
                    raise EngineTimeout(f"generation did not finish within {limit:.1f}s") from None
                if piece is None:
                    break
                yield piece
            job.future.result()  # raises the batch's failure, if there was one
        finally:
            if not job.future.done():
                self._withdraw(job)
                job.future.cancel()  # nobody reads it any more

    def _submit(self, request: GenerationRequest, *, streaming: bool) -> _Job:
        """Encode ``request`` and queue it; raises at once when the engine is closed or the queue is full."""
        if not self._started or self._closing:
            raise EngineClosed("the engine is not running" if not self._started else "the engine is closed")
        loop = asyncio.get_running_loop()
        loaded = self._loaded
        with self._tokenizer_lock:
            prompt = encode_prompt(loaded, request.messages, request.max_new_tokens)
        deltas: asyncio.Queue[str | None] | None = (
            asyncio.Queue(maxsize=request.max_new_tokens + 2) if streaming else None
        )
        job = _Job(request, prompt, loaded, loop.create_future(), time.monotonic(), deltas=deltas)
        with self._cond:
            if self._closing:
                raise EngineClosed("the engine is closed")
            if len(self._pending) >= self._max_queue:
                raise EngineBusy(
                    f"the generation queue is full ({len(self._pending)} requests waiting); try again shortly"
                )
            self._pending.append(job)
            self._cond.notify()
        return job

    async def swap_model(self, loaded: LoadedModel) -> None:
        """Serve ``loaded`` from the next batch on; the running batch finishes on the old weights.

        Requests still queued were tokenized for the old model and are re-tokenized when their batch starts, so
        no request fails because of the swap.
        """
        call = ModelCall.for_model(loaded.model)
        with self._cond:
            old, self._loaded, self._call = self._loaded.version, loaded, call
            self._stats = replace(self._stats, swaps=self._stats.swaps + 1)
        log.info("model swapped: %s -> %s", old, loaded.version)

    # -- internals ----------------------------------------------------------------------------------------------

    def _withdraw(self, job: _Job) -> None:
        """The awaiter gave up: take the job out of the queue, or mark it so the worker drops its row."""
        job.cancelled.set()
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return  # already running (the worker counts it) or finished
            self._stats = replace(self._stats, requests_cancelled=self._stats.requests_cancelled + 1)

    def _deliver(self, job: _Job, result: Generation | BaseException) -> None:
        """Hand a result to the job's loop from the worker thread."""
        try:
            job.future.get_loop().call_soon_threadsafe(_settle, job, result)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("dropped a result: event loop closed")

    def _deliver_delta(self, job: _Job, text: str) -> None:
        """Hand a piece of a streaming job's text to its loop from the worker thread."""
        if job.deltas is None or job.cancelled.is_set():
            return
        try:
            job.future.get_loop().call_soon_threadsafe(job.deltas.put_nowait, text)
        except RuntimeError:
            log.debug("dropped a text piece: event loop closed")

    def _prefixes_for(self, loaded: LoadedModel) -> PrefixCache | None:
        """The prefix cache for ``loaded``; a swapped-in model starts a fresh one (old KV states are invalid)."""
        if not self._use_prefix_cache:
            return None
        if self._prefixes is None or self._prefixes.owner is not loaded:
            self._prefixes = PrefixCache(loaded)
            self._prefix_counted = (0, 0)
        return self._prefixes

    def _generator_for(self, device: torch.device) -> torch.Generator:
        """The shared RNG for unseeded sampling on ``device``, seeded from the OS once."""
        if device not in self._generators:
            seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
            self._generators[device] = torch.Generator(device=device).manual_seed(seed)
        return self._generators[device]

    def _take(self, batch: DecodeBatch | None) -> tuple[list[_Job], LoadedModel, ModelCall] | None:
        """Jobs to admit now: block while idle, then wait the batch window; while a batch runs, take at once.

        Returns None when the engine is closing. While a batch of an older model (before swap_model) still
        runs, nothing joins it: new jobs wait for the new model. The list may be empty.
        """
        with self._cond:
            if batch is None or not batch:
                while not self._pending and not self._closing:
                    self._cond.wait()
                deadline = time.monotonic() + self._batch_window_s
                while not self._closing and len(self._pending) < self._max_batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                room = self._max_batch
            else:
                room = self._max_batch - len(batch) if batch.loaded is self._loaded else 0
            if self._closing:
                return None
            jobs = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
            return jobs, self._loaded, self._call

    def _worker(self) -> None:
        """Thread body: admit jobs and step the running batch until close()."""
        torch.set_num_threads(self._torch_threads)
        batch: DecodeBatch | None = None
        while True:
            taken = self._take(batch)
            if taken is None:
                if batch is not None:
                    self._fail_rows(
                        batch.rows, EngineClosed("the engine closed while this request was generating")
                    )
                return
            jobs, loaded, call = taken
            if batch is None or (not batch and batch.loaded is not loaded):
                batch = self._new_batch(loaded, call)
            if jobs:
                self._admit(batch, jobs)
            if not batch:
                continue
            try:
                with torch.inference_mode():
                    batch.step()
            except Exception as exc:  # a crash must cost only this batch's requests, never the worker
                log.exception(
                    "generation batch of %d request(s) failed on %s", len(batch), batch.loaded.version
                )
                self._fail_rows(batch.rows, EngineError(f"generation failed: {type(exc).__name__}: {exc}"))
                batch = None
            if batch is None:
                trim_heap()
            elif not batch and batch.peak_cache_bytes >= TRIM_AFTER_CACHE_BYTES:
                # A big batch's cache is gone: give it back so the resident size returns near the model's. Not
                # after small ones: the next request would wait for the trim, and there is little to give back.
                batch.peak_cache_bytes = 0
                trim_heap()

    def _new_batch(self, loaded: LoadedModel, call: ModelCall) -> DecodeBatch:
        def on_done(job: _Job, outcome: RowOutcome) -> None:
            with self._cond:
                s = self._stats
                self._stats = replace(
                    s,
                    requests_done=s.requests_done + 1,
                    tokens_generated=s.tokens_generated + outcome.new_tokens,
                )
            self._deliver(
                job,
                Generation(
                    text=outcome.text,
                    finish_reason=outcome.finish_reason,
                    prompt_tokens=outcome.prompt_tokens,
                    new_tokens=outcome.new_tokens,
                    queue_s=job.started - job.submitted,
                    latency_s=time.monotonic() - job.submitted,
                    model_version=loaded.version,
                ),
            )

        def on_cancelled(job: _Job) -> bool:
            if not job.cancelled.is_set():
                return False
            with self._cond:
                self._stats = replace(self._stats, requests_cancelled=self._stats.requests_cancelled + 1)
            return True

        return DecodeBatch(
            loaded,
            shared_generator=self._generator_for(loaded.device),
            on_done=on_done,
            on_delta=self._deliver_delta,
            is_cancelled=on_cancelled,
            call=call,
            prefixes=self._prefixes_for(loaded),
            tokenizer_lock=self._tokenizer_lock,
        )

    def _retokenize(self, jobs: list[_Job], loaded: LoadedModel) -> list[_Job]:
        """Re-encode jobs queued across a swap_model; a prompt the new model cannot fit fails alone."""
        ready: list[_Job] = []
        for job in jobs:
            if job.encoded_with is not loaded:
                try:
                    with self._tokenizer_lock:
                        job.prompt = encode_prompt(loaded, job.request.messages, job.request.max_new_tokens)
                except ValueError as exc:
                    self._deliver(job, exc)
                    continue
                job.encoded_with = loaded
            ready.append(job)
        return ready

    def _admit(self, batch: DecodeBatch, jobs: list[_Job]) -> None:
        """Prefill ``jobs`` into ``batch``; if that fails, only these jobs fail (the running rows go on)."""
        jobs = [job for job in self._retokenize(jobs, batch.loaded) if not self._dropped_before_start(job)]
        if not jobs:
            return
        started = time.monotonic()
        for job in jobs:
            job.started = started
        joining = len(batch) > 0
        try:
            with torch.inference_mode():
                batch.admit(
                    [Row(job, job.request, job.prompt, streams=job.deltas is not None) for job in jobs]
                )
        except Exception as exc:
            log.exception("generation batch of %d request(s) failed on %s", len(jobs), batch.loaded.version)
            self._count_prefix_use()
            self._fail_rows(
                [Row(job, job.request, job.prompt) for job in jobs],
                EngineError(f"generation failed: {type(exc).__name__}: {exc}"),
            )
            return
        with self._cond:  # counted before any result leaves, so a caller that got its result sees the batch
            s = self._stats
            self._stats = replace(
                s,
                batches=s.batches + 1,
                largest_batch=max(s.largest_batch, len(batch)),
                joined_running=s.joined_running + (len(jobs) if joining else 0),
            )
        self._count_prefix_use()
        if batch.peak_cache_bytes >= TRIM_AFTER_CACHE_BYTES:
            # A big prefill leaves its activations and copies in the heap: give them back before the batch grows
            # again (a few ms, against a prefill of a second or more), so bursts do not stack transient peaks.
            trim_heap()
        log.debug(
            "admitted %d request(s) (%d running) in %.2fs", len(jobs), len(batch), time.monotonic() - started
        )

    def _dropped_before_start(self, job: _Job) -> bool:
        """A job whose awaiter gave up between leaving the queue and its prefill: counted, not run."""
        if not job.cancelled.is_set():
            return False
        with self._cond:
            self._stats = replace(self._stats, requests_cancelled=self._stats.requests_cancelled + 1)
        return True

    def _count_prefix_use(self) -> None:
        """Add the prefix cache's hits and misses since the last call to the stats."""
        prefixes = self._prefixes
        if prefixes is None:
            return
        hits, misses = prefixes.hits - self._prefix_counted[0], prefixes.misses - self._prefix_counted[1]
        self._prefix_counted = (prefixes.hits, prefixes.misses)
        with self._cond:
            s = self._stats
            self._stats = replace(s, prefix_hits=s.prefix_hits + hits, prefix_misses=s.prefix_misses + misses)

    def _fail_rows(self, rows: list[Row], error: EngineError) -> None:
        """Settle every unfinished row with ``error`` (a cancelled one is only counted)."""
        cancelled = [row.handle for row in rows if row.handle.cancelled.is_set()]
        failed = [row.handle for row in rows if not row.handle.cancelled.is_set()]
        with self._cond:
            s = self._stats
            self._stats = replace(
                s,
                requests_cancelled=s.requests_cancelled + len(cancelled),
                requests_failed=s.requests_failed + len(failed),
            )
        for job in failed:
            self._deliver(job, error)
