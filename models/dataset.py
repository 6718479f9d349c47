"""Training examples from the conversation log, in the chat format TRL, axolotl and unsloth read.

One example per reply of the character: ``{"messages": [system, ...context..., {"role": "assistant", ...}]}``,
with the system prompt and the context exactly as the bot would have assembled them (``build_messages``).

What may be learnt (checked here, on every row, as context and as target):

1. only messages that may be trained on (``allowed(platform, user_id, created_at)``: consent per the platform's
   mode, from the moment it was given unless the person included their earlier messages; people who asked to be
   forgotten have no rows left and their consent withdrawn);
2. no reply to a message of someone else, nor to a message that was deleted since (its platform id no longer in
   the log), nor a reply rated 👎 (rating −1) — those replies are neither targets nor context;
3. personal data scrubbed (``models.scrub``), mentions turned into names, long messages cut, over-long replies
   dropped, duplicates (same last user turn and same reply) removed;
4. train/eval split by conversation, deterministically (a hash of the conversation id), after
5. the data-quality step (``models.quality``): examples whose user message or reply has no words or is gibberish,
   copy-paste spam and one person's surplus are dropped and counted per reason in ``DatasetStats``; replies the
   moderation step held (``models.quality.held``) are, like 👎 ones, neither targets nor context, and so are the
   viewer messages it held (``messages.held``: their reply was held), along with any reply to them. Held replies
   themselves are never in the log (they live in the ``held`` table, which no dataset reads).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.persona import Card
from models.prompt import PromptBudget, Turn, build_messages
from models.quality import REASONS as QUALITY_REASONS
from models.quality import Candidate, QualityLimits, held, select
from models.scrub import scrub

RESET_MARKER = "[conversation reset]"  # the chat service's marker: history before it is not context
MAX_LOG_ROWS = 500_000  # newest rows read for one dataset; older ones are left out
MIN_REPLY_CHARS = 2

Allowed = Callable[[str, str, float], bool]  # (platform, user_id, created_at) -> may this message be learnt?


@dataclass(frozen=True)
class DatasetLimits:
    max_context_turns: int = 8
    max_message_chars: int = 1000  # context messages are cut to this; longer replies are dropped
    eval_fraction: float = 0.1
    budget: PromptBudget = field(default_factory=PromptBudget)
    quality: QualityLimits | None = field(default_factory=QualityLimits)  # None: no data-quality step


@dataclass
class DatasetStats:
    rows: int = 0
    replies: int = 0
    examples: int = 0
    excluded_no_consent: int = 0  # replies to a message that may not be trained on (no consent, or before it)
    excluded_deleted: int = 0  # replies whose question was deleted
    excluded_downvoted: int = 0
    excluded_length: int = 0
    duplicates: int = 0
    conversations: int = 0
    excluded_held: int = 0  # replies the moderation step held (models.quality.held)
    # The data-quality step (models.quality): examples it was given, and those it dropped, per reason.
    candidates: int = 0
    dropped_no_words: int = 0
    dropped_gibberish: int = 0
    dropped_repeated: int = 0
    dropped_over_share: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @property
    def quality_dropped(self) -> dict[str, int]:
        """{reason: examples dropped} for models.quality.describe."""
        return {reason: getattr(self, f"dropped_{reason}") for reason in QUALITY_REASONS}


@dataclass
class Dataset:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    stats: DatasetStats
    liked: list[dict[str, Any]] = field(default_factory=list)  # the train examples whose reply was rated 👍

    @property
    def size(self) -> int:
        return len(self.train) + len(self.eval)

    def lines(self, part: str) -> list[str]:
        return [json.dumps(example, ensure_ascii=False) for example in getattr(self, part)]

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for part in ("train", "eval"):
            for line in self.lines(part):
                digest.update(part.encode() + b"\0" + line.encode("utf-8") + b"\n")
        return digest.hexdigest()

    def write(self, train_path: str | Path, eval_path: str | Path | None = None) -> None:
        """Write JSONL; with a single path, train and eval go into one file (``familiar export-dataset``)."""
        parts = {Path(train_path): self.lines("train")}
        if eval_path is None:
            parts[Path(train_path)] += self.lines("eval")
        else:
            parts[Path(eval_path)] = self.lines("eval")
        for path, lines in parts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token); the trainer enforces exact limits."""
    return len(text) // 4 + 1


def is_eval_conversation(conversation_id: str, fraction: float) -> bool:
    return _unit_hash(conversation_id) < fraction


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def build_dataset(
    rows: Iterable[Mapping[str, Any]],
    *,
    card: Card,
    allowed: Allowed,
    limits: DatasetLimits = DatasetLimits(),
    count_tokens: Callable[[str], int] = approx_tokens,
) -> Dataset:
    """Examples from log rows (dict-like, with the ``messages`` table's columns), in any order."""
    stats = DatasetStats()
    by_conversation: dict[str, list[Mapping[str, Any]]] = {}
    present: set[tuple[str, str]] = set()
    names: dict[tuple[str, str], str] = {}
    for row in rows:
        stats.rows += 1
        by_conversation.setdefault(row["conversation_id"], []).append(row)
        if row["platform_message_id"]:
            present.add((row["platform"], row["platform_message_id"]))
        if row["role"] == "user" and allowed(row["platform"], row["author_id"], row["created_at"]):
            names[(row["platform"], row["author_id"])] = row["author_name"]

    seen: set[str] = set()
    train: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    for conversation_id in sorted(by_conversation):
        conversation = sorted(by_conversation[conversation_id], key=lambda r: (r["created_at"], r["id"]))
        examples = _conversation_examples(
            conversation, card=card, allowed=allowed, limits=limits, count_tokens=count_tokens,
            present=present, names=names, stats=stats, seen=seen,
        )  # fmt: skip
        candidates.extend(examples)
    stats.candidates = len(candidates)
    kept = candidates if limits.quality is None else _quality_step(candidates, limits.quality, stats)
    for example in kept:
        target = evals if is_eval_conversation(example["_conversation"], limits.eval_fraction) else train
        target.append(example)
    stats.conversations = len({example["_conversation"] for example in kept})
    if not evals and limits.eval_fraction > 0 and stats.conversations >= 2:
        # Too few conversations for the fraction to pick one: the lowest-hash conversation becomes the eval set,
        # still deterministic and still whole.
        first = min(
            (c for c in by_conversation if any(e["_conversation"] == c for e in train)),
            key=_unit_hash,
        )
        evals = [e for e in train if e["_conversation"] == first]
        train = [e for e in train if e["_conversation"] != first]
    liked = [example for example in train if example.get("_liked")]
    for example in (*train, *evals):
        example.pop("_conversation")
        example.pop("_liked", None)
        example.pop("_person")
        example.pop("_prompt")
    stats.examples = len(train) + len(evals)
    return Dataset(train=train, eval=evals, stats=stats, liked=liked)


def _conversation_examples(
    rows: Sequence[Mapping[str, Any]],
    *,
    card: Card,
    allowed: Allowed,
    limits: DatasetLimits,
    count_tokens: Callable[[str], int],
    present: set[tuple[str, str]],
    names: dict[tuple[str, str], str],
    stats: DatasetStats,
    seen: set[str],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    context: list[Turn] = []
    last_user: Mapping[str, Any] | None = None
    last_user_ok = False

    def clean(row: Mapping[str, Any]) -> str:
        platform = row["platform"]
        return scrub(row["content"], lambda user_id: names.get((platform, user_id))).strip()

    for row in rows:
        role = row["role"]
        if role == "system":
            if row["content"] == RESET_MARKER:
                context.clear()
                last_user, last_user_ok = None, False
            continue
        if role == "user":
            last_user = row
            if held(row):  # the moderation step held what it led to: not context, nothing to answer
                last_user_ok = False
                continue
            last_user_ok = allowed(row["platform"], row["author_id"], row["created_at"])
            if last_user_ok:
                text = clean(row)[: limits.max_message_chars]
                if text:
                    context.append(Turn(role="user", name=row["author_name"], content=text))
            continue
        if role != "assistant":
            continue
        stats.replies += 1
        reply_to = row["reply_to_platform_id"]
        if last_user is not None and held(last_user):
            stats.excluded_held += 1
            continue
        if last_user is None or not last_user_ok:
            stats.excluded_no_consent += 1
            continue
        if reply_to and (row["platform"], reply_to) not in present:
            stats.excluded_deleted += 1
            continue
        if row["rating"] == -1:
            stats.excluded_downvoted += 1
            continue
        if held(row):  # the moderation step held it: never shown, so neither target nor context
            stats.excluded_held += 1
            continue
        reply = clean(row)
        if len(reply) < MIN_REPLY_CHARS or len(reply) > limits.max_message_chars:
            stats.excluded_length += 1
            continue
        key = hashlib.sha1(
            f"{_norm(context[-1].content) if context else ''}\0{_norm(reply)}".encode()
        ).hexdigest()
        if key in seen:
            stats.duplicates += 1
        else:
            seen.add(key)
            window = context[-limits.max_context_turns :]
            messages = build_messages(
                card,
                window,
                user_name=last_user["author_name"],
                count_tokens=count_tokens,
                budget=limits.budget,
            )
            messages.append({"role": "assistant", "content": reply})
            out.append(
                {"messages": messages, "_conversation": row["conversation_id"], "_liked": row["rating"] == 1,
                 "_person": (last_user["platform"], last_user["author_id"]),
                 "_prompt": clean(last_user)[: limits.max_message_chars]}
            )  # fmt: skip
        context.append(Turn(role="assistant", name=card.name, content=reply))
    return out


def _quality_step(
    examples: list[dict[str, Any]], quality: QualityLimits, stats: DatasetStats
) -> list[dict[str, Any]]:
    """The data-quality step (models.quality): junk, copy-paste spam and one person's surplus go, counted."""
    kept, dropped = select(
        [Candidate(person=e["_person"], conversation=e["_conversation"], prompt=e["_prompt"],
                   reply=e["messages"][-1]["content"]) for e in examples],
        quality,
    )  # fmt: skip
    for reason, count in dropped.items():
        setattr(stats, f"dropped_{reason}", count)
    return [examples[i] for i in kept]


async def load_log_rows(store: Any, *, max_rows: int = MAX_LOG_ROWS) -> list[Any]:
    """The newest ``max_rows`` rows of the conversation log (sqlite3.Row, dict-like)."""
    return await store.fetchall(
        "SELECT id, platform, conversation_id, platform_message_id, author_id, author_name, role, content, "
        "reply_to_platform_id, created_at, rating, held FROM messages ORDER BY id DESC LIMIT ?",
        (max_rows,),
    )
