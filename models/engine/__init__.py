"""Batched text generation for the whole process.

``Engine`` (core.py) owns the model on one worker thread and serves every caller through a bounded queue;
decode.py holds the batched decode loop, sampling.py the per-row sampling, prompt.py the chat-template encoding,
api.py the request/result types and errors.
"""

from models.engine.api import (
    EngineBusy,
    EngineClosed,
    EngineError,
    EngineStats,
    EngineTimeout,
    Generation,
    GenerationRequest,
)
from models.engine.core import Engine

__all__ = [
    "Engine",
    "EngineBusy",
    "EngineClosed",
    "EngineError",
    "EngineStats",
    "EngineTimeout",
    "Generation",
    "GenerationRequest",
]
