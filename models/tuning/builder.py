"""One tuning dataset from everything the character learns from: its card, its dialogue files, what moderators
taught it, and the consenting log.

Every example is rendered exactly as the bot prompts its model when serving (``build_messages`` over the card), so
the adapter learns the character in the context it will play it in. Weights are repeats in the training split:

============================  ======  ==========================================================
source                        weight  why
============================  ======  ==========================================================
moderators' teachings         3       a person said "this is the reply it should have given"
log replies rated 👍          2       viewers liked them (👎 are never used: ``models/dataset.py``)
dialogue files, card, log     1
============================  ======  ==========================================================

Held out (never trained on, used by the gate): a deterministic tenth of the dialogue conversations (by a hash of
their text) and the log's own held-out conversations. Card-derived examples are all trained on: the derived
persona checks ask about the same facts in other words.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.dataset import Dataset, DatasetStats, approx_tokens
from models.persona import Card
from models.prompt import PromptBudget, Turn, build_messages
from models.tuning.dialogue import Conversation, example_points

DEFAULT_BUDGET = PromptBudget()  # the bot's default prompt limits

TEACHING_WEIGHT = 3
LIKED_WEIGHT = 2
DIALOGUE_EVAL_FRACTION = 0.1
MAX_CONTEXT_TURNS = 8


@dataclass(frozen=True)
class TaughtReply:
    """A moderator's better reply, with the turns that came before it (consent already applied to them)."""

    context: tuple[Turn, ...]
    reply: str


@dataclass
class TuneDataset:
    """The examples of one tune, by part, and where they came from."""

    train: list[dict[str, Any]]
    eval_log: list[dict[str, Any]]  # the log's held-out conversations (empty without a log)
    eval_dialogue: list[dict[str, Any]]  # held-out dialogue-file conversations
    sources: dict[str, int] = field(default_factory=dict)  # examples per source (before weighting)
    log_stats: DatasetStats | None = None

    @property
    def held_out(self) -> list[dict[str, Any]]:
        """The primary held-out set the gate needs improved: the log's, else the dialogue files'."""
        return self.eval_log or self.eval_dialogue

    def summary(self) -> str:
        """What the tune learns from, in words: "412 dialogue lines, 23 from the card, 2 teachings, 0 from the log"."""
        s = self.sources
        return (
            f"{s.get('dialogue', 0)} dialogue-file lines, {s.get('card', 0)} from the card, "
            f"{s.get('teachings', 0)} teachings, {s.get('log', 0)} from the log "
            f"({s.get('liked', 0)} rated 👍); held out: {len(self.eval_dialogue)} dialogue, {len(self.eval_log)} log"
        )

    def write_part(self, part: str, path: str | Path) -> None:
        """One part as JSONL (an empty file when the part is empty)."""
        lines = [json.dumps(example, ensure_ascii=False) for example in getattr(self, part)]
        Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def as_dataset(self, part: str = "held_out") -> Dataset:
        """The examples as a :class:`Dataset` (train and one held-out part), for writing or hashing."""
        return Dataset(train=self.train, eval=getattr(self, part), stats=self.log_stats or DatasetStats())


def conversation_examples(
    card: Card,
    conversation: Sequence[Turn],
    *,
    count_tokens: Callable[[str], int] = approx_tokens,
    budget: PromptBudget = DEFAULT_BUDGET,
) -> list[dict[str, Any]]:
    """One example per character line that answers a user turn, its context as the bot would have assembled it."""
    turns = list(conversation)
    out = []
    for point in example_points(turns):
        context = turns[max(0, point - MAX_CONTEXT_TURNS) : point]
        speaker = context[-1].name or "User"
        messages = build_messages(card, context, user_name=speaker, count_tokens=count_tokens, budget=budget)
        messages.append({"role": "assistant", "content": turns[point].content})
        out.append({"messages": messages})
    return out


def is_held_out(conversation: Conversation, fraction: float = DIALOGUE_EVAL_FRACTION) -> bool:
    """A deterministic choice by the conversation's text: the same lines are held out on every machine."""
    text = "\n".join(f"{t.role}:{t.name}:{t.content}" for t in conversation.turns)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64 < fraction


def build_tune_dataset(
    card: Card,
    *,
    dialogue: Sequence[Conversation] = (),
    card_derived: Sequence[Conversation] = (),
    teachings: Sequence[TaughtReply] = (),
    log: Dataset | None = None,
    liked: Sequence[dict[str, Any]] = (),
    count_tokens: Callable[[str], int] = approx_tokens,
    budget: PromptBudget = DEFAULT_BUDGET,
    eval_fraction: float = DIALOGUE_EVAL_FRACTION,
) -> TuneDataset:
    """Everything in one dataset. ``log`` is the consenting log's dataset (``models.dataset.build_dataset``);
    ``liked`` the log's training examples whose reply was rated 👍 (they are repeated, not added again)."""

    def examples(turns: Sequence[Turn]) -> list[dict[str, Any]]:
        return conversation_examples(card, turns, count_tokens=count_tokens, budget=budget)

    train: list[dict[str, Any]] = []
    eval_dialogue: list[dict[str, Any]] = []
    sources = {"dialogue": 0, "card": 0, "teachings": 0, "log": 0, "liked": 0}
    for conversation in dialogue:
        made = examples(conversation.turns)
        sources["dialogue"] += len(made)
        (eval_dialogue if is_held_out(conversation, eval_fraction) else train).extend(made)
    if dialogue and not eval_dialogue and len(dialogue) >= 2:
        # Too few conversations for the fraction to pick one: hold out the last, so the gate has something.
        last = examples(dialogue[-1].turns)
        train = [e for e in train if e not in last]
        eval_dialogue = last
    for conversation in card_derived:
        made = examples(conversation.turns)
        sources["card"] += len(made)
        train.extend(made)
    for teaching in teachings:
        made = examples([*teaching.context, Turn(role="assistant", name="", content=teaching.reply)])
        sources["teachings"] += len(made)
        train.extend(made * TEACHING_WEIGHT)
    eval_log: list[dict[str, Any]] = []
    if log is not None:
        sources["log"] = len(log.train) + len(log.eval)
        train.extend(log.train)
        eval_log = list(log.eval)
        sources["liked"] = len(liked)
        train.extend(example for example in liked for _ in range(LIKED_WEIGHT - 1))
    return TuneDataset(
        train=train,
        eval_log=eval_log,
        eval_dialogue=eval_dialogue,
        sources=sources,
        log_stats=log.stats if log is not None else None,
    )
