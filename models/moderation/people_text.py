"""One cleaning for people's text that the bot repeats: poll questions and options, story write-ins and premises.

A person can hide things in text that the bot then posts under its own name: bidi controls that reverse what
follows (and can make a harmless-looking line read as something else), zero-width and other invisible characters
that split a blocked word or make two options look alike, control characters and NUL that break logs and terminals.
`clean_people_text` removes them, collapses whitespace and cuts to a length on a word boundary.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that show nothing but change what text does. Every format character (category Cf) is one: the bidi
# embeddings, overrides and isolates (U+202A-202E, U+2066-2069), the marks U+200E/F and U+061C, zero-width
# space/non-joiner/joiner (U+200B-200D), word joiner and invisible operators (U+2060-2064), the BOM (U+FEFF), the
# soft hyphen and the tag characters (U+E0000-E007F). These blank letters are not Cf but render as nothing too.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")
_VARIATION_SELECTORS = re.compile(r"[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_SPACES = re.compile(r"\s+")


def _is_invisible(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in ("Cf", "Cs", "Co") or ch in _BLANK_LETTERS


def strip_invisible(text: str) -> str:
    """`text` without invisible or control characters; line breaks and tabs become spaces, NUL and the rest go.

    A variation selector stays only right after a visible character (it picks that character's look, as in a red
    heart emoji); alone, at the start, after a space or after another invisible character, it is dropped.
    """
    out: list[str] = []
    for ch in text:
        if _VARIATION_SELECTORS.match(ch):
            if out and not out[-1].isspace() and not _VARIATION_SELECTORS.match(out[-1]):
                out.append(ch)
        elif ch.isspace():
            out.append(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch)
        elif unicodedata.category(ch) != "Cc" and not _is_invisible(ch):
            out.append(ch)
    return "".join(out)


def _has_visible(text: str) -> bool:
    return any(not ch.isspace() and unicodedata.category(ch)[0] not in "MC" for ch in text)


def clean_people_text(text: str, max_chars: int) -> str:
    """`text` safe to repeat: NFC, no bidi/invisible/control characters, single spaces, at most `max_chars` long.

    A text longer than `max_chars` is cut at the last space that fits (a single word longer than that is cut
    inside it). Returns "" when nothing visible remains, so callers can refuse an empty option or write-in.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    text = strip_invisible(unicodedata.normalize("NFC", text))
    text = _SPACES.sub(" ", text).strip()
    if not _has_visible(text):
        return ""
    if len(text) > max_chars:
        cut = text[: max_chars + 1]
        space = cut.rfind(" ")
        text = (cut[:space] if space > 0 else cut[:max_chars]).rstrip()
    return text
