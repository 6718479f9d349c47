"""`/teach` in the console: the app's commands over a real runtime correct the character's last reply."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bot.config import config_from_dict
from bot.runtime import open_runtime
from cogs.teach.service import load_teachings
from tests.e2e.test_polls_console import run_console
from tests.fakes import ScriptedBackend


async def test_console_teach_corrects_the_last_reply(tmp_path):
    config = config_from_dict({"bot": {"data_dir": str(tmp_path / "data")}})
    async with open_runtime(config, backend=ScriptedBackend(["I am a teapot."])) as runtime:
        lines = await run_console(
            runtime,
            [
                "/teach Hello!",
                "who are you?",
                "/teach",
                "/teach I am Wick, a candle's flame.",
                "/help",
            ],
        )
        teachings = await load_teachings(runtime.store)
        # The runtime registers the privacy hook: export lists the teaching, forget deletes it.
        exported, forgotten = (await run_console(runtime, ["/export", "/forget"]))[1:]
        path = Path(exported.rsplit(" to ", 1)[1])
        export = json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
        assert export["teachings"][0]["taught_by_you"] is True
        assert forgotten.startswith("Forgotten: ") and "1 teachings" in forgotten
        assert await load_teachings(runtime.store) == []
    assert lines[1] == "Wick has not replied here yet."
    assert lines[2] == "Wick: I am a teapot."
    assert lines[3].startswith("Usage: /teach <better reply>")
    assert lines[4] == "Thanks — Wick will learn that reply at the next tune."
    assert any(line.strip().startswith("/teach <better reply>") for line in lines[5:])
    (teaching,) = teachings
    assert (teaching.platform, teaching.conversation_id) == ("console", "console:local")
    assert (teaching.original, teaching.taught) == ("I am a teapot.", "I am Wick, a candle's flame.")
    assert (teaching.teacher_id, teaching.teacher_name) == ("local", "you")
    assert [(t.author_id, t.content) for t in teaching.context] == [("local", "who are you?")]
