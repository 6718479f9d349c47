"""What a poll is and the rules it must follow: limits, validation, durations and choosing an option.

Everything here is pure: no database, no clock of its own, no platform. Every rule broken raises a `PollError`
subclass whose message is written for the person who typed the command, so adapters can show it as it is.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

from models.moderation import clean_people_text

# Limits. The question and option lengths are Discord's native-poll limits, so a poll fits every platform.
MAX_QUESTION_CHARS = 300
MIN_OPTIONS = 2
MAX_OPTIONS = 10
MAX_OPTION_CHARS = 55
MIN_DURATION_S = 15.0
MAX_DURATION_S = 7 * 24 * 3600.0
MAX_CHOICE_CHARS = 200  # a vote's free text ("option a") longer than this cannot name any option

DURATION_EXAMPLES = "90s, 2m, 1h30m, 1d or a number of seconds"

_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 7 * 86400,
    "wk": 7 * 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
    "y": 365 * 86400,
    "yr": 365 * 86400,
    "year": 365 * 86400,
    "years": 365 * 86400,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
# Longer than any chat message, so nothing is cut before a poll's own length checks can refuse it.
_CLEAN_MAX_CHARS = 4000


class PollError(ValueError):
    """A request the poll rules refuse; the message is meant for the person who made it."""


class InvalidPoll(PollError):
    """The question, options or duration break a rule."""


class PollNotFound(PollError):
    """No such poll, or no poll running in this channel."""


class PollClosed(PollError):
    """The poll is closed (or cancelled): no more votes, no second close."""


class UnknownOption(PollError):
    """The vote names an option the poll does not have."""


class NotAllowed(PollError):
    """The person lacks the right (closing someone else's poll without being a moderator)."""


class PollConflict(PollError):
    """The channel already runs a poll, or too many polls are open."""


class PollStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Display:
    """One place a poll is shown: a Discord channel (with the message carrying its buttons) or a Twitch chat."""

    platform: str
    channel_id: str
    message_id: str | None = None


@dataclass(frozen=True)
class Poll:
    id: int
    question: str
    options: tuple[str, ...]
    multi: bool
    creator_platform: str
    creator_id: str
    creator_name: str
    created_at: float
    closes_at: float
    status: PollStatus = PollStatus.OPEN
    closed_at: float | None = None
    displays: tuple[Display, ...] = field(default=())

    @property
    def is_open(self) -> bool:
        return self.status is PollStatus.OPEN

    def option_number(self, position: int) -> str:
        return f"{position}. {self.options[position - 1]}"


@dataclass(frozen=True)
class PollDraft:
    """A validated request to create a poll (before it has an id)."""

    question: str
    options: tuple[str, ...]
    duration_s: float
    multi: bool = False


def clean_text(text: str) -> str:
    """People's text as a poll repeats it: the shared cleaning (no bidi, invisible or control characters)."""
    return clean_people_text(text, _CLEAN_MAX_CHARS)


def option_key(text: str) -> str:
    """How two options are compared for duplicates and how a typed choice is matched: case and width folded."""
    return clean_text(unicodedata.normalize("NFKC", text)).casefold()


def validate_question(question: str) -> str:
    q = clean_text(question)
    if not q:
        raise InvalidPoll(
            "The question is empty: ask something, e.g. `Pizza or tacos? | pizza | tacos | 2m`."
        )
    if len(q) > MAX_QUESTION_CHARS:
        raise InvalidPoll(f"The question is {len(q)} characters long; the limit is {MAX_QUESTION_CHARS}.")
    return q


def validate_options(options: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    cleaned = [clean_text(o) for o in options]
    if any(not o for o in cleaned):
        raise InvalidPoll("An option is empty: check for a doubled `|` or a trailing separator.")
    if len(cleaned) < MIN_OPTIONS:
        raise InvalidPoll(f"A poll needs at least {MIN_OPTIONS} options; got {len(cleaned)}.")
    if len(cleaned) > MAX_OPTIONS:
        raise InvalidPoll(f"A poll takes at most {MAX_OPTIONS} options; got {len(cleaned)}.")
    for i, o in enumerate(cleaned, 1):
        if len(o) > MAX_OPTION_CHARS:
            raise InvalidPoll(f"Option {i} is {len(o)} characters long; the limit is {MAX_OPTION_CHARS}.")
    seen: dict[str, int] = {}
    for i, o in enumerate(cleaned, 1):
        key = option_key(o)
        if key in seen:
            raise InvalidPoll(
                f"Options {seen[key]} and {i} are the same ({o!r}): every option must be different."
            )
        seen[key] = i
    return tuple(cleaned)


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration like "90s", "2m", "1h30m", "1d", "2 hours" or a plain number of seconds.

    Raises `InvalidPoll` for anything else (a word like "soon", zero, a negative number). Bounds are checked by
    `check_duration`, so the parse and the limit each give their own message.
    """
    if isinstance(text, bool):
        raise InvalidPoll(f"Not a duration: {text!r}. Write {DURATION_EXAMPLES}.")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = clean_text(text).lower()
        if not raw:
            raise InvalidPoll(f"The duration is missing. Write {DURATION_EXAMPLES}.")
        if _PLAIN_NUMBER.fullmatch(raw):
            seconds = float(raw)
        elif raw.startswith("-"):
            raise InvalidPoll(f"The duration must be positive, not {text!r}. Write {DURATION_EXAMPLES}.")
        else:
            seconds = _parse_units(raw)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidPoll(f"Not a duration: {text!r}. Write {DURATION_EXAMPLES}.")
    if seconds <= 0:
        raise InvalidPoll(f"The duration must be positive, not {text!r}. Write {DURATION_EXAMPLES}.")
    return seconds


def _parse_units(raw: str) -> float:
    compact = raw.replace(",", " ").replace(" and ", " ")
    pos, total, parts = 0, 0.0, 0
    for match in _DURATION_PART.finditer(compact):
        if compact[pos : match.start()].strip():
            break
        unit = _UNITS.get(match.group(2))
        if unit is None:
            raise InvalidPoll(f"Unknown time unit {match.group(2)!r} in {raw!r}. Write {DURATION_EXAMPLES}.")
        total += float(match.group(1)) * unit
        pos = match.end()
        parts += 1
    if parts == 0 or compact[pos:].strip():
        raise InvalidPoll(f"Not a duration: {raw!r}. Write {DURATION_EXAMPLES}.")
    return total


def check_duration(seconds: float, *, min_s: float = MIN_DURATION_S, max_s: float = MAX_DURATION_S) -> float:
    if seconds < min_s:
        raise InvalidPoll(
            f"A poll must run at least {format_duration(min_s)}; got {format_duration(seconds)}."
        )
    if seconds > max_s:
        raise InvalidPoll(f"A poll can run at most {format_duration(max_s)}; got {format_duration(seconds)}.")
    return seconds


def format_duration(seconds: float) -> str:
    """`5400` -> "1h 30m"; sub-second precision only below a second."""
    if seconds < 1:
        return f"{seconds:.2g}s"
    s = round(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out.append(f"{s // size}{unit}")
            s %= size
    return " ".join(out) or "0s"


def make_draft(
    question: str,
    options: list[str] | tuple[str, ...],
    duration: str | float | int,
    *,
    multi: bool = False,
    min_duration_s: float = MIN_DURATION_S,
) -> PollDraft:
    """Validate a whole poll: question, options, duration."""
    q = validate_question(question)
    opts = validate_options(options)
    seconds = check_duration(parse_duration(duration), min_s=min_duration_s)
    return PollDraft(question=q, options=opts, duration_s=seconds, multi=multi)


def resolve_choice(poll: Poll, choice: int | str) -> int:
    """The 1-based option a vote names: its number ("2"), its text ("option a", any case) or an unambiguous start."""
    listing = "; ".join(poll.option_number(i) for i in range(1, len(poll.options) + 1))
    if isinstance(choice, bool):
        raise UnknownOption(f"Choose an option by number or name: {listing}.")
    if isinstance(choice, int):
        if 1 <= choice <= len(poll.options):
            return choice
        raise UnknownOption(f"There is no option {choice}; choose 1 to {len(poll.options)}: {listing}.")
    if len(choice) > MAX_CHOICE_CHARS:
        raise UnknownOption(f"No option is that long. Choose one of: {listing}.")
    key = option_key(choice)
    if not key:
        raise UnknownOption(f"Say which option: {listing}.")
    keys = [option_key(o) for o in poll.options]
    if key in keys:
        return keys.index(key) + 1
    number = key.lstrip("#")
    if number.isdecimal():
        return resolve_choice(poll, int(number))
    starts = [i for i, k in enumerate(keys, 1) if k.startswith(key)]
    if len(starts) == 1:
        return starts[0]
    if len(starts) > 1:
        names = ", ".join(repr(poll.options[i - 1]) for i in starts)
        raise UnknownOption(f"{choice!r} could mean {names}: give the number or the whole option.")
    raise UnknownOption(f"{choice!r} is not an option of this poll. Choose one of: {listing}.")
