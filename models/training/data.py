"""Chat examples to token ids with a loss mask, and length-grouped batches.

Only the character's final reply is learnt: every token before it (system prompt, context, the opening
``<|im_start|>assistant\\n``) gets the label ``IGNORE_INDEX``; the reply's tokens and its end-of-turn token keep
theirs, so the model learns what to say *and* when to stop.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IGNORE_INDEX = -100
# Length-grouped batching sorts inside windows of this many batches: little padding, still shuffled.
MEGABATCH_FACTOR = 16


class DatasetError(ValueError):
    """A training file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is computed

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Examples from a ``{"messages": [...]}`` JSONL file, each checked to end with an assistant message."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON: {exc}") from None
            messages = example.get("messages") if isinstance(example, dict) else None
            if not messages or not isinstance(messages, list) or messages[-1].get("role") != "assistant":
                raise DatasetError(
                    f"{path}:{number}: needs a 'messages' list ending with an assistant message"
                )
            examples.append(example)
    return examples


def end_of_turn_id(tokenizer: Any) -> int:
    """The id of ``<|im_end|>`` (or the tokenizer's eos when the template uses another marker)."""
    vocab = tokenizer.get_vocab()
    return vocab.get("<|im_end|>", tokenizer.eos_token_id)


def encode_example(tokenizer: Any, messages: Sequence[dict[str, str]], max_tokens: int) -> Encoded | None:
    """Token ids and labels for one example, or None when even its shortest form does not fit ``max_tokens``.

    Too long: the oldest context turns (after the system message) are dropped first; the reply is never cut,
    since a cut reply would teach the model to stop mid-sentence.
    """
    eot = end_of_turn_id(tokenizer)
    messages = list(messages)
    if any(m.get("train") for m in messages):  # a packed example: several replies learnt, never shortened
        encoded = _encode_marked(tokenizer, messages, eot)
        return encoded if len(encoded.input_ids) <= max_tokens else None
    while True:
        encoded = _encode(tokenizer, messages, eot)
        if len(encoded.input_ids) <= max_tokens:
            return encoded
        droppable = [i for i in range(1, len(messages) - 2) if messages[i]["role"] != "system"]
        if not droppable:
            return None
        del messages[droppable[0]]


def _encode(tokenizer: Any, messages: list[dict[str, str]], eot: int) -> Encoded:
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise DatasetError("the chat template renders the reply's prompt differently from the full example")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    if eot in reply_ids:
        reply_ids = reply_ids[: reply_ids.index(eot) + 1]  # drop the newline the template puts after the turn
    else:
        reply_ids = [*reply_ids, eot]
    return Encoded(input_ids=prompt_ids + reply_ids, labels=[IGNORE_INDEX] * len(prompt_ids) + reply_ids)


def _encode_marked(tokenizer: Any, messages: list[dict[str, Any]], eot: int) -> Encoded:
    """Every assistant message marked ``"train": true`` is a target (axolotl's per-message training field); the
    messages after the last one are not needed. Segments are rendered at message boundaries, where ChatML puts its
    special tokens, so tokenizing them apart gives the ids of the whole."""
    last = max(i for i, m in enumerate(messages) if m.get("train"))
    plain = [{"role": m["role"], "content": m["content"]} for m in messages[: last + 1]]
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, message in enumerate(messages[: last + 1]):
        if message["role"] != "assistant" or not message.get("train"):
            continue
        prompt = tokenizer.apply_chat_template(plain[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(plain[: i + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DatasetError("the chat template renders a packed example's turns differently one by one")
        context = tokenizer(prompt[len(done) :], add_special_tokens=False)["input_ids"]
        reply = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        reply = reply[: reply.index(eot) + 1] if eot in reply else [*reply, eot]
        ids += context + reply
        labels += [IGNORE_INDEX] * len(context) + reply
        # What is tokenized so far ends with the turn's end marker; the newline after it opens the next segment.
        marker = tokenizer.decode([eot])
        end = full.find(marker, len(prompt))
        done = full[: end + len(marker)] if end >= 0 else full
    return Encoded(input_ids=ids, labels=labels)


def encode_all(
    tokenizer: Any, examples: Iterable[dict[str, Any]], max_tokens: int
) -> tuple[list[Encoded], int]:
    """Encode every example; returns the encoded ones and how many were skipped as too long."""
    out: list[Encoded] = []
    skipped = 0
    for example in examples:
        encoded = encode_example(tokenizer, example["messages"], max_tokens)
        if encoded is None or encoded.target_tokens == 0:
            skipped += 1
        else:
            out.append(encoded)
    return out, skipped


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)
    tokens: int  # real (non-padding) tokens
    target_tokens: int  # tokens that carry loss


def collate(items: Sequence[Encoded], pad_id: int) -> Batch:
    """Pad on the right to the longest item of the batch."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(item.labels)
    return Batch(ids, mask, labels, int(mask.sum()), int((labels != IGNORE_INDEX).sum()))


def length_grouped_batches(
    items: Sequence[Encoded], batch_size: int, *, seed: int, epoch: int = 0
) -> list[list[int]]:
    """Batches of indices: shuffled, then sorted by length inside windows so a batch holds similar lengths."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(items)))
    rng.shuffle(order)
    window = batch_size * MEGABATCH_FACTOR
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(items[i].input_ids), reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
