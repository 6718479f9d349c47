"""The owner's rules: blocked terms (the owner's, the shipped default list, those added live) and regex patterns."""

from __future__ import annotations

import re

from models.moderation.folding import views
from models.moderation.terms import Term, TermMatcher


class Rules:
    """Immutable once built; the moderator swaps in a new one when a term is added live."""

    def __init__(self, terms: list[Term], patterns: tuple[str, ...]) -> None:
        self.matcher = TermMatcher(terms)
        self.patterns = tuple((p, re.compile(p, re.IGNORECASE)) for p in patterns)

    def reason(self, text: str) -> str | None:
        """Why `text` breaks a rule, or None. Patterns are searched in the text as written and folded."""
        folded = views(text)
        term = self.matcher.find(folded)
        if term is not None:
            return f"blocked term '{term.text}' ({term.origin})"
        for source, pattern in self.patterns:
            if pattern.search(text) or any(pattern.search(view) for view in folded):
                return f"blocked pattern '{source}' (owner's list)"
        return None
