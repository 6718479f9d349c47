"""Prompt assembly: a persona card plus the chat so far become ChatML-style messages that fit the model's window.

Layout (what a small model needs to stay in character)::

    system     system_prompt ({{original}} = DEFAULT_SYSTEM_PROMPT), before_char lore, description, personality,
               scenario, after_char lore, extra_system, example dialogue (while it fits examples_max_tokens)
    user/assistant ...  history, oldest turns dropped first; user turns read "Name: text" so speakers stay apart
    system     post_history_instructions (the author's note), right before the final user turn
    user       the latest user turn (always kept; its text is cut when it alone is too long)

``creator_notes`` never enter a prompt. Macros are applied to every text that comes from the card or from
``extra_system``; chat history is used as typed. In the system turn ``{{user}}`` is ``PromptBudget.persona_user``
(default "User"), not the speaker: a chat has many speakers, and a system turn that is the same for all of them is
prefilled once and reused from the engine's prefix cache. The speaker's own name is in their turn ("Name: text")
and in the author's note.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from models.persona import Card, LoreEntry, active_lore, apply_macros, split_examples

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are {{char}}. Stay in character: speak only as {{char}}, in your own voice, in a few sentences. "
    "Never write lines for {{user}} or anyone else."
)
# ChatML wraps each message in "<|im_start|>role\n" ... "<|im_end|>\n": about four tokens that the content
# count does not see.
MESSAGE_OVERHEAD_TOKENS: Final = 4
# Lore may take at most this share of the window, whatever the card's own token_budget says.
LORE_WINDOW_FRACTION: Final = 0.25
# What {{user}} reads as in the shared system turn; the chat service also stops at "\nUser:" lines.
DEFAULT_PERSONA_USER: Final = "User"
# Example dialogue is only worth its room if the latest user turn still gets at least this much.
MIN_LAST_TURN_TOKENS: Final = 32
CUT_MARK: Final = "…"

Message = dict[str, str]


@dataclass(frozen=True)
class Turn:
    """One chat message already said: by a user (``name`` is who) or by the character."""

    role: Literal["user", "assistant"]
    name: str
    content: str


@dataclass(frozen=True)
class PromptBudget:
    """Limits for one prompt (``reserve_for_reply`` is left free for the model's answer), and the name ``{{user}}``
    takes in the system turn; an empty ``persona_user`` means the speaker's name (the system turn then differs per
    speaker and is prefilled again for each)."""

    total_tokens: int = 1536
    reserve_for_reply: int = 160
    examples_max_tokens: int = 256
    persona_user: str = DEFAULT_PERSONA_USER


def build_messages(
    card: Card,
    history: Sequence[Turn],
    *,
    user_name: str,
    count_tokens: Callable[[str], int],
    budget: PromptBudget = PromptBudget(),
    extra_system: str = "",
) -> list[Message]:
    """Messages for the model: persona system message, trimmed history, author's note before the last user turn."""
    char = card.char_name

    persona_user = budget.persona_user or user_name

    def fill(text: str, original: str = "") -> str:
        """Macros for the shared system turn."""
        return apply_macros(text, char=char, user=persona_user, original=original).strip()

    def cost(text: str) -> int:
        return count_tokens(text) + MESSAGE_OVERHEAD_TOKENS

    available = budget.total_tokens - budget.reserve_for_reply
    turns = [turn for turn in history if turn.content.strip()]

    # 1. The persona itself, with the lore the recent chat calls for.
    lore: list[LoreEntry] = []
    if card.lorebook is not None:
        lore_budget = min(card.lorebook.token_budget, int(available * LORE_WINDOW_FRACTION))
        book = dataclasses.replace(card.lorebook, token_budget=lore_budget)
        lore = active_lore(book, [turn.content for turn in turns], count_tokens)
    system_prompt = fill(card.system_prompt, DEFAULT_SYSTEM_PROMPT) or fill(DEFAULT_SYSTEM_PROMPT)
    parts = [
        system_prompt,
        *(fill(entry.content) for entry in lore if entry.position == "before_char"),
        fill(card.description),
        _labelled(f"{char}'s personality: ", fill(card.personality)),
        _labelled("Scenario: ", fill(card.scenario)),
        *(fill(entry.content) for entry in lore if entry.position == "after_char"),
        fill(extra_system),
    ]
    system = "\n\n".join(part for part in parts if part)
    note = apply_macros(card.post_history_instructions, char=char, user=user_name).strip()
    note_cost = cost(note) if note else 0

    # 2. Example dialogue: optional, so it only takes room the chat can spare.
    room = available - cost(system) - note_cost - MIN_LAST_TURN_TOKENS
    examples = _examples(card, fill, count_tokens, min(budget.examples_max_tokens, room))
    if examples:
        system += "\n\n" + examples

    # 3. History, newest first, into whatever is left.
    kept = _fit_history(turns, cost, available - cost(system) - note_cost)
    messages: list[Message] = [{"role": "system", "content": system}, *kept]

    # 4. The author's note goes right before the last user turn, where a fading persona needs it most.
    if note:
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages))
        messages.insert(last_user, {"role": "system", "content": note})

    used = prompt_tokens(messages, count_tokens)
    if used > available:
        log.warning("prompt for %s uses %d tokens, over its budget of %d", char, used, available)
    return messages


def prompt_tokens(messages: Sequence[Message], count_tokens: Callable[[str], int]) -> int:
    """Tokens ``messages`` take, counting each message's ChatML overhead (as ``build_messages`` does)."""
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def render_turn(turn: Turn) -> Message:
    """A turn as a message: user turns carry the speaker's name, the character's own turns are plain."""
    if turn.role == "user" and turn.name:
        return {"role": "user", "content": f"{turn.name}: {turn.content.strip()}"}
    return {"role": turn.role, "content": turn.content.strip()}


def _labelled(label: str, text: str) -> str:
    return label + text if text else ""


def _examples(card: Card, fill: Callable[[str], str], count_tokens: Callable[[str], int], limit: int) -> str:
    """As many whole ``<START>`` blocks as fit ``limit`` tokens, under a header; empty when none fits."""
    header = f"Examples of how {card.char_name} talks:"
    blocks: list[str] = []
    for block in split_examples(card.mes_example):
        candidate = "\n\n".join([header, *blocks, fill(block)])
        if count_tokens(candidate) > limit:
            break  # blocks are in the author's order of importance; don't skip ahead to smaller ones
        blocks.append(fill(block))
    return "\n\n".join([header, *blocks]) if blocks else ""


def _fit_history(turns: Sequence[Turn], cost: Callable[[str], int], room: int) -> list[Message]:
    """Render ``turns`` and keep the newest ones that fit ``room``; the latest user turn is always kept."""
    rendered = [render_turn(turn) for turn in turns]
    last_user = max((i for i, turn in enumerate(turns) if turn.role == "user"), default=None)

    keep: set[int] = set()
    if last_user is not None:
        message = rendered[last_user]
        if cost(message["content"]) > room:
            prefix = f"{turns[last_user].name}: " if turns[last_user].name else ""
            message["content"] = _cut(prefix, turns[last_user].content.strip(), cost, room)
        room -= cost(message["content"])
        keep.add(last_user)

    for i in range(len(rendered) - 1, -1, -1):
        if i == last_user:
            continue
        needed = cost(rendered[i]["content"])
        if needed > room:
            break  # stop at the first misfit: a gap in the middle of a chat confuses the model more than a cut
        keep.add(i)
        room -= needed
    return [rendered[i] for i in sorted(keep)]


def _cut(prefix: str, text: str, cost: Callable[[str], int], room: int) -> str:
    """``prefix`` + the longest start of ``text`` (whole words, then ``CUT_MARK``) that fits ``room``.

    At least one word is kept even when nothing fits: an empty user turn would leave the model nothing to answer.
    """
    words = re.findall(r"\S+\s*", text)  # words with their trailing space, so line breaks survive the cut

    def shortened(count: int) -> str:
        return prefix + "".join(words[:count]).rstrip() + CUT_MARK

    low, high = 1, len(words)  # invariant: the answer is in [low, high]; `low` words are the floor
    while low < high:
        middle = (low + high + 1) // 2
        if cost(shortened(middle)) <= room:
            low = middle
        else:
            high = middle - 1
    return shortened(low)
