"""The prompt limits every feature builds from the ``[prompt]`` config section."""

from __future__ import annotations

from bot.config import PromptConfig
from models.prompt import PromptBudget


def prompt_budget(prompt: PromptConfig) -> PromptBudget:
    """The configured prompt limits, the same for chat replies and for the examples a retrain learns from."""
    return PromptBudget(
        total_tokens=prompt.context_tokens,
        reserve_for_reply=prompt.reply_reserve_tokens,
        examples_max_tokens=prompt.example_tokens,
        persona_user=prompt.persona_user,
    )
