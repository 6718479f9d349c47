"""Test doubles shared by the unit tests: a scripted generation backend."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable

from models.engine import EngineBusy, Generation, GenerationRequest


class ScriptedBackend:
    """A GenerationBackend that answers from a script (or a function of the request) without a model."""

    def __init__(
        self,
        replies: Iterable[str] = (),
        *,
        default: str = "Hello there!",
        respond: Callable[[GenerationRequest], str] | None = None,
        delay_s: float = 0.0,
        version: str = "fake:1",
        piece_delay_s: float = 0.0,
    ) -> None:
        self.replies = deque(replies)
        self.default = default
        self.respond = respond
        self.delay_s = delay_s
        self.version = version
        self.piece_delay_s = piece_delay_s  # stream(): pause before each word-sized piece
        self.streamed = 0  # requests answered through stream()
        self.requests: list[GenerationRequest] = []
        self.busy = False

    async def generate(self, request: GenerationRequest, *, timeout: float | None = None) -> Generation:
        if self.busy:
            raise EngineBusy("queue full")
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.respond is not None:
            text = self.respond(request)
        else:
            text = self.replies.popleft() if self.replies else self.default
        return Generation(
            text=text,
            finish_reason="stop",
            prompt_tokens=sum(self.count_tokens(m["content"]) for m in request.messages),
            new_tokens=self.count_tokens(text),
            queue_s=0.0,
            latency_s=self.delay_s,
            model_version=self.version,
        )

    async def stream(self, request: GenerationRequest, *, timeout: float | None = None) -> AsyncIterator[str]:
        """The scripted reply in word-sized pieces (each after ``piece_delay_s``), like a backend's stream."""
        generation = await self.generate(request, timeout=timeout)
        self.streamed += 1
        for piece in re.findall(r"\s*\S+\s*", generation.text) or [generation.text]:
            if self.piece_delay_s:
                await asyncio.sleep(self.piece_delay_s)
            yield piece

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def model_version(self) -> str:
        return self.version

    @property
    def queue_depth(self) -> int:
        return 0
