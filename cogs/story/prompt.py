"""What the narrator sees: persona, premise, a recap of earlier chapters, the last scenes verbatim, the instruction.

Long stories stay coherent because the prompt never grows: scenes older than the last few are folded into one-line
chapter summaries (by the model when it can, else extractively), and the recap itself is held to a token budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cogs.story.parser import MAX_CHOICES
from models.persona import Card
from models.prompt import PromptBudget, Turn, build_messages

Message = dict[str, str]

SUMMARY_MAX_CHARS: Final = 200  # one chapter line of the recap
RECAP_GAP: Final = "…"
MIN_SUMMARY_CHARS: Final = 12

STORY_RULES: Final = (
    "You are narrating an interactive story for an audience that votes on what happens next. "
    "Write vivid scenes in the present tense, two or three sentences each. "
    "End every scene with {n} short numbered choices for the audience, one per line: 1. ... 2. ... 3. ..."
)
SUMMARY_SYSTEM: Final = "You summarize stories. Answer with one short sentence and nothing else."

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”’)]?\s+")
_SUMMARY_JUNK = re.compile(r"^\s*(?:summary|in summary|in one sentence|sure)[,:!.]?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class SceneRecord:
    """A scene already told, as the prompt needs it."""

    action: str  # what the audience chose that led to this scene ("" for the opening)
    narration: str
    choices: tuple[str, ...]
    summary: str | None = None


def narrator_card(card: Card, narrator: str, narrator_style: str) -> Card:
    """The character narrates by default; a configured narrator voice replaces it."""
    if not narrator.strip():
        return card
    description = (
        narrator_style.strip() or f"{narrator} is the storyteller of an interactive tale, warm and vivid."
    )
    return Card(name=narrator.strip(), description=description)


def action_line(action: str) -> str:
    return f"The audience chose: {action}"


def scene_text(narration: str, choices: Sequence[str]) -> str:
    """A scene as the narrator would have written it: narration, then numbered choices."""
    lines = [narration.strip(), *(f"{i}. {c}" for i, c in enumerate(choices, 1))]
    return "\n".join(lines)


def instruction(action: str, *, opening: bool, premise: str, choices_wanted: int = 3) -> str:
    n = max(2, min(choices_wanted, MAX_CHOICES))
    numbers = " ".join(f"{i}." for i in range(1, n + 1))
    if opening:
        about = f" The story is about: {premise}." if premise else ""
        return (
            f"Begin the story.{about} Describe the opening scene in two or three sentences, "
            f"then give {n} numbered choices ({numbers}) for what happens next."
        )
    return (
        f"{action_line(action)}. Continue the story with what happens next in two or three sentences, "
        f"then give {n} new numbered choices ({numbers})."
    )


def recap(summaries: Sequence[str], count_tokens: Callable[[str], int], budget: int) -> str:
    """Chapter lines joined, kept within `budget` tokens: the opening chapter stays, the oldest middle goes first."""
    lines = [s.strip() for s in summaries if s and s.strip()]
    if not lines or budget <= 0:
        return ""
    first, rest = lines[0], lines[1:]
    dropped = False
    while rest and count_tokens(_join(first, rest, dropped)) > budget:
        rest.pop(0)
        dropped = True
    text = _join(first, rest, dropped)
    if count_tokens(text) <= budget:
        return text
    # Even the opening line alone is too long: keep its first words.
    words = text.split()
    while words and count_tokens(" ".join(words) + RECAP_GAP) > budget:
        words = words[: max(0, len(words) * 3 // 4)]
    return " ".join(words) + RECAP_GAP if words else ""


def _join(first: str, rest: Sequence[str], dropped: bool) -> str:
    return " ".join([first, *([RECAP_GAP] if dropped else []), *rest])


def scene_messages(
    card: Card,
    *,
    premise: str,
    recap_text: str,
    recent: Sequence[SceneRecord],
    action: str,
    opening: bool,
    count_tokens: Callable[[str], int],
    budget: PromptBudget,
    choices_wanted: int = 3,
) -> list[Message]:
    """The chat messages asking for the next scene (or the opening when `opening`)."""
    rules = STORY_RULES.format(n=max(2, min(choices_wanted, MAX_CHOICES)))
    parts = [rules]
    if premise:
        parts.append(f"Premise: {premise}")
    if recap_text:
        parts.append(f"The story so far: {recap_text}")
    history: list[Turn] = []
    for i, scene in enumerate(recent):
        ask = (
            instruction("", opening=True, premise=premise, choices_wanted=choices_wanted)
            if i == 0 and not scene.action
            else action_line(scene.action or "continue")
        )
        history.append(Turn(role="user", name="", content=ask))
        history.append(
            Turn(role="assistant", name=card.char_name, content=scene_text(scene.narration, scene.choices))
        )
    history.append(
        Turn(
            role="user",
            name="",
            content=instruction(action, opening=opening, premise=premise, choices_wanted=choices_wanted),
        )
    )
    return build_messages(
        card,
        history,
        user_name="the audience",
        count_tokens=count_tokens,
        budget=budget,
        extra_system="\n".join(parts),
    )


CHOICES_SYSTEM: Final = "You write three short choices for an interactive story game, one per line, numbered."
# One worked example: a 135M model copies a shape it has just seen far better than it follows a description.
_CHOICES_EXAMPLE: Final = (
    "Story: A knight reaches a dark castle gate. A raven watches from the wall.",
    "1. Knock on the gate\n2. Follow the raven\n3. Climb the wall",
)


def choices_messages(narration: str) -> list[Message]:
    """Ask for choices alone, for a scene whose narration came without any."""
    return [
        {"role": "system", "content": CHOICES_SYSTEM},
        {"role": "user", "content": _CHOICES_EXAMPLE[0]},
        {"role": "assistant", "content": _CHOICES_EXAMPLE[1]},
        {"role": "user", "content": f"Story: {narration}"},
    ]


def summary_messages(narration: str, next_action: str) -> list[Message]:
    then = f"\nThen the audience chose: {next_action}" if next_action else ""
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"Scene: {narration}{then}\nSummarize this in one sentence."},
    ]


def extractive_summary(narration: str, next_action: str) -> str:
    """The scene's first sentence plus the choice that followed: deterministic, never empty."""
    first = first_sentence(narration) or narration.strip()
    if len(first) > SUMMARY_MAX_CHARS - 40:
        first = first[: SUMMARY_MAX_CHARS - 41].rsplit(" ", 1)[0] + "…"
    then = f" Chosen: {next_action.rstrip('.')}." if next_action else ""
    return (first + then).strip()


def clean_summary(text: str, fallback: str) -> str:
    """The model's summary as one plain sentence, or `fallback` when it is empty, a refusal or junk."""
    text = re.sub(r"<\|[^|>]{1,40}\|>", " ", text or "")
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = _SUMMARY_JUNK.sub("", text).strip().strip("\"'“”")
    text = first_sentence(text) or text
    if len(text) < MIN_SUMMARY_CHARS or ":" in text[:15] or not any(ch.isalpha() for ch in text):
        return fallback
    if len(text) > SUMMARY_MAX_CHARS:
        text = text[: SUMMARY_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return text


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip()
