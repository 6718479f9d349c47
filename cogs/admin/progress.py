"""A running retrain's progress: the training worker's events read as lines for people and as typed fields.

The worker reports one JSON event per line (models/training/worker.py); the retrain relays the readable ones to
whoever started it, and keeps the latest figures in a `TrainingProgress` for the dashboard and status lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainingProgress:
    """Where a running retrain is, for whoever shows it (the dashboard, a status line)."""

    phase: str  # dataset | loading | eval_serving | training | eval_candidate | gate | swapping (worker phases too)
    line: str  # the latest human-readable progress line
    started_by: str
    started_at: float  # wall-clock time
    step: int | None = None
    total_steps: int | None = None
    eta_s: float | None = None
    loss: float | None = None
    tokens_per_s: float | None = None

    @property
    def fraction(self) -> float | None:
        """Training steps done, 0..1 (None before the first step is reported)."""
        return step_fraction(self.step, self.total_steps)


def step_fraction(step: int | None, total_steps: int | None) -> float | None:
    """`step` of `total_steps` as 0..1; None while either is unknown."""
    if step is None or not total_steps:
        return None
    return max(0.0, min(1.0, step / total_steps))


def describe_event(event: dict[str, Any]) -> str | None:
    """A one-line, human reading of a worker event (None for events not worth showing)."""
    kind = event.get("event")
    if kind == "phase":
        return f"{event.get('message', event.get('phase'))}…"
    if kind == "start":
        return (
            f"training on {event['train_examples']} examples, checking on {event['eval_examples']} "
            f"({event.get('threads')} thread(s), {event.get('device')})"
        )
    if kind == "progress":
        return (
            f"step {event['step']}/{event['total_steps']} · loss {event['loss']:.3f} · "
            f"{event['tokens_per_s']:.0f} tok/s · ETA {_duration(event['eta_s'])}"
        )
    if kind == "resume":
        return f"resuming training after step {event['step']}/{event['total_steps']} (its checkpoint)…"
    return None


def progress_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The `TrainingProgress` fields a worker event changes."""
    kind = event.get("event")
    if kind == "phase":
        return {"phase": str(event.get("phase") or "working")}
    if kind == "start":
        return {"phase": "training"}
    if kind == "progress":
        return {
            "phase": "training",
            "step": int(event["step"]),
            "total_steps": int(event["total_steps"]),
            "eta_s": float(event["eta_s"]),
            "loss": float(event["loss"]),
            "tokens_per_s": float(event["tokens_per_s"]),
        }
    return {}


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
