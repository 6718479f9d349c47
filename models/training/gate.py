"""The promotion gate: a trained adapter replaces the serving one only when it is better where it was trained,
no worse where no log can reach, and no less in character.

Three figures, each measured on the serving model and on the candidate by the worker (models/training/worker.py):

1. the held-out loss of the data it learnt from (the log's held-out conversations, else the held-out dialogue):
   must drop by at least ``min_improvement``;
2. the loss on the fixed general-chat reference shipped with Familiar (models/reference/): may rise by at most
   ``general_tolerance`` (a share): a log of junk or one person's obsession shows up here;
3. the persona score, the share of sampled replies faithful to the card (models/persona/checks.py): must not fall
   by more than ``persona_tolerance``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]  # why not (empty when promoted)
    serving_loss: float
    candidate_loss: float
    improvement: float  # serving_loss - candidate_loss (positive = better)
    general_serving: float | None = None
    general_candidate: float | None = None
    persona_serving: float | None = None
    persona_candidate: float | None = None
    persona_failures: tuple[tuple[str, str], ...] = ()  # (question, reply) of the candidate, a few

    @property
    def general_change(self) -> float | None:
        """The relative change of the general-chat loss (+0.02 = 2% worse)."""
        if self.general_serving is None or self.general_candidate is None or not self.general_serving:
            return None
        return self.general_candidate / self.general_serving - 1

    def figures(self) -> str:
        """The three figures, before -> after, in one line."""
        held = f"held-out loss {self.serving_loss:.4f} -> {self.candidate_loss:.4f} " + (
            f"({self.improvement:+.4f} better)"
            if self.improvement >= 0
            else f"({-self.improvement:.4f} worse)"
        )
        parts = [held]
        change = self.general_change
        if change is not None:
            parts.append(
                f"general chat loss {self.general_serving:.4f} -> {self.general_candidate:.4f} ({change:+.1%})"
            )
        if self.persona_serving is not None and self.persona_candidate is not None:
            parts.append(f"persona score {self.persona_serving:.0%} -> {self.persona_candidate:.0%}")
        return "; ".join(parts)

    def summary(self) -> str:
        if self.promote:
            return f"promoted: {self.figures()}"
        return f"kept the serving model: {'; '.join(self.reasons)} ({self.figures()})"

    def as_dict(self) -> dict[str, Any]:
        """The figures as the adapter's meta, the dashboard and `model status` keep them."""
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "held_out_loss": [self.serving_loss, self.candidate_loss],
            "general_loss": [self.general_serving, self.general_candidate],
            "persona_score": [self.persona_serving, self.persona_candidate],
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> GateDecision | None:
        """The decision an adapter's meta.json keeps (``as_dict()`` under "gate"), for `model status` and the
        dashboard. Older metas kept only the held-out losses (under "metrics"): the decision then has those alone.
        None when the meta has no held-out losses at all."""
        gate: Mapping[str, Any] = meta["gate"] if isinstance(meta.get("gate"), Mapping) else {}
        metrics: Mapping[str, Any] = meta["metrics"] if isinstance(meta.get("metrics"), Mapping) else {}
        serving, candidate = _pair(gate, "held_out_loss")
        if serving is None or candidate is None:
            serving, candidate = _number(metrics.get("serving_loss")), _number(metrics.get("candidate_loss"))
        if serving is None or candidate is None:
            return None
        general_serving, general_candidate = _pair(gate, "general_loss")
        persona_serving, persona_candidate = _pair(gate, "persona_score")
        reasons = gate.get("reasons")
        return cls(
            promote=bool(gate.get("promote", meta.get("promoted", False))),
            reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
            serving_loss=serving,
            candidate_loss=candidate,
            improvement=serving - candidate,
            general_serving=general_serving,
            general_candidate=general_candidate,
            persona_serving=persona_serving,
            persona_candidate=persona_candidate,
        )


def _number(value: Any) -> float | None:
    """A figure read from a file: a number (not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pair(gate: Mapping[str, Any], key: str) -> tuple[float | None, float | None]:
    """A [serving, candidate] pair from a meta's "gate"; (None, None) when it is missing or malformed."""
    value = gate.get(key)
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None, None
    return _number(value[0]), _number(value[1])


def _figure(result: dict[str, Any], key: str) -> float | None:
    value = result.get(key)
    return None if value is None else float(value)


def decide(
    result: dict[str, Any],
    *,
    min_improvement: float,
    general_tolerance: float = 0.05,
    persona_tolerance: float = 0.0,
) -> GateDecision:
    """Judge a worker's ``result`` event by the three rules above; a figure that is NaN fails its rule."""
    serving = float(result["serving_loss"])
    candidate = float(result["candidate_loss"])
    improvement = serving - candidate
    general_serving, general_candidate = (
        _figure(result, "general_serving"),
        _figure(result, "general_candidate"),
    )
    persona_serving, persona_candidate = (
        _figure(result, "persona_serving"),
        _figure(result, "persona_candidate"),
    )
    reasons = []
    if not improvement >= min_improvement:  # also catches NaN
        reasons.append(
            f"the held-out loss improved by {improvement:.4f}, less than the required {min_improvement:.4f}"
        )
    if general_serving is not None and general_candidate is not None:
        limit = general_serving * (1 + general_tolerance)
        if not general_candidate <= limit:
            reasons.append(
                f"general chat got worse: its reference loss rose from {general_serving:.4f} to "
                f"{general_candidate:.4f}, more than the {general_tolerance:.0%} allowed"
            )
    if persona_serving is None or persona_candidate is None or math.isnan(persona_candidate):
        reasons.append("no persona score was measured")
    elif not persona_candidate >= persona_serving - persona_tolerance:
        reasons.append(
            f"the character is less itself: persona score {persona_serving:.0%} -> {persona_candidate:.0%}"
        )
    failures = tuple(tuple(f) for f in result.get("persona_failures", ()) if len(f) == 2)
    return GateDecision(
        promote=not reasons,
        reasons=tuple(reasons),
        serving_loss=serving,
        candidate_loss=candidate,
        improvement=improvement,
        general_serving=general_serving,
        general_candidate=general_candidate,
        persona_serving=persona_serving,
        persona_candidate=persona_candidate,
        persona_failures=failures,
    )
