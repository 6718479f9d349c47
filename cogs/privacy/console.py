"""Privacy commands for the local console (the person at the keyboard is `console:local`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bot.console import AUTHOR_ID, ConsoleCommand
from cogs.privacy.service import PrivacyService

PLATFORM: Final = "console"


def privacy_commands(
    privacy: PrivacyService, *, export_dir: Path, on_forget: Callable[[str], None] = lambda conversation: None
) -> list[ConsoleCommand]:
    """`on_forget(conversation_id)` drops cached chat memory of each conversation the person spoke in."""

    async def consent(args: str) -> str:
        choice = args.strip().lower()
        if choice in ("on", "off"):
            return await privacy.set_consent(PLATFORM, AUTHOR_ID, choice == "on")
        if choice in ("", "status"):
            return await privacy.status(PLATFORM, AUTHOR_ID)
        return "Usage: /consent on|off|status"

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
            "consent", "/consent on|off|status", "may your messages be used to train the character?", consent
        ),
        ConsoleCommand("forget", "/forget", "delete everything logged from you", forget),
        ConsoleCommand("export", "/export", "write your data to a JSON file", export),
    ]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
