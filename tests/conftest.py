"""Shared pytest fixtures.

Model fixtures: the embedded model is loaded once per test run (``loaded_model``, ~3-15 s) and one engine serves
it for the whole session (``engine``). Tests that need their own engine settings (a tiny queue, closing it) build
``Engine(loaded_model, ...)`` themselves instead of reconfiguring the shared one. The engine answers on whichever
event loop awaits it, so function-scoped test loops can use the session-scoped engine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from models.engine import Engine
from models.loader import LoadedModel, ModelSpec, load_model
from models.threads import call_in_own_thread

# ---------------------------------------------------------------------------------------------- model fixtures

# The CI machines have 2 cores; more torch threads than cores only adds contention.
TEST_TORCH_THREADS = max(1, min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def loaded_model() -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct on CPU in fp32, loaded once per test run (as the bot does, on a thread
    that ends: see models/threads.py)."""
    return call_in_own_thread(lambda: load_model(ModelSpec(source="embedded", device="cpu", dtype="float32")))


@pytest.fixture(scope="session")
async def engine(loaded_model: LoadedModel) -> AsyncIterator[Engine]:
    """One running engine over ``loaded_model`` shared by the whole session (do not close it in a test)."""
    async with Engine(loaded_model, max_batch=16, torch_threads=TEST_TORCH_THREADS) as running:
        yield running
