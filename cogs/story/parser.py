"""Turn a narrator's raw output into a scene: the narration and 2–4 clean, distinct choices.

A 135M model writes choices in every shape ("1.", "2)", "(3)", "A)", "Option B:", "- ", "**1.**", all on one line…),
adds junk (turn markers, "User:" lines, empty bullets) and sometimes writes nine choices or none. `parse_scene`
accepts what can be understood and reports what is wrong; the service decides whether to ask again or fall back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

MIN_CHOICES: Final = 2
MAX_CHOICES: Final = 4
MAX_CHOICE_CHARS: Final = 80  # a Discord button label holds 80 characters; Twitch lines stay short too
MIN_CHOICE_CHARS: Final = 2
MAX_NARRATION_CHARS: Final = 1200  # room for the choices under Discord's 2000; Twitch splits it into messages
MIN_NARRATION_CHARS: Final = 12

# Generic choices for a scene whose own choices could not be read: they fit any story.
FALLBACK_CHOICES: Final = (
    "Press on ahead",
    "Look around carefully",
    "Talk to whoever is near",
    "Turn back",
)

_SPECIAL_TOKEN = re.compile(r"<\|im_start\|>\s*(?:system|user|assistant)?|<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]")
# A line where another speaker starts talking: the model inventing the audience's turn.
_ROLE_LINE = re.compile(r"^\s*(?:user|assistant|system|you|audience|player|narrator)\s*:", re.IGNORECASE)
# "1." "2)" "(3)" "[4]" "A)" "b." "Option 2:" "Choice C -" "**1.**", optionally after a bullet.
_CHOICE_LINE = re.compile(
    r"""^\s*(?:[-*•>]\s*)?(?:\*\*|__)?\s*
        (?:(?:option|choice)\s*)?
        [(\[]?\s*(?P<mark>[1-9]|[A-Da-d])\s*(?:[.):\]]|\s-)\s*(?:\*\*|__)?
        \s*(?P<text>.*)$""",
    re.VERBOSE | re.IGNORECASE,
)
_BULLET_LINE = re.compile(r"^\s*[-*•]\s+(?P<text>.+)$")
# Several numbered choices run together on one line: "… What now? 1. Run 2. Hide 3. Fight"
_INLINE_MARK = re.compile(r"(?:(?<=\s)|^)\(?([1-9])[.)]\s+")
_HEADER = re.compile(
    r"^\s*(?:\*\*)?\s*(?:choices|options|what (?:will|do|should) (?:you|we|they) do)\b.*$",
    re.IGNORECASE,
)
# The small model slipping out of the story into assistant talk.
_OFF_STORY = re.compile(
    r"\b(?:let me know|feel free|as an ai|i hope this|(?:happy|ready|here) to help|how can i (?:help|assist)|"
    r"what would you like|any (?:other )?(?:questions|requests|preferences)|"
    r"here (?:is|are) (?:a|an|the|some) (?:story|choices|options|example))\b",
    re.IGNORECASE,
)
_JUNK_CHARS = re.compile(r"[*_`~#]+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ParsedScene:
    narration: str
    choices: tuple[str, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_scene(raw: str) -> ParsedScene:
    """Split raw model output into narration and choices; `problems` says what a good scene would not have."""
    lines = _clean_lines(raw)
    narration_lines: list[str] = []
    candidates: list[str] = []
    in_choices = False
    for line in lines:
        inline = _inline_choices(line)
        if inline is not None:
            before, found = inline
            if before and not in_choices:
                narration_lines.append(before)
            candidates.extend(found)
            in_choices = True
            continue
        match = _CHOICE_LINE.match(line)
        if match and _plausible_mark(match.group("mark"), len(candidates), line):
            candidates.append(match.group("text"))
            in_choices = True
            continue
        bullet = _BULLET_LINE.match(line)
        if bullet and (in_choices or narration_lines):
            candidates.append(bullet.group("text"))
            in_choices = True
            continue
        if _HEADER.match(line):
            # "What will you do?" belongs to the narration when it ends it; "Choices:" is only a label.
            if line.rstrip().endswith("?") and not in_choices:
                narration_lines.append(line)
            continue
        if in_choices:
            # Prose after the list: the model wandering on. Scenes end with their choices.
            continue
        narration_lines.append(line)

    narration = _tidy_narration(" ".join(narration_lines))
    choices = clean_choices(candidates)
    raw_count = len([c for c in candidates if clean_choice(c)])
    problems: list[str] = []
    if len(narration) < MIN_NARRATION_CHARS:
        problems.append("no narration")
    elif _OFF_STORY.search(narration):
        problems.append("not a story")
    if len(choices) < MIN_CHOICES:
        problems.append(f"{len(choices)} usable choice(s)")
    if raw_count > MAX_CHOICES:
        problems.append(f"{raw_count} choices")
    return ParsedScene(narration=narration, choices=choices, problems=tuple(problems))


def parse_choices(raw: str) -> tuple[str, ...]:
    """Choices from an answer that should be only a list: numbered or bulleted lines, else short plain lines."""
    lines = _clean_lines(raw)
    marked = []
    for line in lines:
        inline = _inline_choices(line)
        if inline is not None:
            marked.extend(inline[1])
            continue
        match = _CHOICE_LINE.match(line) or _BULLET_LINE.match(line)
        if match:
            marked.append(match.group("text"))
    if len(clean_choices(marked)) >= MIN_CHOICES:
        return clean_choices(marked)
    plain = clean_choices(
        [line for line in lines if len(line) <= MAX_CHOICE_CHARS and not _HEADER.match(line)]
    )
    return plain if len(plain) >= MIN_CHOICES else ()  # one plain line is prose, not a list


def clean_choice(text: str) -> str:
    """One choice as a short, plain line, or "" when nothing usable is left."""
    text = _SPECIAL_TOKEN.sub(" ", text)
    text = _JUNK_CHARS.sub("", text)
    text = _SPACES.sub(" ", text).strip().strip("\"'“”‘’").strip()
    text = text.rstrip(" -–—:;,")
    if _ROLE_LINE.match(text):
        return ""
    if len(text) > MAX_CHOICE_CHARS:
        cut = text[: MAX_CHOICE_CHARS - 1]
        space = cut.rfind(" ")
        text = (cut[:space] if space > MAX_CHOICE_CHARS // 2 else cut).rstrip(" ,;:-") + "…"
    if len(text) < MIN_CHOICE_CHARS or not any(ch.isalnum() for ch in text):
        return ""
    return text


def clean_choices(candidates: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Cleaned, de-duplicated (case and punctuation blind) choices, at most MAX_CHOICES, in the model's order."""
    seen: set[str] = set()
    out: list[str] = []
    for candidate in candidates:
        choice = clean_choice(candidate)
        key = re.sub(r"[^\w]+", " ", choice.casefold()).strip()
        if not choice or key in seen:
            continue
        seen.add(key)
        out.append(choice)
        if len(out) == MAX_CHOICES:
            break
    return tuple(out)


def with_fallback_choices(choices: tuple[str, ...]) -> tuple[str, ...]:
    """Top up to at least MIN_CHOICES (three when there were none) with generic choices that are not there yet."""
    want = 3
    out = list(choices[:MAX_CHOICES])
    keys = {c.casefold() for c in out}
    for generic in FALLBACK_CHOICES:
        if len(out) >= max(want, len(choices)):
            break
        if generic.casefold() not in keys:
            out.append(generic)
    return tuple(out)


def trim_narration(text: str, limit: int = MAX_NARRATION_CHARS) -> str:
    """Cut at the last sentence end that fits (or a word, with an ellipsis)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), cut.rfind('." '))
    if end > limit // 2:
        return cut[: end + 1].rstrip()
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut[: limit - 1]).rstrip(" ,;:-") + "…"


# ----------------------------------------------------------------------------------------------- internals
def _clean_lines(raw: str) -> list[str]:
    text = _SPECIAL_TOKEN.sub("\n", raw or "")
    out: list[str] = []
    for line in text.splitlines():
        if _ROLE_LINE.match(line):
            break  # the model began writing someone else's turn: nothing after it is the narrator's
        line = line.strip()
        if line:
            out.append(line)
    return out


def _plausible_mark(mark: str, seen: int, line: str) -> bool:
    """A leading "A " or "I." in prose is not a choice marker; digits and "A)"/"a." style are."""
    if mark.isdigit():
        return True
    rest = line.lstrip(" -*•>([").lstrip("*_")
    rest = re.sub(r"^(?:option|choice)\s*", "", rest, flags=re.IGNORECASE)
    return len(rest) > 1 and rest[1] in ".):]"


def _inline_choices(line: str) -> tuple[str, list[str]] | None:
    """("prose before", [choices]) when the line holds "1. x 2. y" in sequence; None otherwise."""
    marks = list(_INLINE_MARK.finditer(line))
    if len(marks) < 2:
        return None
    numbers = [int(m.group(1)) for m in marks]
    if numbers[:2] != [1, 2]:
        return None
    chosen = [marks[0]]
    for m in marks[1:]:
        if int(m.group(1)) == int(chosen[-1].group(1)) + 1:
            chosen.append(m)
    before = line[: chosen[0].start()].strip()
    found = []
    for i, m in enumerate(chosen):
        end = chosen[i + 1].start() if i + 1 < len(chosen) else len(line)
        found.append(line[m.end() : end].strip().rstrip(","))
    return before, found


def _tidy_narration(text: str) -> str:
    text = _SPECIAL_TOKEN.sub(" ", text)
    text = text.replace("**", "").replace("__", "")
    text = _SPACES.sub(" ", text).strip()
    return end_at_sentence(trim_narration(text))


def end_at_sentence(text: str) -> str:
    """Drop an unfinished last sentence (output cut by the token limit) when a finished one comes before it."""
    if not text or text[-1] in '.!?…"”’)*':
        return text
    ends = [m.end() for m in re.finditer(r"[.!?…][\"”’)]?(?=\s)", text)]
    if ends and ends[-1] >= len(text) * 0.2:
        return text[: ends[-1]].strip()
    return text
