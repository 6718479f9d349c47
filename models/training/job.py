"""Run the training worker as a child process and relay what it reports.

The worker's stdout carries one JSON event per line; each is passed to ``on_event`` as it arrives. stderr goes to
a log file next to the job's settings, for the traceback when something fails. ``cancel()`` stops the whole
process group (accelerate's launcher and its workers included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER_MODULE = "models.training.worker"
CANCEL_GRACE_S = 5.0  # after SIGTERM, this long before SIGKILL
STDERR_TAIL_CHARS = 2_000  # of the worker's log, quoted in an error

OnEvent = Callable[[dict[str, Any]], Awaitable[None] | None]


class TrainingFailed(RuntimeError):
    """The worker exited without a result; the message holds its last error."""


class TrainingCancelled(RuntimeError):
    """The job was cancelled (or its process killed) before it finished."""


def worker_command(settings_path: Path, launcher: str = "") -> list[str]:
    """``python -m models.training.worker FILE``, or ``<launcher> -m models.training.worker FILE``."""
    if launcher.strip():
        return [*shlex.split(launcher), "-m", WORKER_MODULE, str(settings_path)]
    return [sys.executable, "-m", WORKER_MODULE, str(settings_path)]


class TrainingProcess:
    def __init__(self, settings_path: Path, *, launcher: str = "", threads: int = 1) -> None:
        self.settings_path = settings_path
        self.log_path = settings_path.with_name("worker.log")
        self._command = worker_command(settings_path, launcher)
        self._threads = threads
        self._process: asyncio.subprocess.Process | None = None
        self._cancelled = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def run(self, on_event: OnEvent) -> dict[str, Any]:
        """Start the worker, relay its events, return its ``result`` event; raise on failure or cancellation."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": str(self._threads),
            "MKL_NUM_THREADS": str(self._threads),
            "TOKENIZERS_PARALLELISM": "false",
            "TQDM_DISABLE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        stderr = await asyncio.to_thread(open, self.log_path, "wb")
        with stderr:
            self._process = await asyncio.create_subprocess_exec(
                *self._command,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=PROJECT_ROOT,
                env=env,
                start_new_session=True,  # its own process group: cancel() reaches accelerate's children too
            )
            log.info("training worker started (pid %d): %s", self._process.pid, shlex.join(self._command))
            if self._cancelled:  # cancel() came while the process was being started: it found nothing to stop
                await self.cancel()
            result: dict[str, Any] | None = None
            error: str | None = None
            assert self._process.stdout is not None
            try:
                async for raw in self._process.stdout:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("{"):
                        continue
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if event.get("event") == "result":
                        result = event
                    elif event.get("event") == "error":
                        error = str(event.get("message"))
                    outcome = on_event(event)
                    if asyncio.iscoroutine(outcome):
                        await outcome
                code = await self._process.wait()
            except asyncio.CancelledError:
                await self.cancel()
                raise
        if self._cancelled:
            raise TrainingCancelled("training was cancelled")
        if code != 0 or result is None:
            if error is None:
                error = f"the training process exited with code {code}" + (
                    " (killed)" if code is not None and code < 0 else ""
                )
                tail = self._stderr_tail()
                if tail:
                    error += f"; its log ends with: {tail}"
            raise TrainingFailed(error)
        return result

    async def cancel(self) -> None:
        """Stop the worker: SIGTERM to its group, SIGKILL after CANCEL_GRACE_S."""
        self._cancelled = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), CANCEL_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def _stderr_tail(self) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-STDERR_TAIL_CHARS:].strip()
