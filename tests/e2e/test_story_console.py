"""A whole story game on the console with the real embedded model: start, vote, next scene, undo, write-in, end."""

from __future__ import annotations

import io
import re
import sqlite3

import pytest

from bot.config import config_from_dict
from bot.console import Console
from bot.runtime import open_runtime
from cogs.story.console import story_commands

pytestmark = pytest.mark.slow

SCENE = re.compile(r"^\S.* — scene (\d+): (.+)$")
CHOICE = re.compile(r"^  (\d)\. (.+)$")
JUNK = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "User:", "assistant\n")


def scenes(lines: list[str]) -> list[tuple[int, str, list[str]]]:
    """(number, narration, choices) for every scene printed."""
    found: list[tuple[int, str, list[str]]] = []
    for line in lines:
        if m := SCENE.match(line):
            found.append((int(m[1]), m[2], []))
        elif (m := CHOICE.match(line)) and found:
            found[-1][2].append(m[2])
    return found


async def test_a_whole_story_on_the_console_with_the_real_model(engine, tmp_path):
    config = config_from_dict(
        {
            "bot": {"data_dir": str(tmp_path / "data")},
            "story": {
                "max_new_tokens": 60,
                "vote_seconds": 300,
                "summarize_with_model": False,
                "timeout_s": 600.0,  # a shared 2-core machine can be very slow
            },
        }
    )
    script = "\n".join(
        [
            "/story start a lost robot in a quiet forest",
            "/vote 9",  # no such choice
            "1",  # a bare number while the vote is open: the console's one person is the majority
            "/story status",
            "/story undo",
            "/vote 2",
            "/story do climb the tallest tree",
            "/story end",
            "/vote 1",  # no story any more
        ]
    )
    out = io.StringIO()
    async with open_runtime(config, backend=engine) as runtime:
        commands = story_commands(runtime.story, user_name="you", notify=lambda line: out.write(line + "\n"))
        console = Console(
            chat=runtime.chat,
            config=config.console,
            commands=commands,
            stdin=io.StringIO(script + "\n"),
            stdout=out,
        )
        await console.run()
    lines = out.getvalue().splitlines()
    text = out.getvalue()

    told = scenes(lines)
    assert [n for n, _, _ in told] == [1, 2, 1, 2, 3], (
        text
    )  # start, vote, undo (scene 1 again), vote, write-in
    for _, narration, choices in told:
        assert narration.strip()
        assert 2 <= len(choices) <= 4 and all(c.strip() for c in choices)
        assert not any(j in narration + " ".join(choices) for j in JUNK)
    assert told[2][1] == told[0][1]  # undo shows the same opening again
    assert "There is no choice 9" in text
    assert "→ The audience chose 1:" in text and "→ The audience chose 2:" in text
    assert "→ you chose" in text and "climb the tallest tree" in text
    assert "(back one scene)" in text
    assert "Story narrated by Wick — a lost robot in a quiet forest" in text
    assert "The End. (3 scenes; ended by you)" in text
    assert lines[-1].startswith("There is no story running here")

    db = sqlite3.connect(tmp_path / "data" / "familiar.db")
    narrated = db.execute("SELECT content FROM messages WHERE role = 'narrator' ORDER BY id").fetchall()
    assert (
        len(narrated) == 4
    )  # the opening, scene 2, scene 2 again after the undo, scene 3 (undo itself logs none)
    turns = db.execute("SELECT number, status FROM story_turns ORDER BY id").fetchall()
    assert turns == [(1, "undone"), (2, "undone"), (1, "closed"), (2, "closed"), (3, "open")]
    votes = db.execute("SELECT option FROM story_votes ORDER BY turn_id").fetchall()
    assert votes == [(1,), (2,)]
