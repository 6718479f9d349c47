"""The persona check: questions whose faithful answers the card determines, scored automatically on sampled replies.

A check is a question plus what a faithful reply must say and must not say::

    {"question": "who lives in that lantern?", "about": "name", "expect": [["wick"]], "forbid": ["zoe"]}

A reply passes when every ``expect`` group has at least one of its terms and no ``forbid`` term occurs. Terms match
case- and accent-insensitively at the start of a word and may continue ("fear" matches "fears", "fearful"); a term
of several words matches as a phrase. The persona score of a model is the share of passing replies over all checks,
several sampled replies each, at the bot's own sampling settings: one greedy answer says little about what viewers
see.

Checks come from two places: a hand-written file next to the card (``<card>.persona_checks.json``, the owner's or
ours, held out from training) and :func:`derive_checks`, which asks what any card itself determines (the name, its
lorebook facts, its stated personality and home) in phrasings that card-derived training examples never use.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.persona.card import Card, LoreEntry, apply_macros

CHECKS_SUFFIX = ".persona_checks.json"
MAX_CHECKS = 200  # a file with more is refused: each check costs several generations in every gate
MIN_STEM_CHARS = 3

# Words that say nothing about a fact: never used as expected terms of a derived check.
_STOPWORDS = frozenset(
    """a about above after again all also always am an and any are as at be because been before being below
    between both but by can could did do does doing down during each every few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just like made make makes many me
    more most much my never nor not now of off often on once one only or other our out over own same she should so
    some such than that the their them then there these they this those through to too under until up upon very
    was we were what when where which while who whom why will with would you your yours once every night nights
    day days time times something someone thing things little tiny bit lot really even still ever talk talks
    like likes call calls near nearly love loves put puts get gets got say says said tell tells know knows want
    wants think thinks feel feels look looks come comes goes going keep keeps""".split()
)

# Phrasings of the derived checks: deliberately different from the card-derived training questions
# (models/tuning/card_examples.py), so a tune that only memorised its own questions does not pass.
NAME_QUESTIONS = ("Sorry, I missed it: who am I talking to?", "What do people call you?")
LORE_QUESTIONS = ("What do you know about {key}?", "Say something about {key}.")
PERSONALITY_QUESTION = "How would your friends describe you?"
HOME_QUESTION = "Where can I find you when you're at home?"


class ChecksError(ValueError):
    """A persona checks file that cannot be used; the message names the file and the check."""


@dataclass(frozen=True)
class PersonaCheck:
    question: str
    expect: tuple[tuple[str, ...], ...]  # every group needs one of its terms
    forbid: tuple[str, ...] = ()
    about: str = ""

    def passes(self, reply: str) -> bool:
        text = fold(reply)
        if any(_has_term(text, term) for term in self.forbid):
            return False
        return all(any(_has_term(text, term) for term in group) for group in self.expect)


@dataclass(frozen=True)
class PersonaScore:
    """The share of sampled replies that were faithful, with the per-topic breakdown and a few failures to show."""

    passed: int
    total: int
    by_about: dict[str, tuple[int, int]] = field(default_factory=dict)
    failures: tuple[tuple[str, str], ...] = ()  # (question, reply), the first few

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 4),
            "passed": self.passed,
            "total": self.total,
            "by_about": {k: list(v) for k, v in self.by_about.items()},
            "failures": [list(f) for f in self.failures],
        }


MAX_FAILURES_SHOWN = 5


def score_replies(checks: Sequence[PersonaCheck], replies: Sequence[Sequence[str]]) -> PersonaScore:
    """Score ``replies[i]`` (several samples) against ``checks[i]``."""
    if len(checks) != len(replies):
        raise ValueError(f"{len(checks)} checks but {len(replies)} reply lists")
    passed = total = 0
    by_about: dict[str, tuple[int, int]] = {}
    failures: list[tuple[str, str]] = []
    for check, samples in zip(checks, replies, strict=True):
        for reply in samples:
            ok = check.passes(reply)
            passed += ok
            total += 1
            p, t = by_about.get(check.about or "other", (0, 0))
            by_about[check.about or "other"] = (p + ok, t + 1)
            if not ok and len(failures) < MAX_FAILURES_SHOWN:
                failures.append((check.question, reply))
    return PersonaScore(passed=passed, total=total, by_about=by_about, failures=tuple(failures))


# ------------------------------------------------------------------------------------------------------- matching
def fold(text: str) -> str:
    """Lower case, accents off, curly quotes straight, runs of space as one: the form terms are matched in."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split())


def _has_term(text: str, term: str) -> bool:
    words = fold(term).split()
    if not words:
        return False
    pattern = r"\b" + r"\w*[\s\-]+".join(re.escape(w) for w in words)
    return re.search(pattern, text) is not None


# -------------------------------------------------------------------------------------------------- the file
def checks_path_for(card_path: str | Path) -> Path:
    """Where a card's hand-written checks live: ``name.json`` -> ``name.persona_checks.json``."""
    path = Path(card_path)
    return path.with_name(path.stem + CHECKS_SUFFIX)


def load_checks(path: str | Path) -> list[PersonaCheck]:
    """Checks from a JSON file ``{"checks": [...]}``; a problem names the file and the check's number."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChecksError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ChecksError(f"{path}: not JSON: {exc}") from None
    items = raw.get("checks") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise ChecksError(f'{path}: needs a non-empty "checks" list')
    if len(items) > MAX_CHECKS:
        raise ChecksError(f"{path}: {len(items)} checks, more than the {MAX_CHECKS} allowed")
    return [_parse_check(item, f"{path}: check {number}") for number, item in enumerate(items, 1)]


def _parse_check(item: object, where: str) -> PersonaCheck:
    if not isinstance(item, dict):
        raise ChecksError(f"{where}: must be an object")
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ChecksError(f'{where}: "question" must be a non-empty string')
    expect = item.get("expect")
    if not isinstance(expect, list) or not expect:
        raise ChecksError(f'{where}: "expect" must be a non-empty list of term lists')
    groups = []
    for group in expect:
        terms = [group] if isinstance(group, str) else group
        if (
            not isinstance(terms, list)
            or not terms
            or not all(isinstance(t, str) and t.strip() for t in terms)
        ):
            raise ChecksError(f'{where}: each "expect" group must be a non-empty list of non-empty strings')
        groups.append(tuple(terms))
    forbid = item.get("forbid", [])
    if not isinstance(forbid, list) or not all(isinstance(t, str) and t.strip() for t in forbid):
        raise ChecksError(f'{where}: "forbid" must be a list of non-empty strings')
    about = item.get("about", "")
    if not isinstance(about, str):
        raise ChecksError(f'{where}: "about" must be a string')
    return PersonaCheck(question=question.strip(), expect=tuple(groups), forbid=tuple(forbid), about=about)


# ------------------------------------------------------------------------------------------------ derived
def derive_checks(card: Card) -> list[PersonaCheck]:
    """Checks any card determines: its name, each lorebook fact, its personality and (when stated) its home."""
    names = tuple(n for n in (card.name, card.nickname) if n.strip())
    checks = (
        [PersonaCheck(question=q, expect=(names,), about="name") for q in NAME_QUESTIONS] if names else []
    )
    char = card.char_name
    excluded = {fold(w) for n in names for w in n.split()}
    for entry in _fact_entries(card):
        content = apply_macros(entry.content, char=char, user="User")
        key = next((k for k in entry.keys if k[:1].isupper() and not k.isupper()), entry.keys[0])
        terms = salient_terms(content, exclude=excluded | {fold(w) for k in entry.keys for w in k.split()})
        if not terms:
            continue
        for template in LORE_QUESTIONS:
            checks.append(
                PersonaCheck(question=template.format(key=_key_phrase(key)), expect=(terms,), about="lore")
            )
    traits = personality_terms(apply_macros(card.personality, char=char, user="User"))
    if traits:
        checks.append(PersonaCheck(question=PERSONALITY_QUESTION, expect=(traits,), about="personality"))
    home = home_phrase(apply_macros(card.description, char=char, user="User"))
    if home:
        terms = salient_terms(home, exclude=excluded)
        if terms:
            checks.append(PersonaCheck(question=HOME_QUESTION, expect=(terms,), about="home"))
    return checks


def _fact_entries(card: Card) -> list[LoreEntry]:
    if card.lorebook is None:
        return []
    return [
        e for e in card.lorebook.entries if e.enabled and e.keys and e.content.strip() and not e.use_regex
    ]


def _key_phrase(key: str) -> str:
    """A lorebook key as it reads in a question: a name as it is, a plain word with "the"."""
    key = key.strip()
    return key if key[:1].isupper() and not key.isupper() else f"the {key.lower()}"


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_POSSESSIVE = re.compile(r"'s?$")


def stem(word: str) -> str:
    """A light stem, so that a term matches a word's other forms by prefix: "fears" -> "fear", "melting" -> "melt"."""
    word = fold(word)
    for suffix in ("ing", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


# A few feelings that cards state and replies say in other words: a derived check accepts either.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "fear": ("afraid", "scare", "scary", "terrif", "frighten", "fright", "dread", "nervous", "panic"),
    "afraid": ("fear", "scare", "scary", "terrif", "frighten", "fright", "dread", "nervous", "panic"),
    "hate": ("dislike", "can't stand", "loathe", "despise"),
    "enjoy": ("love", "adore", "fond"),
}


def salient_terms(text: str, *, exclude: Iterable[str] = (), limit: int = 12) -> tuple[str, ...]:
    """The content words of ``text`` (stems, no stopwords, none of ``exclude``), in order of first use, with the
    other words for a few common feelings."""
    excluded = {stem(w) for w in exclude}
    out: list[str] = []
    for word in _WORD.findall(text):
        folded = _POSSESSIVE.sub("", fold(word))
        if folded in _STOPWORDS or len(folded) < 4:
            continue
        root = stem(folded)
        if len(root) < MIN_STEM_CHARS or root in excluded or root in out:
            continue
        out.append(root)
        if len(out) == limit:
            break
    return tuple(dict.fromkeys([*out, *(s for root in out for s in _SYNONYMS.get(root, ()))]))


def personality_terms(personality: str) -> tuple[str, ...]:
    """The main word of each comma- or semicolon-separated trait: "witty, warm, a bit vain" -> wit, warm, vain."""
    out: list[str] = []
    for part in re.split(r"[,;/\n]|\band\b", personality):
        words = [w for w in _WORD.findall(part) if fold(w) not in _STOPWORDS and len(w) >= 3]
        if words:
            root = stem(words[0])
            if root not in out:
                out.append(root)
    return tuple(out)


_HOME = re.compile(r"\b(?:lives|living|dwells|resides|stays)\s+(?:in|on|at|inside|under)\s+([^.;:!?]+)", re.I)


def home_phrase(description: str) -> str:
    """What the description says the character lives in ("the brass lantern on the streamer's desk"), or ""."""
    match = _HOME.search(description)
    return match.group(1).strip() if match else ""


def all_checks(card: Card, hand_written: Sequence[PersonaCheck] = ()) -> list[PersonaCheck]:
    """The checks a gate runs: the hand-written ones first, then those derived from the card."""
    return [*hand_written, *derive_checks(card)]
