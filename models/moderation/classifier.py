"""Local offensive-language classifiers: a score in [0, 1] per text, offline, on the CPU.

Two libraries were measured on tests/data/safety/labelled.jsonl (222 lines) and 200 of the character's own
replies (bench/safety_bench.py; the full table is in docs/safety.md), with the rules in front, threshold 0.8:

- alt-profanity-check (MIT): TF-IDF + calibrated linear SVMs (scikit-learn), trained on ~200k human-labelled samples;
  probability per text. Recall 0.83, precision 0.93, 0.9% of ordinary chat held, 0.09 ms median per text (through
  `profanity_check_scorer.py`; ~9 ms through scikit-learn's own call).
- glin-profanity (MIT): word lists with leetspeak handling; yes/no only. Recall 0.75, precision 0.96, 0% of
  ordinary chat held, 0.21 ms median. It finds only listed words, which the rules already cover, and misses abuse
  without swear words ("nobody likes you, you pathetic loser").

alt-profanity-check is the default: it holds 9 of the 23 offensive texts glin-profanity misses (glin 2 of its 16),
stays under the 2% target on ordinary chat, and its score lets the owner tune `threshold`. Either is optional at
run time: a missing library is logged once and the moderator runs on the rules alone.
"""

from __future__ import annotations

import logging
import re
from importlib import metadata
from typing import Protocol

log = logging.getLogger(__name__)

PACKAGES = {"alt-profanity-check": "profanity_check", "glin-profanity": "glin_profanity"}
# Runs of one letter ("fuuuuck") and leetspeak digits inside words are undone before a second look.
_REPEATS = re.compile(r"([^\W\d_])\1{2,}")
_WORD_WITH_LETTERS = re.compile(r"\S*[^\W\d_]\S*")
_LEET = str.maketrans("013457@$", "oieastas")


class Scorer(Protocol):
    """An offensive-language classifier: `score` is the probability that `text` is offensive."""

    name: str

    def score(self, text: str) -> float: ...


class GlinProfanity:
    """glin-profanity's English word list: 1.0 when it finds a listed word, else 0.0."""

    name = "glin-profanity"

    def __init__(self) -> None:
        from glin_profanity import Filter

        self._filter = Filter({"languages": ["english"], "detect_leetspeak": True})
        self.version = metadata.version(self.name)

    def score(self, text: str) -> float:
        return 1.0 if self._filter.is_profane(text) else 0.0


def load_scorer(name: str) -> Scorer | None:
    """The classifier named in `[safety] classifier`, or None ("off", or the library is missing: logged once)."""
    if name == "off":
        return None
    try:
        if name == "alt-profanity-check":
            from models.moderation.profanity_check_scorer import ProfanityCheck

            return ProfanityCheck()
        return GlinProfanity()
    except Exception as exc:  # ImportError, or a model file that scikit-learn cannot read
        log.warning(
            "safety: classifier %s is unavailable (%s: %s); checking with the rules only "
            "(install it with `pip install %s`)",
            name,
            type(exc).__name__,
            exc,
            name,
        )
        return None


def plain(text: str) -> str:
    """`text` with leetspeak in words read as letters and runs of a letter shortened ("l000ser" -> "loser")."""
    return _REPEATS.sub(r"\1", _WORD_WITH_LETTERS.sub(lambda m: m.group().translate(_LEET), text))
