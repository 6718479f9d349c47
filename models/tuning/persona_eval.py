"""Asking a model the persona checks the way the bot asks it anything, and scoring what it says.

The prompts are the served ones (``build_messages`` over the card, one viewer asking), the replies are sampled at
the bot's own settings and cleaned as chat replies are (``clean_reply``), several per question: the score is what
viewers would see, not one lucky greedy answer. Two runners share the prompts and the scoring: ``sample_hf`` for a
plain transformers model (the training worker, with an unmerged adapter) and the serving bench's engine path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.cleaning import clean_reply
from models.persona import Card
from models.persona.checks import PersonaCheck, PersonaScore, fold, score_replies
from models.prompt import PromptBudget, Turn, build_messages

DEFAULT_BUDGET = PromptBudget()  # the bot's default prompt limits

# The viewers who ask: names vary, so no check leans on one speaker's name.
ASKERS = ("Sam", "Priya", "jules_k", "Mo", "Tess", "Oli")
DEFAULT_SAMPLES = 3
MAX_NEW_TOKENS = 48
ECHO_CHARS = 32  # a reply whose first this many characters stand in the system turn parrots it
HF_BATCH_PROMPTS = 8  # prompts per generate() call (times the samples): bounds the worker's memory


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.15
    max_new_tokens: int = MAX_NEW_TOKENS
    samples: int = DEFAULT_SAMPLES
    seed: int = 1234


def asker(index: int) -> str:
    return ASKERS[index % len(ASKERS)]


def check_prompts(
    card: Card, checks: Sequence[PersonaCheck], *, budget: PromptBudget = DEFAULT_BUDGET
) -> list[list[dict[str, str]]]:
    """The messages the bot would send its model for each check's question (a fresh chat, one viewer)."""
    prompts = []
    for index, check in enumerate(checks):
        name = asker(index)
        prompts.append(
            build_messages(
                card,
                [Turn(role="user", name=name, content=check.question)],
                user_name=name,
                count_tokens=lambda text: len(text) // 4 + 1,
                budget=budget,
            )
        )
    return prompts


def clean_sample(text: str, char_name: str, index: int) -> str:
    """A raw sample as a chat reply would be posted (an unusable one scores as an empty, unfaithful reply)."""
    return clean_reply(text, char_name=char_name, other_names=[asker(index)], drop_dangling=False)


def sample_hf(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]], sampling: Sampling, device: Any
) -> list[list[str]]:
    """``sampling.samples`` raw replies per prompt from a transformers model (left-padded batches, seeded)."""
    import torch

    torch.manual_seed(sampling.seed)
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[list[str]] = []
    try:
        for start in range(0, len(prompts), HF_BATCH_PROMPTS):
            texts = [
                tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
                for p in prompts[start : start + HF_BATCH_PROMPTS]
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad(), _fast_autocast(device):
                greedy = sampling.temperature <= 0  # the bot's own setting: greedy replies are all the same
                generated = model.generate(
                    **enc,
                    **({"do_sample": False} if greedy else {"do_sample": True, "temperature": sampling.temperature,
                                                            "top_p": sampling.top_p}),
                    repetition_penalty=sampling.repetition_penalty,
                    max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=1 if greedy else sampling.samples,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )  # fmt: skip
            width = enc["input_ids"].shape[1]
            decoded = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            per_prompt = 1 if greedy else sampling.samples
            for i in range(len(texts)):
                out.append(decoded[i * per_prompt : (i + 1) * per_prompt])
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def _fast_autocast(device: Any) -> Any:
    """bf16 matmuls where they are fast (CUDA; CPUs with AMX / AVX512-BF16): sampling is ~3x faster there."""
    import contextlib

    import torch

    from models.loader import cpu_has_fast_bf16

    kind = getattr(device, "type", str(device))
    if kind == "cuda" or (kind == "cpu" and cpu_has_fast_bf16()):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def score_samples(
    checks: Sequence[PersonaCheck],
    raw: Sequence[Sequence[str]],
    char_name: str,
    prompts: Sequence[Sequence[dict[str, str]]] = (),
) -> PersonaScore:
    """Clean each raw sample as the chat service would, then score it against its check. A reply that opens by
    copying its prompt's system turn (the name is in there) is an echo, not an answer: it counts as unfaithful."""
    cleaned = []
    for i, samples in enumerate(raw):
        system = fold(prompts[i][0]["content"]) if i < len(prompts) and prompts[i] else ""
        replies = [clean_sample(text, char_name, i) for text in samples]
        cleaned.append(["" if system and _echoes(reply, system) else reply for reply in replies])
    return score_replies(checks, cleaned)


def _echoes(reply: str, system: str) -> bool:
    start = fold(reply)[:ECHO_CHARS]
    return len(start) >= ECHO_CHARS and start in system
