"""Retrain jobs on disk: a durable record of each run, so that a stop mid-training is known and can be resumed.

Each retrain has a folder ``data/training/<time>/``: ``settings.json`` (what the worker runs), the dataset snapshot
(``train.jsonl``, ``eval.jsonl``), ``checkpoints/`` (models/training/checkpoint.py), the worker's log, and
``job.json``, the record: its state (running, then finished | failed | cancelled | interrupted | discarded), who
started it and when, the dataset's figures, how far training got and why it stopped.

An interrupted job keeps its snapshot and checkpoints, so the next retrain resumes it on the same data; every other
end deletes them at once (the examples are personal data). The process running a job holds an exclusive lock on
``job.lock`` for as long as it runs it: the kernel drops the lock when that process dies, however it dies, so a
record still saying *running* whose lock is free was left by a crash or a kill, and reads as interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.registry import write_atomic
from models.training import checkpoint

log = logging.getLogger(__name__)

RECORD_FILE = "job.json"
LOCK_FILE = "job.lock"
SETTINGS_FILE = "settings.json"
DATASET_FILES = ("train.jsonl", "eval.jsonl")
DIALOGUE_EVAL_FILE = (
    "dialogue_eval.jsonl"  # the held-out dialogue, reported by the gate (absent in older jobs)
)
CHECKPOINT_DIR = "checkpoints"
CRASHED = "the process running it ended without recording why (a crash, a kill or a power cut)"

State = Literal["running", "finished", "failed", "cancelled", "interrupted", "discarded"]


@dataclass(frozen=True)
class JobRecord:
    state: State
    started_at: float  # when the dataset snapshot was taken
    started_by: str
    dataset: dict[str, Any] = field(default_factory=dict)  # figures for the registry's meta.json on resume
    step: int = 0  # optimizer steps done when last heard of
    total_steps: int = 0
    checkpoint_step: int = 0  # the step its latest checkpoint holds (0 = none yet)
    updated_at: float = 0.0
    reason: str = ""  # why it was interrupted, failed or discarded
    resumes: int = 0  # how many times it was resumed

    def progress(self) -> str:
        done = f"step {self.step}/{self.total_steps}" if self.total_steps else "before its first step"
        saved = (
            f"its checkpoint holds step {self.checkpoint_step}"
            if self.checkpoint_step
            else "no checkpoint yet"
        )
        return f"{done}, {saved}"


class Job:
    """One job folder: its record, its files and the lock its running process holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @property
    def settings_path(self) -> Path:
        return self.path / SETTINGS_FILE

    @property
    def train_path(self) -> Path:
        return self.path / DATASET_FILES[0]

    @property
    def eval_path(self) -> Path:
        return self.path / DATASET_FILES[1]

    @property
    def dialogue_eval_path(self) -> Path:
        return self.path / DIALOGUE_EVAL_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def read(self) -> JobRecord | None:
        """The record; None for a folder without one (written by an older version) or with an unreadable one."""
        try:
            raw = json.loads((self.path / RECORD_FILE).read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(JobRecord)}
            return JobRecord(**{k: v for k, v in raw.items() if k in known})
        except (OSError, ValueError, TypeError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("retrain job %s: unreadable record: %s", self.path.name, exc)
            return None

    def write(self, record: JobRecord) -> JobRecord:
        """Replace the record atomically (a crash leaves the old one or the new one, never half of either)."""
        record = dataclasses.replace(record, updated_at=time.time())
        write_atomic(self.path / RECORD_FILE, json.dumps(dataclasses.asdict(record), indent=1))
        return record

    def update(self, **changes: Any) -> JobRecord | None:
        record = self.read()
        return None if record is None else self.write(dataclasses.replace(record, **changes))

    def latest_checkpoint(self) -> tuple[Path | None, int]:
        """The checkpoint to resume from and the step it holds ((None, 0) when there is none)."""
        path = checkpoint.latest(self.checkpoint_dir)
        if path is None:
            return None, 0
        try:
            return path, int(checkpoint.info(path)["step"])
        except (OSError, ValueError, KeyError):
            return None, 0

    def has_snapshot(self) -> bool:
        return self.settings_path.is_file() and all((self.path / name).is_file() for name in DATASET_FILES)

    def drop_data(self) -> None:
        """Delete the dataset snapshot and the checkpoints (trained on it); the record and the log stay."""
        for name in (*DATASET_FILES, DIALOGUE_EVAL_FILE):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- ownership
    def claim(self) -> None:
        """Hold the job's lock while this process runs it (released by `release` or by this process's end)."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"retrain job {self.path.name} is being run by another process") from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = None

    def owner_alive(self) -> bool:
        """Whether some process (this one included) holds the job's lock: it is really running."""
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # also drops the lock if we just took it
        return False

    def finish(self, state: State, reason: str = "") -> None:
        """End the job for good: record how, and delete its data."""
        self.drop_data()
        with contextlib.suppress(OSError):
            self.update(state=state, reason=reason)


def find_interrupted(root: Path) -> tuple[Job, JobRecord] | None:
    """The newest interrupted job under `root`, if any; a job a dead process left *running* is marked interrupted.

    Older interrupted jobs are discarded on the way (their data deleted): only the newest is ever resumed, and a
    snapshot nobody will use must not stay on disk.
    """
    if not root.is_dir():
        return None
    found: tuple[Job, JobRecord] | None = None
    for path in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        job = Job(path)
        record = job.read()
        if record is None:
            continue
        if record.state == "running" and not job.owner_alive():
            _, step = job.latest_checkpoint()
            record = job.write(
                dataclasses.replace(
                    record,
                    state="interrupted",
                    reason=CRASHED,
                    checkpoint_step=step,
                    step=max(record.step, step),
                )
            )
            log.warning("retrain job %s: %s; marked interrupted", path.name, CRASHED)
        if record.state != "interrupted":
            continue
        if found is None:
            found = (job, record)
        else:
            job.finish("discarded", "a newer retrain was interrupted after it")
    return found
