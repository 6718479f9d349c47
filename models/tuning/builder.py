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
their text) and the log's own held-out conversations. Card-derived examples are trained on, except for a card with
no dialogue files: then one phrasing of each fact asked in several ways is held out. The derived persona checks ask
about the same facts in still other words.
"""

from __future__ import annotations

import hashlib
import json
import random
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
PACK_CONVERSATIONS = 4  # conversations per training example (see packed_examples)
PACK_TURN_TOKENS = 200  # their turns' estimated tokens, beside the system turn (max_seq_tokens is about 512)
PACK_SEED = 11
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


def packed_examples(
    card: Card,
    conversations: Sequence[Conversation],
    *,
    pack: int = PACK_CONVERSATIONS,
    count_tokens: Callable[[str], int] = approx_tokens,
    budget: PromptBudget = DEFAULT_BUDGET,
) -> list[dict[str, Any]]:
    """Training examples that each carry up to ``pack`` conversations one after the other under one system turn,
    every character line marked ``"train": true`` (learnt), like a busy chat where viewers ask unrelated things.

    The persona's system turn is most of every example's tokens; sharing it between a few conversations trains the
    same lines 2-3x faster. ``pack=1`` gives one example per character line (:func:`conversation_examples`).
    """
    if pack <= 1:
        return [e for c in conversations for e in conversation_examples(card, c.turns, count_tokens=count_tokens,
                                                                          budget=budget)]  # fmt: skip
    order = list(conversations)
    random.Random(PACK_SEED).shuffle(order)  # unrelated viewers share a pack, as in a real chat
    out: list[dict[str, Any]] = []
    group: list[Conversation] = []
    size = 0
    for conversation in order:
        cost = sum(count_tokens(t.content) + 6 for t in conversation.turns)
        if group and (len(group) == pack or size + cost > PACK_TURN_TOKENS):
            out.append(_packed(card, group, count_tokens, budget))
            group, size = [], 0
        group.append(conversation)
        size += cost
    if group:
        out.append(_packed(card, group, count_tokens, budget))
    return out


def _packed(
    card: Card, group: Sequence[Conversation], count_tokens: Callable[[str], int], budget: PromptBudget
) -> dict[str, Any]:
    turns = [turn for conversation in group for turn in conversation.turns]
    last = max(i for i, t in enumerate(turns) if t.role == "assistant")
    context = turns[:last]
    messages: list[dict[str, Any]] = list(
        build_messages(
            card, context, user_name=context[-1].name or "User", count_tokens=count_tokens, budget=budget
        )
    )
    messages.append({"role": "assistant", "content": turns[last].content})
    for message in messages:
        if message["role"] == "assistant":
            message["train"] = True
    return {"messages": messages}


def is_held_out(conversation: Conversation, fraction: float = DIALOGUE_EVAL_FRACTION) -> bool:
    """A deterministic choice by the conversation's text: the same lines are held out on every machine."""
    text = "\n".join(f"{t.role}:{t.name}:{t.content}" for t in conversation.turns)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64 < fraction


def _card_held_out(conversations: Sequence[Conversation]) -> set[int]:
    """Without dialogue files, the card's own examples are all there is to measure a tune on: of each fact asked in
    three or more ways, the last way is held out (the same answer to a question never trained on)."""
    groups: dict[str, list[int]] = {}
    for index, conversation in enumerate(conversations):
        groups.setdefault(conversation.source, []).append(index)
    return {members[-1] for members in groups.values() if len(members) >= 3}


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
    pack: int = PACK_CONVERSATIONS,
) -> TuneDataset:
    """Everything in one dataset. ``log`` is the consenting log's dataset (``models.dataset.build_dataset``);
    ``liked`` the log's training examples whose reply was rated 👍 (they are repeated, not added again)."""

    def examples(turns: Sequence[Turn]) -> list[dict[str, Any]]:
        return conversation_examples(card, turns, count_tokens=count_tokens, budget=budget)

    train: list[dict[str, Any]] = []
    eval_dialogue: list[dict[str, Any]] = []
    sources = {"dialogue": 0, "card": 0, "teachings": 0, "log": 0, "liked": 0}
    learnt: list[Conversation] = []  # trained on, packed
    held: list[Conversation] = [c for c in dialogue if is_held_out(c, eval_fraction)]
    if dialogue and not held and len(dialogue) >= 2:
        held = [dialogue[-1]]  # too few conversations for the fraction to pick one: the gate needs something
    learnt += [c for c in dialogue if c not in held]
    sources["dialogue"] = sum(len(example_points(c.turns)) for c in dialogue)
    held_from_card = _card_held_out(card_derived) if not dialogue else set()
    for index, conversation in enumerate(card_derived):
        (held if index in held_from_card else learnt).append(conversation)
    sources["card"] = sum(len(example_points(c.turns)) for c in card_derived)
    for conversation in held:
        eval_dialogue.extend(examples(conversation.turns))
    train.extend(packed_examples(card, learnt, pack=pack, count_tokens=count_tokens, budget=budget))
    for teaching in teachings:
        # Only the taught reply is a target: the character's earlier lines in its context were not vetted.
        made = examples([*teaching.context, Turn(role="assistant", name="", content=teaching.reply)])[-1:]
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
