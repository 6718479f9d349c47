"""What the moderator decided about one text, and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """`allowed` is False when the text must not be posted; `reasons` say why, for logs and moderators.

    `source` is "rules" (the owner's or the default list), "classifier" (the offensive-language model), or "" when
    the text is allowed.
    """

    allowed: bool
    reasons: tuple[str, ...] = ()
    source: str = ""


ALLOWED = Verdict(True)
