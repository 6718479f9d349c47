"""What a tune or a retrain learns from and is measured with, gathered from the card's files, the store and the config.

- the dialogue files: next to the card (``<card>.dialogue*.jsonl``) plus ``training.dialogue_files``;
- the card itself (``training.learn_from_card``): greetings, example dialogues, identity, lorebook facts;
- moderators' teachings (``cogs/teach``), consent applied to the turns they answer;
- the consenting log (``models/dataset.py``), with its own held-out conversations;
- the persona checks: ``training.persona_checks`` or ``<card>.persona_checks.json``, plus those derived from the
  card, each with the prompt the bot would send;
- the general-chat reference shipped in ``models/reference/``.

A file that cannot be used is refused with its name and line (`DialogueError`, `ChecksError`), before any training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import PROJECT_ROOT, Config
from cogs.common.prompting import prompt_budget
from models.persona import Card
from models.persona.checks import PersonaCheck, all_checks, checks_path_for, load_checks
from models.tuning.builder import TaughtReply
from models.tuning.card_examples import card_conversations
from models.tuning.dialogue import Conversation, dialogue_files_for, read_dialogue
from models.tuning.persona_eval import check_prompts

GENERAL_REFERENCE = PROJECT_ROOT / "models" / "reference" / "general_chat.jsonl"


@dataclass(frozen=True)
class CharacterData:
    """The character's own material: dialogue, card-derived conversations and the persona checks."""

    dialogue_files: tuple[Path, ...]
    dialogue: tuple[Conversation, ...]
    card_derived: tuple[Conversation, ...]
    checks: tuple[PersonaCheck, ...]
    checks_file: Path | None
    skipped_system: int = 0


def card_path(config: Config, card: Card) -> Path | None:
    """The card's file, when it came from one (the bundled card or ``bot.persona``)."""
    path = Path(card.source)
    return path if path.is_file() else None


def _config_path(config: Config, value: str) -> Path:
    """A path from the config: relative ones are taken from the config file's folder, as the user wrote them."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    source = Path(config.source)
    return (source.parent / path) if source.is_file() else path


def character_data(config: Config, card: Card) -> CharacterData:
    """Read the dialogue files and persona checks (raises `DialogueError` / `ChecksError` naming the file)."""
    t = config.training
    own = card_path(config, card)
    files = [*(dialogue_files_for(own) if own else []), *(_config_path(config, f) for f in t.dialogue_files)]
    files = list(dict.fromkeys(files))
    dialogue, skipped = read_dialogue(files)
    checks_file: Path | None = None
    if t.persona_checks:
        checks_file = _config_path(config, t.persona_checks)
    elif own is not None and checks_path_for(own).is_file():
        checks_file = checks_path_for(own)
    hand = load_checks(checks_file) if checks_file else []
    return CharacterData(
        dialogue_files=tuple(files),
        dialogue=tuple(dialogue),
        card_derived=tuple(card_conversations(card)) if t.learn_from_card else (),
        checks=tuple(all_checks(card, hand)),
        checks_file=checks_file,
        skipped_system=skipped,
    )


def persona_payload(
    config: Config, card: Card, checks: tuple[PersonaCheck, ...]
) -> tuple[dict[str, Any], ...]:
    """The checks as the worker gets them: each with the messages the bot would send for its question."""
    prompts = check_prompts(card, checks, budget=prompt_budget(config.prompt))
    return tuple(
        {**dataclasses.asdict(check), "messages": messages}
        for check, messages in zip(checks, prompts, strict=True)
    )


def taught_replies(teachings: list[Any], allowed: Callable[[str, str, float], bool]) -> list[TaughtReply]:
    """Teachings as training conversations; the viewers' turns in their context must be learnable (consent at the
    time they wrote), and a teaching whose answered turn is not is left out."""
    from models.prompt import Turn

    out = []
    for teaching in teachings:
        turns: list[Turn] = []
        for turn in teaching.context:
            if turn.role == "user" and not allowed(teaching.platform, turn.author_id, teaching.created_at):
                continue
            if turn.role == "user":
                turns.append(Turn(role="user", name=turn.name, content=turn.content))
            else:
                turns.append(Turn(role="assistant", name="", content=turn.content))
        answered = next((t for t in reversed(teaching.context) if t.role == "user"), None)
        if answered is None or not turns or turns[-1].role != "user":
            continue
        if not allowed(teaching.platform, answered.author_id, teaching.created_at):
            continue
        out.append(TaughtReply(context=tuple(turns), reply=teaching.taught))
    return out
