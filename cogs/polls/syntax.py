"""The text form of poll commands shared by the console and Twitch chat: `Question? | a | b | 2m [multi]`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cogs.polls.model import PollError

CREATE_USAGE = "Question? | option 1 | option 2 | duration (e.g. 2m) [multi]"
_SEPARATOR = re.compile(r"\s*[|;]\s*")
_MULTI_FLAG = re.compile(r"\s+(multi|multiple)$", re.IGNORECASE)


class PollSyntaxError(PollError):
    """The command's text does not have the shape `Question? | a | b | duration`."""


@dataclass(frozen=True)
class CreateSpec:
    question: str
    options: list[str]
    duration: str
    multi: bool


def split_options(text: str) -> list[str]:
    """Options typed in one field, separated by `|` or `;` (Discord's `options` parameter)."""
    return [part.strip() for part in _SEPARATOR.split(text.strip())] if text.strip() else []


def parse_create(text: str) -> CreateSpec:
    """Split `Question? | a | b | 2m` (or with `;`); the last part is the duration, optionally followed by `multi`.

    Only the shape is checked here; the rules (lengths, counts, duration bounds) are `make_draft`'s.
    """
    parts = split_options(text)
    if len(parts) < 2:
        raise PollSyntaxError(f"Write: {CREATE_USAGE}")
    question, *options, last = parts
    multi = False
    flag = _MULTI_FLAG.search(last)
    if flag:
        multi = True
        last = last[: flag.start()]
    return CreateSpec(question=question, options=options, duration=last.strip(), multi=multi)
