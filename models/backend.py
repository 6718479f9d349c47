"""The interface the chat service codes against, so tests and alternative runtimes can stand in for the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from models.engine.api import Generation, GenerationRequest


@runtime_checkable
class GenerationBackend(Protocol):
    """Something that turns chat requests into replies; :class:`models.engine.Engine` is the real one."""

    async def generate(self, request: GenerationRequest, *, timeout: float | None = None) -> Generation:
        """Generate a reply; raises ``models.engine.EngineError`` subclasses on busy/timeout/closed/failure."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the served model's tokenizer, for prompt budgeting."""
        ...

    @property
    def model_version(self) -> str:
        """Identifies the weights being served (recorded with each reply)."""
        ...

    @property
    def queue_depth(self) -> int:
        """Requests waiting to run; a caller may shed load when this is high."""
        ...


@runtime_checkable
class StreamingBackend(GenerationBackend, Protocol):
    """A backend that can also hand out a reply while it is written (the engine and the OpenAI backend)."""

    def stream(self, request: GenerationRequest, *, timeout: float | None = None) -> AsyncIterator[str]:
        """Yield the raw reply text in pieces that join to what ``generate`` would return as ``text``."""
        ...
