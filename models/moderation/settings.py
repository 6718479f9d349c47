"""The `[safety]` settings: what the moderator checks and what the platforms do with a held text.

The dataclass is the config section itself (`bot/config.py` reads `[safety]` into it and validates it), so the
moderation package needs nothing from `bot/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Classifier = Literal["alt-profanity-check", "glin-profanity", "off"]


@dataclass(frozen=True)
class SafetySettings:
    enabled: bool = True  # false = nothing is checked (not advised on a live stream)
    blocked_terms: tuple[str, ...] = ()  # whole words; case, accents and leetspeak do not matter
    blocked_patterns: tuple[str, ...] = ()  # Python regexes, searched case-insensitively
    use_default_list: bool = True  # also block the shipped list (models/moderation/default_terms.json)
    classifier: Classifier = "alt-profanity-check"
    threshold: float = 0.8  # classifier probability at or above which a reply is held, in (0, 1]
    on_flagged_input: Literal["ignore", "refuse"] = "ignore"  # a person's message that fails the check
    deflection: str = ""  # the in-voice line posted instead of a held reply; "" = the character card's
    twitch_automod_check: bool = False  # also ask Twitch AutoMod (token needs moderation:read)
    held_keep: int = 200  # held texts kept for moderators to review (the newest)


MAX_TERM_CHARS = 64  # a blocked term is a word or a short phrase
MIN_TERM_LETTERS = 2  # "a" or "x" alone would hold half of all replies


def term_problem(term: str) -> str | None:
    """Why `term` cannot be a blocked term, or None; the same rule for the config file and a live add."""
    stripped = term.strip()
    letters = sum(ch.isalnum() for ch in stripped)
    if not stripped:
        return "is empty"
    if len(stripped) > MAX_TERM_CHARS:
        return f"is longer than {MAX_TERM_CHARS} characters"
    if letters < MIN_TERM_LETTERS:
        return f"needs at least {MIN_TERM_LETTERS} letters or digits"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable regex, or None."""
    import re

    if not pattern.strip():
        return "is empty"
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        return f"is not a valid regular expression ({exc})"
    if compiled.search(""):
        return "matches empty text, so it would hold every reply"
    return None


def settings_problem(settings: SafetySettings) -> tuple[str, str] | None:
    """The first (key, problem) in `settings`, or None; `bot/config.py` turns it into a ConfigError."""
    for i, term in enumerate(settings.blocked_terms):
        if (problem := term_problem(term)) is not None:
            return f"safety.blocked_terms[{i}]", f"{term!r} {problem}"
    for i, pattern in enumerate(settings.blocked_patterns):
        if (problem := pattern_problem(pattern)) is not None:
            return f"safety.blocked_patterns[{i}]", f"{pattern!r} {problem}"
    if not 0.0 < settings.threshold <= 1.0:
        return "safety.threshold", f"must be in (0, 1], not {settings.threshold}"
    if settings.held_keep < 0:
        return "safety.held_keep", "must be 0 (keep none) or more"
    if len(settings.deflection) > 300 or "\n" in settings.deflection:
        return "safety.deflection", "must be one short line (300 characters at most)"
    return None
