"""The promotion gate: held-out loss better, general-chat reference no worse than the tolerance, persona not lower."""

from __future__ import annotations

from models.training.gate import decide

GOOD = {
    "serving_loss": 2.0,
    "candidate_loss": 1.8,
    "general_serving": 3.0,
    "general_candidate": 3.1,
    "persona_serving": 0.4,
    "persona_candidate": 0.9,
}


def test_promotes_a_run_better_on_all_three():
    decision = decide(GOOD, min_improvement=0.01)
    assert decision.promote and decision.reasons == ()
    summary = decision.summary()
    assert summary.startswith("promoted")
    assert "held-out loss 2.0000 -> 1.8000" in summary
    assert "general chat loss 3.0000 -> 3.1000 (+3.3%)" in summary
    assert "persona score 40% -> 90%" in summary
    assert decision.as_dict()["persona_score"] == [0.4, 0.9]


def test_refuses_a_run_that_does_not_improve_the_held_out_loss():
    decision = decide({**GOOD, "candidate_loss": 1.995}, min_improvement=0.01)
    assert not decision.promote
    assert "0.0050" in decision.summary() and "0.0100" in decision.summary()


def test_refuses_a_run_that_hurts_general_chat_beyond_the_tolerance():
    # A junk log lowers its own held-out loss; the fixed reference is what shows the damage.
    decision = decide({**GOOD, "general_candidate": 3.2}, min_improvement=0.01, general_tolerance=0.05)
    assert not decision.promote
    assert any("general chat got worse" in reason for reason in decision.reasons)
    assert decide({**GOOD, "general_candidate": 3.2}, min_improvement=0.01, general_tolerance=0.1).promote


def test_refuses_a_run_less_in_character_and_one_never_measured():
    worse = decide({**GOOD, "persona_candidate": 0.35}, min_improvement=0.01)
    assert not worse.promote and "less itself" in worse.summary() and "40% -> 35%" in worse.summary()
    assert decide({**GOOD, "persona_candidate": 0.35}, min_improvement=0.01, persona_tolerance=0.1).promote
    unmeasured = {k: v for k, v in GOOD.items() if not k.startswith("persona")}
    assert "no persona score was measured" in decide(unmeasured, min_improvement=0.01).reasons


def test_nan_fails_its_rule():
    assert not decide({**GOOD, "candidate_loss": float("nan")}, min_improvement=0.0).promote
    assert not decide({**GOOD, "general_candidate": float("nan")}, min_improvement=0.0).promote
    assert not decide({**GOOD, "persona_candidate": float("nan")}, min_improvement=0.0).promote
