"""A character's dialogue files: hand-written conversations in the chat format TRL and axolotl read.

One JSON object per line::

    {"messages": [{"role": "user", "name": "Ann", "content": "what's your name?"},
                  {"role": "assistant", "content": "Wick. Mind the draft."}]}

``name`` (optional) is the speaker; several speakers may share one conversation. Every assistant message is the
character's line, and each becomes one training example with the turns before it as context. System messages are
skipped (the card builds the system turn, exactly as when serving) and counted. A line that cannot be used stops the
load with a message naming the file and the line: a tune on half a file would be a surprise.

Files are found next to the card (``<card>.dialogue*.jsonl``) or named in ``[tuning] dialogue_files``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.prompt import Turn

DIALOGUE_GLOB = "{stem}.dialogue*.jsonl"
MAX_DIALOGUE_LINES = 100_000  # per file: past this it is not a dialogue file but a corpus
MAX_TURN_CHARS = 2_000
DEFAULT_SPEAKER = "User"


class DialogueError(ValueError):
    """A dialogue file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Conversation:
    """One conversation as turns; ``source`` says where it came from ("file.jsonl:12")."""

    turns: tuple[Turn, ...]
    source: str


def dialogue_files_for(card_path: str | Path) -> list[Path]:
    """The dialogue files lying next to a card: ``wick.json`` -> ``wick.dialogue*.jsonl``, sorted."""
    path = Path(card_path)
    return sorted(path.parent.glob(DIALOGUE_GLOB.format(stem=path.stem)))


def read_dialogue(paths: Iterable[str | Path]) -> tuple[list[Conversation], int]:
    """Every conversation of the files, in order, and how many system messages were skipped."""
    conversations: list[Conversation] = []
    skipped_system = 0
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DialogueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise DialogueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if len(lines) > MAX_DIALOGUE_LINES:
            raise DialogueError(f"{path}: {len(lines)} lines, more than the {MAX_DIALOGUE_LINES} allowed")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            conversation, system = _parse_line(line, where)
            skipped_system += system
            conversations.append(conversation)
    return conversations, skipped_system


def _parse_line(line: str, where: str) -> tuple[Conversation, int]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DialogueError(f"{where}: not JSON: {exc.msg} (column {exc.colno})") from None
    messages = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(messages, list) or not messages:
        raise DialogueError(f'{where}: needs a non-empty "messages" list')
    turns: list[Turn] = []
    system = 0
    for index, message in enumerate(messages, 1):
        at = f"{where}: message {index}"
        if not isinstance(message, dict):
            raise DialogueError(f"{at}: must be an object with role and content")
        role, content, name = message.get("role"), message.get("content"), message.get("name", "")
        if role not in ("user", "assistant", "system"):
            raise DialogueError(f'{at}: role must be "user", "assistant" or "system", not {role!r}')
        if not isinstance(content, str) or not content.strip():
            raise DialogueError(f"{at}: content must be a non-empty string")
        if len(content) > MAX_TURN_CHARS:
            raise DialogueError(f"{at}: content is {len(content)} characters, more than {MAX_TURN_CHARS}")
        if not isinstance(name, str):
            raise DialogueError(f"{at}: name must be a string")
        if role == "system":
            system += 1
            continue
        speaker = (name.strip() or DEFAULT_SPEAKER) if role == "user" else ""
        turns.append(Turn(role=role, name=speaker, content=content.strip()))
    if not turns or turns[-1].role != "assistant":
        raise DialogueError(f"{where}: the conversation must end with an assistant message")
    if not any(t.role == "user" for t in turns[:-1]) or turns[0].role != "user":
        raise DialogueError(f"{where}: the conversation must start with a user message")
    return Conversation(turns=tuple(turns), source=where), system


def example_points(turns: Sequence[Turn]) -> list[int]:
    """Indexes of the character's lines that have a user turn right before them: each is one training target."""
    return [i for i, t in enumerate(turns) if t.role == "assistant" and i > 0 and turns[i - 1].role == "user"]
