"""The engine's public data types and errors: what callers send, what they get back, what can go wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Bounds on a single request. The model's context bounds the prompt separately (see prompt.py).
MAX_NEW_TOKENS_LIMIT = 1024
MAX_STOP_STRINGS = 8
MAX_STOP_STRING_CHARS = 64
VALID_ROLES = frozenset({"system", "user", "assistant"})


class EngineError(RuntimeError):
    """Generation failed; the request may be retried."""


class EngineBusy(EngineError):
    """The request queue is full; the caller should back off (tell the user to wait) rather than queue more."""


class EngineTimeout(EngineError):
    """The request did not finish within its timeout (queue wait included)."""


class EngineClosed(EngineError):
    """The engine is not running (not started yet, or closed while the request waited)."""


def _freeze_messages(messages: Sequence[Mapping[str, str]]) -> tuple[dict[str, str], ...]:
    """Copy messages into a tuple of plain dicts, checking their shape, so a request cannot change later."""
    frozen: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in VALID_ROLES:
            raise ValueError(f"message {index} has role {role!r}; expected one of {sorted(VALID_ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {index} content must be a string, not {type(content).__name__}")
        frozen.append({"role": role, "content": content})
    if not frozen:
        raise ValueError("a generation request needs at least a system message and one more message")
    if frozen[0]["role"] != "system":
        # Without it the SmolLM chat template inserts its own "helpful assistant named SmolLM" persona.
        raise ValueError("the first message must be the system message (the character's persona)")
    return tuple(frozen)


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion to run. ``temperature=0`` means greedy decoding (deterministic)."""

    messages: tuple[dict[str, str], ...] | list[dict[str, str]]
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        # Validate eagerly so a bad request fails in the caller, never inside a shared batch.
        object.__setattr__(self, "messages", _freeze_messages(self.messages))
        object.__setattr__(self, "stop", tuple(self.stop))
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(
                f"max_new_tokens must be in 1..{MAX_NEW_TOKENS_LIMIT}, got {self.max_new_tokens}"
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(self.stop)}")
        for s in self.stop:
            if not isinstance(s, str) or not 0 < len(s) <= MAX_STOP_STRING_CHARS:
                raise ValueError(f"stop strings must be 1..{MAX_STOP_STRING_CHARS} characters, got {s!r}")


@dataclass(frozen=True)
class Generation:
    """The result of a request. ``text`` is raw model output (cut at a stop string); clean it before showing it."""

    text: str
    finish_reason: str  # "stop" (end-of-turn token or stop string) | "length" (hit max_new_tokens)
    prompt_tokens: int
    new_tokens: int
    queue_s: float  # time from submission until its batch started
    latency_s: float  # time from submission until the result was ready
    model_version: str


@dataclass(frozen=True)
class EngineStats:
    """Counters since start, for tests, logs and a status command."""

    batches: int = 0  # admissions: groups of requests prefilled together (into a new or a running batch)
    requests_done: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    largest_batch: int = 0  # most rows decoding at once
    tokens_generated: int = 0
    swaps: int = 0
    prefix_hits: int = 0  # prompts whose system turn came from the prefix cache
    prefix_misses: int = 0
    joined_running: int = 0  # requests that joined a batch already decoding (continuous batching)
