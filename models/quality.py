"""The data-quality step: what should never be learnt is dropped before training, and the reasons are counted.

Plain Python, no platform and no model: every measure is one a person can check by hand on the message.

Per example — the user message being answered and the character's reply, both as scrubbed (``models.scrub``):

- **no words**: not one letter, in any script: only punctuation, digits, symbols, emoji, invisible or control
  characters (a bare link, scrubbed to ``[link]``, has no words either);
- **gibberish**: random characters, keyboard mashing, odd Unicode. A message is gibberish when it has odd
  characters (control characters, two invisible ones, a direction override, a pile of combining marks: "zalgo"
  text); a run of ``MAX_RUN`` of one letter or digit; little variety (``MIN_ENTROPY_CHARS`` letters and digits or
  more with a character entropy under ``MIN_ENTROPY_BITS``, or the same word over and over); over twice as many
  punctuation marks and symbols as letters (a lone letter in a kaomoji excepted; with digits about, letters under
  a third of the rest); most of its longer words not word-like; or, across its longer Latin words,
  ``RARE_PAIRS_SHARE`` of the letter pairs being two consonants that languages seldom write side by side ("vx",
  "dk"; "st", "nd", "thr" are common). A word is not word-like when it mixes three scripts, holds symbols inside
  (``x9$kq``), flips between letters and digits (``k3j9q2``) or between cases (``hJkLqWe``), or, in Latin letters,
  has no vowel, a run of five consonants (``sch``, ``th``, ``ng``… count as one), a pair no language writes (``q``
  before a consonant, two of ``j q x z`` together), three consonants to start it that are not "s…" or "…r/l/v/w",
  or is typed along one keyboard row (``asdf``, ``poiuy``).

  All are gentle: words under four letters ("lol", "gg", "brb") are never judged on their own, emoji never count
  against a message, and non-Latin scripts are judged only by the measures that need no alphabet, so ordinary
  short chat in any language is kept — a false drop of normal chat costs more than a junk line missed.

Across examples (in the order given, deterministically):

- **repeated**: copy-paste spam — at most ``max_per_prompt`` examples per normalised user message (case,
  whitespace, punctuation and digits collapsed) and at most ``max_per_reply`` per normalised reply;
- **over share**: one person's flood — nobody's examples may exceed ``max_share_per_person`` of what is kept,
  though everyone keeps at least ``min_per_person``. The surplus is dropped deterministically and the kept sample
  spread over the person's conversations.

Replies the moderation step held are never learnt either: :func:`held` is the hook the dataset builder calls
(a log row whose ``held`` key is truthy; the log has no such column yet).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

NO_WORDS: Final = "no_words"
GIBBERISH: Final = "gibberish"
REPEATED: Final = "repeated"
OVER_SHARE: Final = "over_share"
REASONS: Final = (NO_WORDS, GIBBERISH, REPEATED, OVER_SHARE)
_LABELS: Final = {
    NO_WORDS: "with no words",
    GIBBERISH: "gibberish",
    REPEATED: "repeated spam",
    OVER_SHARE: "over one person's share",
}

MAX_RUN: Final = 12  # this many of one letter or digit in a row ("aaaaaaaaaaaa") is junk; "noooooo" is not
MIN_ENTROPY_CHARS: Final = 24  # texts of this many letters and digits or more have their entropy checked
MIN_ENTROPY_BITS: Final = 2.0  # ordinary text has about 4 bits a character; "asdasdasd…" 1.6, "hahaha…" 1
MIN_JUDGED_LETTERS: Final = 4  # shorter words are never judged on their own
MAX_WORD_LETTERS: Final = 30

# Scrubbed personal data (models.scrub) says nothing about whether the person wrote words.
_PLACEHOLDER = re.compile(r"\[(?:link|email|phone|invite|secret)\]")
_INVISIBLE_OK = frozenset("\u200c\u200d")  # zero-width (non-)joiner: emoji sequences, Persian, Indic scripts
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that may sit inside a word: apostrophes, hyphens, dots, slashes, "R&D", "12:30", "c++", "f*ck".
_INNER_OK = frozenset("'’ʼ-‐.·/&:_+,*")
_INNER_CATEGORIES = frozenset({"Mn", "Mc", "Me", "So", "Cf"})  # vowel signs, accents, emoji, joiners
_VOWELS = frozenset("aeiouyæøœəı")
# Consonant clusters that sound as one: counted as one letter when measuring runs of consonants.
_DIGRAPHS = re.compile(r"tsch|sch|ch|sh|th|ph|gh|ck|ng|sz|cz|rz|dz|zh|kh|wh|ts|tz")
_RARE = frozenset("jqxz")
# Two consonants side by side that European languages write often ("C" is a digraph above: "thr" is "Cr"). Any
# other pair of consonants is rare in words and common in random letters.
_CLUSTERS = frozenset(
    """
    bl br cl cr dr fl fr gl gr kl kn kr pf pl pr sc sk sl sm sn sp st sw tr tw wr zw
    ct ft ld lf lk lm ln lp ls lt lv lz mb mf mn mp ms nc nd nf nk nl nm nr ns nt nv nz ps pt
    rb rc rd rf rg rk rl rm rn rp rs rt rv rw rz xc xp xt gn wn ws wl wk wt wd ks ds gs bs ys dl tl bj dj
    hr hl hn hm ht hs hw hd Cr Cl Cw Cn Cm Cs Ct Cd Cf Ck Cb Cp Cv Cz Cg rC lC nC sC tC fC mC pC kC cC dC
    """.split()
)
RARE_PAIRS_MIN: Final = 6  # letter pairs in the message's longer words before their share is judged
RARE_PAIRS_SHARE: Final = 0.3  # random letters: about half their pairs are rare consonant pairs; words: few
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS = frozenset(pair for row in _ROWS for a, b in itertools.pairwise(row) for pair in (a + b, b + a))
_CJK = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC"})


@dataclass(frozen=True)
class QualityLimits:
    """What the across-example rules allow (config: `training.max_share_per_person`)."""

    max_share_per_person: float = 0.2  # 1.0 = no cap
    min_per_person: int = 5  # kept for everyone whatever the share says (few people: the cap would be tiny)
    max_per_prompt: int = 2  # examples per normalised user message
    max_per_reply: int = 2  # examples per normalised reply


@dataclass(frozen=True)
class Candidate:
    """One example as the quality step sees it: who asked, where, what, and the reply learnt."""

    person: tuple[str, str]  # (platform, user_id) of the user message answered
    conversation: str
    prompt: str
    reply: str


def held(row: Mapping[str, Any]) -> bool:
    """Did the moderation step hold this reply (never shown, never learnt)? A truthy ``held`` key, when present."""
    return "held" in row.keys() and bool(row["held"])


def describe(dropped: Mapping[str, int]) -> str:
    """`{"no_words": 150, "repeated": 20}` -> "150 with no words, 20 repeated spam" (reasons with a count only)."""
    return ", ".join(f"{dropped[r]} {_LABELS[r]}" for r in REASONS if dropped.get(r))


# --------------------------------------------------------------------------------------------- one message
@functools.lru_cache(maxsize=65_536)
def classify(text: str) -> str | None:
    """Why this message must not be learnt (`NO_WORDS` or `GIBBERISH`), or None when it may be."""
    normal = _PLACEHOLDER.sub(" ", unicodedata.normalize("NFKC", text))
    letters = sum(1 for c in normal if _is_letter(c))
    if not letters:
        return NO_WORDS
    if _has_odd_characters(text):
        return GIBBERISH
    text = normal
    if _longest_run(text) >= MAX_RUN or _repetitive(text) or _symbol_soup(text, letters):
        return GIBBERISH
    judged = weird = pairs = rare_pairs = 0
    for token in text.split():
        verdict, latin = _judge_word(token)
        if verdict is not None:
            judged += 1
            weird += verdict
        # Words meant to be said: not "KEKW" or "NSFW", nor vowel-less short forms ("glhf", "tmrw", "srsly").
        if (
            len(latin) >= MIN_JUDGED_LETTERS
            and not token.isupper()
            and (len(latin) > 4 or any(c in "aeiou" for c in latin))
        ):
            units = _DIGRAPHS.sub("C", latin)
            pairs += len(units) - 1
            rare_pairs += sum(
                1
                for a, b in itertools.pairwise(units)
                if a not in _VOWELS and b not in _VOWELS and a + b not in _CLUSTERS
            )
    if weird and weird * 2 > judged:  # most of its longer words are not word-like
        return GIBBERISH
    return GIBBERISH if pairs >= RARE_PAIRS_MIN and rare_pairs >= RARE_PAIRS_SHARE * pairs else None


def _is_letter(c: str) -> bool:
    return unicodedata.category(c)[0] == "L"


def _has_odd_characters(text: str) -> bool:
    """Control characters, several invisible ones or a direction override, or a pile of combining marks."""
    invisible = marks = run = 0
    letters = 1
    for c in text:
        category = unicodedata.category(c)
        if category == "Cc" and c not in "\t\n\r":
            return True
        if category == "Cf" and c not in _INVISIBLE_OK:
            if c in _BIDI:
                return True
            invisible += 1
        if category in ("Mn", "Me") and not 0xFE00 <= ord(c) <= 0xFE0F:  # variation selectors: emoji style
            marks += 1
            run += 1
            if run >= 4:  # Arabic and Hebrew stack two or three; "zalgo" text a dozen
                return True
        else:
            run = 0
            letters += category[0] == "L"
    return invisible >= 2 or marks > 1.5 * letters


def _longest_run(text: str) -> int:
    best = run = 0
    previous = ""
    for c in text.casefold():
        if c.isalnum() and c == previous:
            run += 1
        else:
            run = 1 if c.isalnum() else 0
        previous = c
        best = max(best, run)
    return best


def _repetitive(text: str) -> bool:
    """A long text of very few distinct letters and digits, or the same word over and over."""
    compact = "".join(c for c in text.casefold() if c.isalnum())
    if len(compact) >= MIN_ENTROPY_CHARS:
        counts = Counter(compact)
        entropy = -sum(n / len(compact) * math.log2(n / len(compact)) for n in counts.values())
        if entropy < MIN_ENTROPY_BITS:
            return True
    words = text.casefold().split()
    return len(words) >= 8 and len(set(words)) * 4 <= len(words)


def _symbol_soup(text: str, letters: int) -> bool:
    """Letters lost among punctuation, symbols and digits: "#$@!%", ".7@s;/8[" (emoji are not counted)."""
    symbols = digits = 0
    previous = ""
    for c in text:
        category = unicodedata.category(c)
        if (category[0] == "P" or category in ("Sm", "Sc", "Sk")) and c != previous:
            symbols += 1
        digits += category == "Nd"
        previous = c
    if digits and symbols >= 3:  # random characters: digits too, which emoticons and kaomoji do not have
        return letters * 3 < symbols + digits
    # A lone letter in a kaomoji ("¯\_(ツ)_/¯") is fine; more letters should outnumber the symbols around them.
    return letters >= 2 and symbols >= 4 and letters * 2 < symbols


def _judge_word(token: str) -> tuple[bool | None, str]:
    """(True: not word-like, False: word-like, None: too short to judge; the word's Latin letters, collapsed)."""
    start, end = 0, len(token)
    while start < end and not token[start].isalnum():
        start += 1
    while end > start and not token[end - 1].isalnum():
        end -= 1
    core = token[start:end]
    letters = [c for c in core if _is_letter(c)]
    latin = _latin_letters(letters)
    if not letters:
        return None, latin
    if _scripts(letters) >= 3:
        return True, latin
    if len(letters) >= 2 and any(not _inner_ok(c) for c in core):
        return True, latin
    if sum(1 for a, b in itertools.pairwise(core) if a.isdigit() != b.isdigit()) >= 3:
        return True, latin
    if sum(1 for a, b in itertools.pairwise(core) if a.islower() and b.isupper()) >= max(3, len(core) * 0.3):
        return True, latin  # "hJkLqWe"; "PogChamp", "FeelsBadMan" and "iPhone" have one or two
    if len(latin) < MIN_JUDGED_LETTERS:
        return (None if len(letters) < MIN_JUDGED_LETTERS else False), latin
    return _latin_weird(latin), latin


def _inner_ok(c: str) -> bool:
    return c.isalnum() or c in _INNER_OK or unicodedata.category(c) in _INNER_CATEGORIES


def _scripts(letters: Iterable[str]) -> int:
    groups = set()
    for c in letters:
        script = unicodedata.name(c, "UNKNOWN").split(" ", 1)[0]
        if script in ("MODIFIER", "UNKNOWN"):
            continue
        groups.add("CJK" if script in _CJK else script)
    return len(groups)


def _latin_letters(letters: Sequence[str]) -> str:
    """The word's Latin letters, lower case, accents off, a letter repeated in a row kept once ("hmmm" -> "hm")."""
    out: list[str] = []
    for c in letters:
        if not unicodedata.name(c, "").startswith("LATIN"):
            continue
        base = unicodedata.normalize("NFD", c.casefold())[0]
        if not out or out[-1] != base:
            out.append(base)
    return "".join(out)


def _latin_weird(word: str) -> bool:
    """A Latin word of four letters or more (already collapsed) that no language would write."""
    if len(word) >= MAX_WORD_LETTERS:
        return True
    for a, b in itertools.pairwise(word):
        if (
            (a == "q" and b not in _VOWELS)
            or (b == "q" and a not in _VOWELS and a not in "cn")
            or (a in _RARE and b in _RARE)
        ):
            return True
    if len(word) < 5:
        return False
    units = _DIGRAPHS.sub("C", word)
    vowels = sum(1 for c in units if c in _VOWELS)
    if vowels == 0:
        return True
    consonants = longest = 0
    for c in units:
        consonants = 0 if c in _VOWELS else consonants + 1
        longest = max(longest, consonants)
    # Three consonants start a word only after an "s" or before an r, l, v or w: "pcfome" is not a word; "strong",
    # "pflanze", "zdravo", "kthxbye" (th is one) and "lmfao" (too short to judge this way) are.
    onset = units[: len(units) - len(units.lstrip("bcdfghjklmnpqrstvwxz"))]
    if longest >= 5 or (len(onset) >= 3 and onset[0] != "s" and onset[-1] not in "rlvw" and len(word) >= 6):
        return True
    along_a_row = sum(1 for a, b in itertools.pairwise(word) if a + b in _NEIGHBOURS)
    return along_a_row >= 0.6 * (len(word) - 1)


# --------------------------------------------------------------------------------------------- across examples
def normalise(text: str) -> str:
    """For spotting copies: case, compatibility forms, whitespace, punctuation and digits collapsed, "sooo" = "soo"."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(
        c if c.isalpha() or c.isspace() or unicodedata.category(c)[0] == "M" else " " for c in text
    )
    text = re.sub(r"(.)\1{2,}", r"\1\1", text)
    return " ".join(text.split())


def select(candidates: Sequence[Candidate], limits: QualityLimits) -> tuple[list[int], Counter[str]]:
    """The indices of the candidates to keep (in order) and how many were dropped for each reason."""
    dropped: Counter[str] = Counter()
    kept: list[int] = []
    for i, candidate in enumerate(candidates):
        reason = classify(candidate.prompt) or classify(candidate.reply)
        if reason is None:
            kept.append(i)
        else:
            dropped[reason] += 1
    for key, most in (("prompt", limits.max_per_prompt), ("reply", limits.max_per_reply)):
        groups: dict[str, list[int]] = defaultdict(list)
        for i in kept:
            groups[normalise(getattr(candidates[i], key))].append(i)
        surplus = {i for group in groups.values() for i in _varied(candidates, group)[most:]}
        dropped[REPEATED] += len(surplus)
        kept = [i for i in kept if i not in surplus]
    by_person: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in kept:
        by_person[candidates[i].person].append(i)
    cap = _person_cap([len(v) for v in by_person.values()], limits)
    surplus = {
        i for group in by_person.values() if len(group) > cap for i in _varied(candidates, group)[cap:]
    }
    dropped[OVER_SHARE] += len(surplus)
    kept = [i for i in kept if i not in surplus]
    return kept, +dropped


def _person_cap(counts: Sequence[int], limits: QualityLimits) -> int:
    """The most examples one person keeps: the largest cap that is within `max_share_per_person` of what stays
    kept once everyone is capped (sum of min(n, cap)), and never below `min_per_person`."""
    share = limits.max_share_per_person
    ordered = sorted(counts)
    if not ordered or share >= 1.0:
        return max(ordered, default=0)
    below = sum(ordered)
    # Between two people's counts the kept total is linear in the cap: (counts below) + cap * (people above).
    for j in range(len(ordered) - 1, -1, -1):
        below -= ordered[j]
        low, high = (ordered[j - 1] if j else 0), ordered[j]
        slope = 1.0 - share * (len(ordered) - j)  # cap <= share * (below + cap * above)
        best = high if slope <= 1e-12 else min(high, math.floor(share * below / slope + 1e-9))
        if best >= low:
            return max(best, limits.min_per_person)
    return limits.min_per_person


def _varied(candidates: Sequence[Candidate], group: list[int]) -> list[int]:
    """The group in the order to keep: one per conversation in turn (conversations in a fixed pseudo-random
    order, then the next from each), other people before a second one from the same person."""
    by_conversation: dict[str, list[int]] = defaultdict(list)
    for i in group:
        by_conversation[candidates[i].conversation].append(i)
    order = sorted(by_conversation, key=lambda c: hashlib.sha256(c.encode("utf-8")).digest())
    rounds: list[int] = []
    depth = 0
    while len(rounds) < len(group):
        rounds += [by_conversation[c][depth] for c in order if depth < len(by_conversation[c])]
        depth += 1
    seen: set[tuple[str, str]] = set()
    first: list[int] = []
    later: list[int] = []
    for i in rounds:
        (later if candidates[i].person in seen else first).append(i)
        seen.add(candidates[i].person)
    return first + later
