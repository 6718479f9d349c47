"""The README's promise: pipe a line into `familiar chat` and the character answers, and both turns are logged."""

import sqlite3
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_piped_console_answers_in_character_and_logs(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[bot]\ndata_dir = "{tmp_path / "data"}"\n[generation]\ntemperature = 0.0\nmax_new_tokens = 40\n',
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "chat"],
        input="Hello! Who are you?\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, run.stdout  # the greeting, then exactly one reply line
    greeting, reply = lines
    assert greeting.startswith("Wick: ")
    assert reply.startswith("Wick: ")
    text = reply.removeprefix("Wick: ")
    assert text.strip()
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "User:", "assistant\n"):
        assert token not in text
    assert "SmolLM" not in text

    db = sqlite3.connect(tmp_path / "data" / "familiar.db")
    rows = db.execute("SELECT platform, role, content FROM messages ORDER BY id").fetchall()
    assert ("console", "user", "Hello! Who are you?") in rows
    assert any(r[0] == "console" and r[1] == "assistant" and r[2] == text for r in rows)
