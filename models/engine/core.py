"""The process-wide generation engine: a bounded queue in front of one worker thread that owns the model.

Callers on the event loop ``await engine.generate(request)``. The worker thread gathers whatever is pending
(waiting ``batch_window_ms`` for company after the first request), decodes up to ``max_batch`` requests
together (see decode.py) and hands each result back to the loop the moment its row finishes. The event loop never
runs the model; the model is never touched by two threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
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
from models.engine.decode import BatchAborted, RowOutcome, run_batch
from models.engine.forward import ModelCall
from models.engine.prefill import PrefixCache
from models.engine.prompt import EncodedPrompt, encode_prompt
from models.loader import LoadedModel

log = logging.getLogger(__name__)

# Bounds on the constructor's knobs: beyond these a setting is a typo, not a tuning choice.
MAX_BATCH_LIMIT = 64
MAX_BATCH_WINDOW_MS = 1000
MAX_QUEUE_LIMIT = 4096
WORKER_THREAD_NAME = "familiar-engine"


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


def _settle(future: asyncio.Future[Generation], result: Generation | BaseException) -> None:
    """Complete ``future`` on its loop unless its awaiter already gave up (cancelled or timed out)."""
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
        self._torch_threads = torch_threads

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
            "engine started: %s, max_batch=%d, window=%.0fms, max_queue=%d",
            self._loaded.version,
            self._max_batch,
            self._batch_window_s * 1000,
            self._max_queue,
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
            _settle(job.future, EngineClosed("the engine closed before this request ran"))
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
        """Run ``request`` in the next batch and return its result.

        Raises ValueError (prompt does not fit the context), :class:`EngineBusy` (queue full),
        :class:`EngineTimeout`, :class:`EngineClosed` or :class:`EngineError` (the batch crashed).
        """
        if not self._started or self._closing:
            raise EngineClosed("the engine is not running" if not self._started else "the engine is closed")
        loop = asyncio.get_running_loop()
        loaded = self._loaded
        with self._tokenizer_lock:
            prompt = encode_prompt(loaded, request.messages, request.max_new_tokens)
        job = _Job(request, prompt, loaded, loop.create_future(), time.monotonic())
        with self._cond:
            if self._closing:
                raise EngineClosed("the engine is closed")
            if len(self._pending) >= self._max_queue:
                raise EngineBusy(
                    f"the generation queue is full ({len(self._pending)} requests waiting); try again shortly"
                )
            self._pending.append(job)
            self._cond.notify()
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
            job.future.get_loop().call_soon_threadsafe(_settle, job.future, result)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("dropped a result: event loop closed")

    def _prefixes_for(self, loaded: LoadedModel) -> PrefixCache:
        """The prefix cache for ``loaded``; a swapped-in model starts a fresh one (old KV states are invalid)."""
        if self._prefixes is None or self._prefixes.owner is not loaded:
            self._prefixes = PrefixCache(loaded)
        return self._prefixes

    def _generator_for(self, device: torch.device) -> torch.Generator:
        """The shared RNG for unseeded sampling on ``device``, seeded from the OS once."""
        if device not in self._generators:
            seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
            self._generators[device] = torch.Generator(device=device).manual_seed(seed)
        return self._generators[device]

    def _next_batch(self) -> tuple[list[_Job], LoadedModel, ModelCall] | None:
        """Block until work arrives, wait the batch window for more, and take up to max_batch jobs.

        Returns None when the engine is closing. The job list may be empty if every waiter gave up meanwhile.
        """
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            deadline = time.monotonic() + self._batch_window_s
            while not self._closing and len(self._pending) < self._max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closing:
                return None
            jobs = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            return jobs, self._loaded, self._call

    def _worker(self) -> None:
        """Thread body: serve batches until close()."""
        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            jobs, loaded, call = taken
            if jobs:
                self._run(jobs, loaded, call)

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

    def _run(self, jobs: list[_Job], loaded: LoadedModel, call: ModelCall) -> None:
        """Decode one batch; whatever happens, every job ends settled (or was cancelled by its awaiter)."""
        started = time.monotonic()
        jobs = self._retokenize(jobs, loaded)
        if not jobs:
            return
        for job in jobs:
            job.started = started
        done: set[int] = set()
        with self._cond:  # counted before any result leaves, so a caller that got its result sees the batch
            s = self._stats
            self._stats = replace(s, batches=s.batches + 1, largest_batch=max(s.largest_batch, len(jobs)))

        prefixes = self._prefixes_for(loaded)
        prefix_counts = [prefixes.hits, prefixes.misses]  # the values already added to the stats

        def count_prefix_use(s: EngineStats) -> EngineStats:
            """Stats plus the prefix cache's use since the last call (caller holds the lock)."""
            hits, misses = prefixes.hits - prefix_counts[0], prefixes.misses - prefix_counts[1]
            prefix_counts[:] = [prefixes.hits, prefixes.misses]
            return replace(s, prefix_hits=s.prefix_hits + hits, prefix_misses=s.prefix_misses + misses)

        def on_done(index: int, outcome: RowOutcome) -> None:
            job = jobs[index]
            done.add(index)
            with self._cond:  # prefill is over once a row is done, so its cache use is counted here too
                s = count_prefix_use(self._stats)
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

        failure: EngineError | None = None
        try:
            with torch.inference_mode():
                run_batch(
                    loaded,
                    [job.request for job in jobs],
                    [job.prompt for job in jobs],
                    shared_generator=self._generator_for(loaded.device),
                    on_done=on_done,
                    is_cancelled=lambda index: jobs[index].cancelled.is_set(),
                    should_abort=lambda: self._closing,
                    call=call,
                    prefixes=prefixes,
                    tokenizer_lock=self._tokenizer_lock,
                )
        except BatchAborted:
            failure = EngineClosed("the engine closed while this request was generating")
        except Exception as exc:  # a crash must cost only this batch, never the worker
            log.exception("generation batch of %d request(s) failed on %s", len(jobs), loaded.version)
            failure = EngineError(f"generation failed: {type(exc).__name__}: {exc}")
        unfinished = [job for index, job in enumerate(jobs) if index not in done]
        cancelled = [job for job in unfinished if job.cancelled.is_set()]
        failed = [job for job in unfinished if not job.cancelled.is_set()]
        with self._cond:
            s = count_prefix_use(self._stats)
            self._stats = replace(
                s,
                requests_cancelled=s.requests_cancelled + len(cancelled),
                requests_failed=s.requests_failed + len(failed),
            )
        for job in failed:  # only a failure leaves a row neither done nor cancelled
            self._deliver(job, failure or EngineError("generation ended without a result"))
        log.debug("batch of %d on %s done in %.2fs", len(jobs), loaded.version, time.monotonic() - started)
