"""Blocked terms as patterns over folded text: whole words, leetspeak, repeated letters, an optional plural.

A term is folded like the text (`folding.fold`), then each letter becomes a character class with its leetspeak
stand-ins (0 for o, 1 for i or l, 3 for e, 4 or @ for a, 5 or $ for s, 7 or + for t), a run of k equal letters
matches k or more ("fuuuck"), words of a phrase may be joined by any separators or none, and the match must start
and end on a word boundary, so "class", "assess", "Scunthorpe" and "cocktail" never match "ass" or "cock".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from itertools import groupby

from models.moderation.folding import fold

DEFAULT_LIST = "default_terms.json"

_LEET = {
    "a": "a4@",
    "b": "b8",
    "e": "e3",
    "g": "g9",
    "i": "i1!|",
    "l": "l1|",
    "o": "o0",
    "s": "s5$",
    "t": "t7+",
    "z": "z2",
}
_WORD_GAP = r"[\W_]*"  # between the words of a phrase: any separators, or none ("suckmydick")
_PLURAL = r"(?:[e3]?[s5$z])?"
_START = r"(?<![^\W_])"  # not inside a word (an underscore counts as a separator: "xx_term_xx")
_END = r"(?![^\W_])"


@dataclass(frozen=True)
class Term:
    """A blocked term and where it came from: "owner's list", "default list: slur", "added by a moderator"."""

    text: str
    origin: str


def term_regex(term: str) -> str:
    """The pattern (without boundaries) matching `term` in folded text."""
    words = re.findall(r"[^\W_]+", fold(term))
    parts = []
    for word in words:
        pieces = []
        for char, run in groupby(word):
            count = len(list(run))
            stand_ins = _LEET.get(char, char)
            cls = re.escape(stand_ins) if len(stand_ins) == 1 else "[" + re.escape(stand_ins) + "]"
            pieces.append(cls + ("+" if count == 1 else f"{{{count},}}"))
        parts.append("".join(pieces))
    return _WORD_GAP.join(parts) + _PLURAL


class TermMatcher:
    """Finds the first blocked term in a set of folded views; one compiled alternation for speed."""

    def __init__(self, terms: list[Term]) -> None:
        unique: dict[str, Term] = {}
        for term in terms:
            unique.setdefault(fold(term.text).strip(), term)
        self.terms = tuple(unique.values())
        # Longest first, so "suck my dick" is reported rather than a shorter term inside it.
        ordered = sorted(self.terms, key=lambda t: -len(t.text))
        self._each = [(t, re.compile(_START + term_regex(t.text) + _END)) for t in ordered]
        body = "|".join(term_regex(t.text) for t in ordered)
        self._any = re.compile(f"{_START}(?:{body}){_END}") if ordered else None

    def find(self, views: tuple[str, ...]) -> Term | None:
        if self._any is None:
            return None
        for view in views:
            hit = self._any.search(view)
            if hit is None:
                continue
            found = hit.group()
            for term, pattern in self._each:
                if pattern.fullmatch(found):
                    return term
            return next(term for term, pattern in self._each if pattern.search(view))
        return None


def load_default_terms() -> list[Term]:
    """The shipped list, each term tagged with its category."""
    raw = json.loads(resources.files(__package__).joinpath(DEFAULT_LIST).read_text(encoding="utf-8"))
    return [
        Term(text, f"default list: {category}")
        for category, texts in raw.items()
        if category != "about"
        for text in texts
    ]
