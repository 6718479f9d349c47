"""Rebuild general_chat.jsonl from the ChatterBot English corpus (`pip download --no-deps chatterbot-corpus==1.3.3`).

Run once by a maintainer, never at run time: ``python -m models.reference.make_general_chat WHEEL_OR_DIR``. Each
consecutive (line, answer) pair of the chosen everyday-conversation categories becomes one example under a neutral
system prompt, so the reference measures how the model chats in general, whoever it plays.
"""

from __future__ import annotations

import itertools
import json
import sys
import zipfile
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # a maintainer's tool: PyYAML is no dependency

CATEGORIES = ("conversations", "greetings", "emotion", "humor", "food")
SYSTEM = "You are a friendly person chatting with a friend. Reply briefly and naturally."
OUT = Path(__file__).with_name("general_chat.jsonl")
MAX_CHARS = 300


def _texts(source: Path) -> dict[str, str]:
    wanted = {f"chatterbot_corpus/data/english/{c}.yml": c for c in CATEGORIES}
    if source.is_dir():
        return {c: (source / name).read_text(encoding="utf-8") for name, c in wanted.items()}
    with zipfile.ZipFile(source) as wheel:
        return {c: wheel.read(name).decode("utf-8") for name, c in wanted.items()}


def main(source: str) -> int:
    lines = []
    for category, text in _texts(Path(source)).items():
        for conversation in yaml.safe_load(text)["conversations"]:
            turns = [str(t).strip() for t in conversation if str(t).strip()]
            for said, answer in itertools.pairwise(turns):
                if len(said) <= MAX_CHARS and len(answer) <= MAX_CHARS:
                    messages = [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": said},
                        {"role": "assistant", "content": answer},
                    ]
                    lines.append(json.dumps({"messages": messages, "category": category}, ensure_ascii=False))
    unique = list(dict.fromkeys(lines))
    OUT.write_text("".join(line + "\n" for line in unique), encoding="utf-8")
    print(f"{len(unique)} examples -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
