"""The moderator side by side: rules only, rules + alt-profanity-check, rules + glin-profanity
(`python -m bench.safety_bench`).

For each: ms per check (median, p95) on the labelled set (tests/data/safety/labelled.jsonl) and on 200 of the
character's own replies (models/characters/default.dialogue*.jsonl), precision and recall on the labelled set,
the share of ordinary chat held, and how many dressed-up blocked terms got through. Then the classifiers alone,
over thresholds, to show where the default threshold sits. Targets are the issue's: no posted reply contains a
blocked term, at most 2% of ordinary chat held, at most 5 ms per reply.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from models.moderation import Moderator, SafetySettings
from models.moderation.classifier import Scorer
from models.moderation.terms import load_default_terms

ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT / "tests" / "data" / "safety" / "labelled.jsonl"
REPLIES = sorted((ROOT / "models" / "characters").glob("default.dialogue*.jsonl"))
REAL_REPLIES = 200
TARGET_MS = 5.0
TARGET_HELD = 0.02
OWNER_TERMS = ("shit", "fuck", "bastard")  # stand-ins for an owner's own list
SETUPS = {
    "rules only": "off",
    "rules + alt-profanity-check": "alt-profanity-check",
    "rules + glin-profanity": "glin-profanity",
}


def labelled() -> list[tuple[str, int, str]]:
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(row["text"], int(row["label"]), row["kind"]) for row in rows]


def real_replies() -> list[str]:
    replies = []
    for path in REPLIES:
        for line in path.read_text(encoding="utf-8").splitlines():
            replies += [m["content"] for m in json.loads(line)["messages"] if m["role"] == "assistant"]
    step = max(1, len(replies) // REAL_REPLIES)
    return replies[::step][:REAL_REPLIES]


def disguises(term: str) -> list[str]:
    """A blocked term as people write it to get past a filter, each in a sentence."""
    leet = term.translate(str.maketrans("aeiost", "4310$7"))
    forms = [
        term,
        term.upper(),
        leet,
        " ".join(term),
        ".".join(term),
        term[0] + term[1] * 4 + term[2:] if len(term) > 2 else term,
        term.replace("a", "á").replace("e", "é").replace("i", "í").replace("o", "ö").replace("u", "ü"),
        term[: len(term) // 2] + "\u200b" + term[len(term) // 2 :],
    ]
    return [f"well, {form}, there it is." for form in forms]


def timed(moderator: Moderator, texts: list[str], rounds: int) -> tuple[list[float], list[bool]]:
    times: list[float] = []
    held: list[bool] = []
    for text in texts:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            verdict = moderator.check(text)
            best = min(best, time.perf_counter() - started)
        times.append(best * 1000)
        held.append(not verdict.allowed)
    return times, held


def p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def share(held: list[bool], among: list[bool]) -> float:
    return sum(h for h, a in zip(held, among, strict=True) if a) / max(1, sum(among))


def precision_recall(held: list[bool], labels: list[int]) -> tuple[float, float]:
    true_pos = sum(h and y for h, y in zip(held, labels, strict=True))
    flagged, positive = sum(held), sum(labels)
    return (true_pos / flagged if flagged else 0.0), (true_pos / positive if positive else 0.0)


def run(rounds: int, threshold: float) -> None:
    data = labelled()
    texts, labels = [t for t, _, _ in data], [y for _, y, _ in data]
    ordinary = [k != "borderline" and y == 0 for _, y, k in data]  # chat, Wick's replies, gaming talk
    borderline = [k == "borderline" for _, _, k in data]  # mild swearing, teasing: near the line
    replies = real_replies()
    terms = [t.text for t in load_default_terms() if " " not in t.text] + list(OWNER_TERMS)
    disguised = [d for term in terms for d in disguises(term)]
    print(
        f"labelled: {len(data)} ({sum(labels)} to hold, {sum(ordinary)} ordinary, {sum(borderline)} borderline); "
        f"real replies: {len(replies)}; disguised blocked terms: {len(disguised)}; threshold {threshold}"
    )
    header = (
        f"{'setup':30} {'labelled ms med/p95':>20} {'replies ms med/p95':>19} {'precision':>9} {'recall':>7} "
        f"{'held ordinary':>13} {'held borderline':>15} {'held replies':>12} {'terms passing':>13}"
    )
    print(header)
    print("-" * len(header))
    scorers: dict[str, Scorer] = {}
    for name, classifier in SETUPS.items():
        settings = SafetySettings(blocked_terms=OWNER_TERMS, classifier=classifier, threshold=threshold)  # type: ignore[arg-type]
        moderator = Moderator(settings)
        if classifier != "off" and moderator.scorer is None:
            print(f"{name:30} (not installed)")
            continue
        if moderator.scorer is not None:
            scorers[classifier] = moderator.scorer
        lab_ms, lab_held = timed(moderator, texts, rounds)
        rep_ms, rep_held = timed(moderator, replies, rounds)
        _, term_held = timed(moderator, disguised, 1)
        precision, recall = precision_recall(lab_held, labels)
        held_ordinary = share(lab_held, ordinary)
        held_borderline = share(lab_held, borderline)
        held_replies = sum(rep_held) / len(replies)
        passing = term_held.count(False)
        worst_ms = max(p95(lab_ms), p95(rep_ms))
        ok = worst_ms <= TARGET_MS and max(held_ordinary, held_replies) <= TARGET_HELD and passing == 0
        print(
            f"{name:30} {statistics.median(lab_ms):9.3f}/{p95(lab_ms):<9.3f} "
            f"{statistics.median(rep_ms):9.3f}/{p95(rep_ms):<9.3f} {precision:9.2f} {recall:7.2f} "
            f"{held_ordinary:13.1%} {held_borderline:15.1%} {held_replies:12.1%} {passing:13d}  {'meets targets' if ok else 'MISSES'}"
        )
        if passing:
            print("   passing:", [d for d, h in zip(disguised, term_held, strict=True) if not h][:10])
        missed = [t for t, h, y in zip(texts, lab_held, labels, strict=True) if y and not h]
        wrong = [t for t, h, y in zip(texts, lab_held, labels, strict=True) if h and not y]
        wrong += [t for t, h in zip(replies, rep_held, strict=True) if h]
        print(f"   held wrongly ({len(wrong)}): {wrong[:6]}")
        print(f"   missed ({len(missed)}): {missed[:6]}")
    print("\nclassifiers alone on the labelled set (no rules):")
    for classifier, scorer in scorers.items():
        scores = [scorer.score(t) for t in texts]
        rep_scores = [scorer.score(t) for t in replies]
        cuts = (0.5, 0.6, 0.7, 0.8, 0.9) if classifier == "alt-profanity-check" else (0.5,)
        for cut in cuts:
            held = [s >= cut for s in scores]
            precision, recall = precision_recall(held, labels)
            held_replies = sum(s >= cut for s in rep_scores) / len(replies)
            print(
                f"   {classifier:20} >= {cut:.1f}: precision {precision:.2f} recall {recall:.2f} "
                f"held ordinary {share(held, ordinary):.1%} borderline {share(held, borderline):.1%} "
                f"replies {held_replies:.1%}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="checks per text; the fastest is kept (default 5)"
    )
    parser.add_argument("--threshold", type=float, default=SafetySettings().threshold)
    args = parser.parse_args()
    run(args.rounds, args.threshold)


if __name__ == "__main__":
    main()
