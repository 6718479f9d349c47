"""Folding text so a blocked term is found however it is dressed up.

`fold` removes what changes a word's look but not its reading: invisible characters, accents, case, full-width
and look-alike letters. `joined` also undoes spelling a word out ("f.u.c.k", "f u c k") and breaking it with
punctuation ("sl.ut"). Leetspeak and repeated letters are handled by the term patterns (`terms.py`), which match
folded text, so "$lut", "5lut" and "sluuut" need no rewriting here.
"""

from __future__ import annotations

import re
import unicodedata

from models.moderation.people_text import strip_invisible

# Cyrillic and Greek letters that look like Latin ones, used to slip a word past a filter.
_LOOKALIKES = str.maketrans(
    {
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "α": "a",
        "β": "b",
        "ε": "e",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
    }
)
# Punctuation that people put inside a word to break it up: removed when it has a character on each side.
# Not apostrophes: "he'll", "we'll" and "she'll" are words, not "hell", "well" and "shell" broken up.
_INNER_BREAKS = re.compile(r"(?<=\S)[.\-_*·•~,:;/\\^]+(?=\S)")
_SEPARATOR_RUN = re.compile(r"[\s.\-_*·•~,:;/\\^]+")
_WIDE_GAP = re.compile(r"\s\s")  # "f u c k  y o u": two spaces end a spelled-out word
# A character spelled out alone: a letter, a digit or a leetspeak symbol.
_SINGLE = re.compile(r"[^\W_]|[@$!|+]")


def fold(text: str) -> str:
    """Case-, accent-, width- and look-alike-folded `text`, without invisible characters."""
    text = unicodedata.normalize("NFKD", strip_invisible(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.casefold().translate(_LOOKALIKES)


def views(text: str) -> tuple[str, ...]:
    """The folded forms of `text` that blocked terms are searched in: as written, and with spelling-out undone."""
    folded = fold(text)
    rejoined = joined(unbroken(folded))
    return (folded,) if rejoined == folded else (folded, rejoined)


def joined(folded: str) -> str:
    """`folded` with spelled-out words joined ("f u c k" and "f.u.c.k" -> "fuck") and inner breaks removed."""
    tokens: list[str] = []
    run: list[str] = []
    parts = _SEPARATOR_RUN.split(folded)
    gaps = [*_SEPARATOR_RUN.findall(folded), ""]
    for token, gap in zip(parts, gaps, strict=True):
        if _SINGLE.fullmatch(token):
            run.append(token)
            if _WIDE_GAP.search(gap):
                tokens.append("".join(run))
                run = []
            continue
        if run:
            tokens.append("".join(run))
            run = []
        if token:
            tokens.append(token)
    if run:
        tokens.append("".join(run))
    return " ".join(tokens)


def unbroken(folded: str) -> str:
    """`folded` with punctuation inside words removed ("sl.ut" -> "slut"), spaces kept."""
    return _INNER_BREAKS.sub("", folded)
