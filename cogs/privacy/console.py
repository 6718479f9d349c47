"""Privacy commands for the local console (the person at the keyboard is `console:local`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bot.console import AUTHOR_ID, ConsoleCommand
from cogs.privacy.service import PrivacyService, parse_choice

PLATFORM: Final = "console"
USAGE: Final = "/consent on|off|status|on history"


def privacy_commands(
    privacy: PrivacyService, *, export_dir: Path, on_forget: Callable[[str], None] = lambda conversation: None
) -> list[ConsoleCommand]:
    """`on_forget(conversation_id)` drops cached chat memory of each conversation the person spoke in."""

    async def consent(args: str) -> str:
        parsed = parse_choice(args)
        if parsed is None:
            return f"Usage: {USAGE}"
        choice, include_history = parsed
        if choice == "status":
            return await privacy.status(PLATFORM, AUTHOR_ID)
        return await privacy.set_consent(PLATFORM, AUTHOR_ID, choice == "on", include_history=include_history)

    async def forget(_: str) -> str:
        report = await privacy.forget(PLATFORM, AUTHOR_ID)
        for conversation in report.conversations:
            on_forget(conversation)
        return f"Forgotten: {report.summary()}."

    async def export(_: str) -> str:
        data = await privacy.export(PLATFORM, AUTHOR_ID)
        path = export_dir / f"privacy-export-{PLATFORM}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        await asyncio.to_thread(_write, path, json.dumps(data, indent=2, ensure_ascii=False))
        return f"Wrote {len(data['messages'])} message(s) and your settings to {path}"

    return [
        ConsoleCommand(
            "consent",
            USAGE,
            "may your messages be used to train the character? (on: from now on; on history: earlier ones too)",
            consent,
        ),
        ConsoleCommand("forget", "/forget", "delete everything logged from you", forget),
        ConsoleCommand("export", "/export", "write your data to a JSON file", export),
    ]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
