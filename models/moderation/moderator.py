"""The moderator: the owner's rules first, then the offensive-language classifier.

`check` is synchronous and cheap (well under 5 ms for a reply on a small CPU; bench/safety_bench.py), so the
platforms call it on the event loop right before posting. What to do with a held text (post the deflection, keep
the text for moderators, refuse an input) is the caller's; `Verdict.reasons` say why for the log.
"""

from __future__ import annotations

import logging
import re
import threading
from enum import Enum
from typing import Literal

from models.moderation.classifier import Scorer, load_scorer, plain
from models.moderation.folding import views
from models.moderation.rules import Rules
from models.moderation.settings import SafetySettings, term_problem
from models.moderation.terms import Term, load_default_terms
from models.moderation.verdict import ALLOWED, Verdict

log = logging.getLogger(__name__)

MAX_LIVE_TERMS = 1000  # terms moderators may add while the bot runs (the config file holds the lasting list)
_NOT_WORDS = re.compile(r"[\W_]+")


class _Scorer(Enum):
    FROM_SETTINGS = "the classifier `[safety] classifier` names"


class Moderator:
    """Checks texts against the `[safety]` settings; `add_blocked` extends the rules while the bot runs."""

    def __init__(
        self,
        settings: SafetySettings,
        *,
        scorer: Scorer | Literal[_Scorer.FROM_SETTINGS] | None = _Scorer.FROM_SETTINGS,
    ) -> None:
        """`scorer` replaces the classifier the settings name (tests pass a fake, or None for rules only)."""
        self.settings = settings
        self._default = load_default_terms() if settings.use_default_list else []
        self._owner = [Term(t.strip(), "owner's list") for t in settings.blocked_terms]
        self._live: list[Term] = []
        self._lock = threading.Lock()
        self._rules = self._build_rules()
        if scorer is _Scorer.FROM_SETTINGS:
            scorer = load_scorer(settings.classifier) if settings.enabled else None
        self.scorer: Scorer | None = scorer

    def _build_rules(self) -> Rules:
        return Rules(self._owner + self._default + self._live, self.settings.blocked_patterns)

    def check(self, text: str) -> Verdict:
        """Whether `text` may be posted: the rules first (a hit skips the classifier), then the classifier."""
        if not self.settings.enabled or not text.strip():
            return ALLOWED
        reason = self._rules.reason(text)
        if reason is not None:
            return Verdict(False, (reason,), "rules")
        score = self._score(text)
        if score is not None and score >= self.settings.threshold:
            assert self.scorer is not None
            reason = f"offensive-language classifier {score:.2f} >= {self.settings.threshold:.2f}"
            return Verdict(False, (f"{reason} ({self.scorer.name})",), "classifier")
        return ALLOWED

    def _score(self, text: str) -> float | None:
        """The classifier's score for `text`, or for its plain form when that reads differently (leet, spacing)."""
        scorer = self.scorer
        if scorer is None:
            return None
        try:
            score = scorer.score(text)
            second = plain(views(text)[-1])
            if _words(second) != _words(text.casefold()):
                score = max(score, scorer.score(second))
        except Exception:  # logged once: the classifier is dropped for the rest of the run
            log.exception("safety: classifier %s failed; checking with the rules only", scorer.name)
            self.scorer = None
            return None
        return score

    def add_blocked(self, term: str) -> None:
        """Block `term` from now on (not saved to the config file). Raises ValueError for a term the config refuses."""
        problem = term_problem(term)
        if problem is not None:
            raise ValueError(f"{term!r} {problem}")
        with self._lock:
            if len(self._live) >= MAX_LIVE_TERMS:
                raise ValueError(
                    f"{MAX_LIVE_TERMS} terms were already added; put the lasting ones in the config"
                )
            if not self._known(term):
                self._live.append(Term(term.strip(), "added by a moderator"))
                self._rules = self._build_rules()

    def _known(self, term: str) -> bool:
        key = views(term)[0].strip()
        return any(views(t.text)[0].strip() == key for t in self._rules.matcher.terms)

    def describe(self) -> list[str]:
        """The settings in force, one line each, for /admin safety."""
        s = self.settings
        if not s.enabled:
            return ["Safety checks are off ([safety] enabled = false): nothing is checked before posting."]
        default = (
            f"the default list ({len(self._default)} terms)" if s.use_default_list else "no default list"
        )
        lines = [
            f"Rules: {len(self._owner)} owner's terms, {len(s.blocked_patterns)} patterns, {default}, "
            f"{len(self._live)} added by moderators since start.",
        ]
        if self.scorer is not None:
            version = getattr(self.scorer, "version", "")
            lines.append(
                f"Classifier: {self.scorer.name} {version}".rstrip()
                + f", holds at a score >= {s.threshold:.2f}."
            )
        elif s.classifier == "off":
            lines.append("Classifier: off (rules only).")
        else:
            lines.append(f"Classifier: {s.classifier} is unavailable; rules only (see the log).")
        deflection = repr(s.deflection) if s.deflection else "the character card's"
        lines.append(f"Flagged input: {s.on_flagged_input}. Deflection: {deflection}.")
        lines.append(
            f"Twitch AutoMod check: {'on' if s.twitch_automod_check else 'off'}. Held texts kept: {s.held_keep}."
        )
        return lines


def _words(text: str) -> str:
    return _NOT_WORDS.sub(" ", text).strip()
