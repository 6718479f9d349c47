"""The promotion gate: a trained adapter replaces the serving one only when it is measurably better and in character."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]  # why not (empty when promoted)
    serving_loss: float
    candidate_loss: float
    improvement: float  # serving_loss - candidate_loss (positive = better)
    persona_ok: bool
    persona_answer: str

    def summary(self) -> str:
        figures = (
            f"held-out loss {self.serving_loss:.4f} -> {self.candidate_loss:.4f} "
            f"({self.improvement:+.4f} better)"
            if self.improvement >= 0
            else f"held-out loss {self.serving_loss:.4f} -> {self.candidate_loss:.4f} ({-self.improvement:.4f} worse)"
        )
        if self.promote:
            return f"promoted: {figures}; persona check passed"
        return f"kept the serving model: {'; '.join(self.reasons)} ({figures})"


def decide(result: dict[str, Any], *, min_improvement: float) -> GateDecision:
    """Judge a worker's ``result`` event: loss must drop by at least ``min_improvement`` and the persona check pass."""
    serving = float(result["serving_loss"])
    candidate = float(result["candidate_loss"])
    improvement = serving - candidate
    persona_ok = bool(result.get("persona_ok"))
    answer = str(result.get("persona_answer", ""))
    reasons = []
    if not improvement >= min_improvement:  # also catches NaN
        reasons.append(
            f"the held-out loss improved by {improvement:.4f}, less than the required {min_improvement:.4f}"
        )
    if not persona_ok:
        reasons.append(f"the persona check failed: asked who it is, it answered {answer[:120]!r}")
    return GateDecision(
        promote=not reasons,
        reasons=tuple(reasons),
        serving_loss=serving,
        candidate_loss=candidate,
        improvement=improvement,
        persona_ok=persona_ok,
        persona_answer=answer,
    )
