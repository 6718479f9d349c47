"""Lorebook activation: which ``character_book`` entries enter the prompt for the chat as it stands now.

1. Scan the last ``scan_depth`` chat texts for each enabled entry's keys (constant entries are always active).
2. A selective entry also needs one of its secondary keys in the same text.
3. With ``recursive_scanning``, content of active entries (constants included) is scanned too, for a bounded
   number of passes.
4. Highest ``priority`` first (then lowest ``insertion_order``), entries are kept while they fit ``token_budget``.
5. The kept entries are returned in ``insertion_order``, the order the prompt shows them.

Plain keys match whole words (``"cat"`` does not fire on ``"concatenate"``); ``use_regex`` keys (V3) are regular
expressions, written bare or as ``/pattern/flags``. A regex that does not compile is skipped with a warning.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Final

from models.persona.card import Lorebook, LoreEntry

log = logging.getLogger(__name__)

# Recursion lets lore entries trigger each other; a few passes cover real books and bound a cycle's cost.
MAX_RECURSION_PASSES: Final = 3
# Patterns come from card files; very long ones are more likely mistakes (or catastrophic backtracking) than lore.
MAX_REGEX_CHARS: Final = 500
_SLASH_REGEX: Final = re.compile(r"^/(.+)/([a-z]*)$", re.DOTALL)
_REGEX_FLAGS: Final = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def active_lore(
    book: Lorebook, recent_texts: Sequence[str], count_tokens: Callable[[str], int]
) -> list[LoreEntry]:
    """Entries of ``book`` triggered by ``recent_texts`` (oldest first), within the book's token budget."""
    window = list(recent_texts[-book.scan_depth :]) if book.scan_depth > 0 else []
    candidates = [entry for entry in book.entries if entry.enabled and entry.content.strip()]

    active: list[LoreEntry] = [entry for entry in candidates if entry.constant]
    seen = {id(entry) for entry in active}  # by identity: two equal entries in a book are still two entries
    scanned = "\n".join(window)
    unscanned = [entry.content for entry in active]  # constant lore can trigger other entries when recursing
    passes = 1 + (MAX_RECURSION_PASSES if book.recursive_scanning else 0)
    for _ in range(passes):
        newly = [entry for entry in candidates if id(entry) not in seen and _triggered(entry, scanned)]
        active.extend(newly)
        seen.update(id(entry) for entry in newly)
        # Next pass scans only content not scanned yet; earlier text cannot trigger anything new.
        unscanned.extend(entry.content for entry in newly)
        if not unscanned:
            break
        scanned, unscanned = "\n".join(unscanned), []

    kept: list[LoreEntry] = []
    used = 0
    for entry in sorted(active, key=lambda e: (-e.priority, e.insertion_order)):
        cost = count_tokens(entry.content)
        if used + cost <= book.token_budget:
            kept.append(entry)
            used += cost
    return sorted(kept, key=lambda e: e.insertion_order)


def _triggered(entry: LoreEntry, text: str) -> bool:
    """Whether ``text`` fires ``entry``: a primary key, plus a secondary key when the entry is selective."""
    if not _any_key_in(entry.keys, text, entry):
        return False
    if entry.selective and entry.secondary_keys:
        return _any_key_in(entry.secondary_keys, text, entry)
    return True


def _any_key_in(keys: Sequence[str], text: str, entry: LoreEntry) -> bool:
    for key in keys:
        pattern = _compile(key, entry.use_regex, entry.case_sensitive)
        if pattern is not None and pattern.search(text):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _compile(key: str, use_regex: bool, case_sensitive: bool) -> re.Pattern[str] | None:
    """The pattern for one key, cached (the same keys are checked on every message); ``None`` if unusable."""
    flags = 0 if case_sensitive else re.IGNORECASE
    if not use_regex:
        # Lookarounds instead of \b, so keys that start or end with punctuation ("C++", "#lore") still match.
        return re.compile(rf"(?<!\w){re.escape(key)}(?!\w)", flags)
    if len(key) > MAX_REGEX_CHARS:
        log.warning("lorebook regex skipped: longer than %d characters", MAX_REGEX_CHARS)
        return None
    source = key
    slashed = _SLASH_REGEX.match(key)
    if slashed:
        source = slashed.group(1)
        for letter in slashed.group(2):
            flags |= _REGEX_FLAGS.get(letter, 0)
    try:
        return re.compile(source, flags)
    except re.error as exc:
        log.warning("lorebook regex %r skipped: %s", key, exc)
        return None
