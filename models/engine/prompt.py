"""Turn chat messages into prompt token ids with the model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.loader import LoadedModel

# Used when a model config does not say how long its context is.
DEFAULT_CONTEXT_TOKENS = 2048


def context_limit(loaded: LoadedModel) -> int:
    """The number of positions the model can attend to (prompt + reply)."""
    config = getattr(loaded.model, "config", None)
    return int(getattr(config, "max_position_embeddings", None) or DEFAULT_CONTEXT_TOKENS)


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """Render messages as the text the model sees, ending with the opening of the assistant's turn."""
    # Rendering to text first sidesteps the return-type difference of tokenize=True between transformers 4 and 5
    # (a list of ids there, a BatchEncoding here).
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    if not isinstance(text, str):
        raise TypeError(f"chat template rendered {type(text).__name__}, expected str")
    return text


@dataclass(frozen=True)
class EncodedPrompt:
    """Prompt token ids, and how many of them are the system turn (0 if that prefix could not be isolated)."""

    ids: list[int]
    prefix_len: int


def _system_turn_len(tokenizer: Any, system: dict[str, str], ids: list[int]) -> int:
    """Length of the system turn's tokens if the prompt starts with exactly them, else 0."""
    text = tokenizer.apply_chat_template([system], add_generation_prompt=False, tokenize=False)
    if not isinstance(text, str):
        return 0
    head: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return len(head) if len(head) < len(ids) and ids[: len(head)] == head else 0


def encode_prompt(
    loaded: LoadedModel, messages: Sequence[dict[str, str]], max_new_tokens: int
) -> EncodedPrompt:
    """Encode the rendered prompt; ValueError if prompt and reply cannot fit in the model's context."""
    text = render_prompt(loaded.tokenizer, messages)
    # The template already contains every special token the model expects; don't let the tokenizer add a BOS.
    ids: list[int] = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    limit = context_limit(loaded)
    if len(ids) + max_new_tokens > limit:
        raise ValueError(
            f"prompt has {len(ids)} tokens; with max_new_tokens={max_new_tokens} it exceeds the model's "
            f"context of {limit} tokens: shorten the history"
        )
    # The system turn (the persona) is shared by most requests; the engine caches its KV state.
    return EncodedPrompt(ids, _system_turn_len(loaded.tokenizer, messages[0], ids))
