"""Generation through an OpenAI-compatible server (vLLM, llama.cpp server, Ollama, ...).

For owners who outgrow one machine: the bot keeps its memory, persona, logging, stories, polls and retraining, and
only the forward passes move to a serving engine. With vLLM, a retrained adapter is served under its own model name
(`--lora-modules familiar-v3=/path/to/adapter`), so `model` picks the adapter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from models.engine import EngineBusy, EngineClosed, EngineError, EngineTimeout, Generation, GenerationRequest

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.5  # budget estimate when no local tokenizer is available; errs on the generous side
OPENAI_MAX_STOPS = 4  # the OpenAI API accepts at most four stop sequences; clean_reply cuts the rest
RETRY_BASE_S = 0.25
RETRY_MAX_S = 4.0


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    max_concurrency: int = 32
    max_queue: int = 128
    stream: bool = True
    send_repetition_penalty: bool = True  # vLLM and llama.cpp read it; strict OpenAI servers reject it


class OpenAIBackend:
    """A `GenerationBackend` over HTTP: bounded, with retries before the first token and typed errors."""

    def __init__(self, settings: OpenAISettings, *, count_tokens: Any = None) -> None:
        self.settings = settings
        self._count = count_tokens
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._waiting = 0

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_s)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> OpenAIBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------ GenerationBackend
    @property
    def model_version(self) -> str:
        return f"openai:{self.settings.model}"

    @property
    def queue_depth(self) -> int:
        return self._waiting

    def count_tokens(self, text: str) -> int:
        if self._count is not None:
            return int(self._count(text))
        return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0

    async def generate(self, request: GenerationRequest, *, timeout: float | None = None) -> Generation:
        parts: list[str] = []
        finish = "stop"
        start = time.monotonic()
        queue_s = 0.0
        async for delta, reason, waited in self._run(request, timeout=timeout):
            queue_s = waited
            parts.append(delta)
            finish = reason or finish
        text = "".join(parts)
        return Generation(
            text=text,
            finish_reason=finish,
            prompt_tokens=sum(self.count_tokens(m["content"]) for m in request.messages),
            new_tokens=self.count_tokens(text),
            queue_s=queue_s,
            latency_s=time.monotonic() - start,
            model_version=self.model_version,
        )

    async def stream(self, request: GenerationRequest, *, timeout: float | None = None) -> AsyncIterator[str]:
        """Yield text as the server produces it (for replies edited live)."""
        async for delta, _, _ in self._run(request, timeout=timeout):
            if delta:
                yield delta

    # ------------------------------------------------------------------------------------ internals
    async def _run(
        self, request: GenerationRequest, *, timeout: float | None
    ) -> AsyncIterator[tuple[str, str | None, float]]:
        if self._session is None:
            raise EngineClosed("the OpenAI-compatible backend is not started")
        if self._waiting >= self.settings.max_queue:
            raise EngineBusy(f"{self._waiting} requests are already waiting for the model server")
        limit = timeout if timeout is not None else self.settings.timeout_s
        deadline = time.monotonic() + limit
        submitted = time.monotonic()
        self._waiting += 1
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=limit)
            except TimeoutError:
                raise EngineTimeout(f"no free connection to the model server within {limit:.0f} s") from None
        finally:
            self._waiting -= 1
        waited = time.monotonic() - submitted
        try:
            attempt = 0
            while True:
                started = False
                try:
                    async for delta, reason in self._attempt(request, deadline):
                        started = True
                        yield delta, reason, waited
                    return
                except _Retryable as exc:
                    # Retrying after text was delivered would repeat it; only a clean failure is retried.
                    if started or attempt >= self.settings.retries:
                        raise EngineError(f"model server failed: {exc}") from None
                    attempt += 1
                    pause = min(
                        RETRY_MAX_S, exc.retry_after or RETRY_BASE_S * 2**attempt * (1 + random.random())
                    )
                    if time.monotonic() + pause >= deadline:
                        raise EngineTimeout(f"model server did not answer within {limit:.0f} s") from None
                    log.warning("model server: %s; retry %d in %.2f s", exc, attempt, pause)
                    await asyncio.sleep(pause)
        finally:
            self._slots.release()

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "messages": list(request.messages),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": self.settings.stream,
        }
        if request.stop:
            payload["stop"] = list(request.stop[:OPENAI_MAX_STOPS])
        if request.seed is not None:
            payload["seed"] = request.seed
        if self.settings.send_repetition_penalty and request.repetition_penalty != 1.0:
            payload["repetition_penalty"] = request.repetition_penalty
        return payload

    async def _attempt(
        self, request: GenerationRequest, deadline: float
    ) -> AsyncIterator[tuple[str, str | None]]:
        assert self._session is not None
        url = self.settings.base_url.rstrip("/") + "/chat/completions"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EngineTimeout("model server did not answer in time")
        try:
            async with asyncio.timeout(remaining):
                async with self._session.post(url, json=self._payload(request)) as response:
                    await _check_status(response)
                    if not self.settings.stream:
                        body = await response.json(content_type=None)
                        choice = _first_choice(body)
                        message = choice.get("message") or {}
                        yield str(message.get("content") or ""), _finish(choice.get("finish_reason"))
                        return
                    async for event in _sse_events(response):
                        if event == "[DONE]":
                            return
                        choice = _first_choice(json.loads(event))
                        delta = (choice.get("delta") or {}).get("content") or ""
                        yield str(delta), _finish(choice.get("finish_reason"))
                    # A stream must end with [DONE]; a server that died mid-answer leaves it off.
                    raise _Retryable("the stream ended before [DONE]")
        except TimeoutError:
            raise EngineTimeout("model server did not answer in time") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Retryable(f"connection error: {type(exc).__name__}") from None
        except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            raise EngineError(f"model server sent an answer this bot cannot read: {exc}") from None


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def _check_status(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    detail = (await response.text())[:200]
    if response.status == 429 or response.status >= 500:
        retry_after = response.headers.get("Retry-After")
        raise _Retryable(
            f"HTTP {response.status}", float(retry_after) if retry_after and retry_after.isdigit() else None
        )
    if response.status in (401, 403):
        raise EngineError(f"model server refused the API key (HTTP {response.status})")
    raise EngineError(f"model server answered HTTP {response.status}: {detail}")


async def _sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    async for raw in response.content:
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith("data:"):
            yield line[5:].strip()


def _first_choice(body: Any) -> dict[str, Any]:
    if "error" in body:
        raise EngineError(f"model server error: {str(body['error'])[:200]}")
    return body["choices"][0]


def _finish(reason: Any) -> str | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"
