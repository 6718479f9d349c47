"""`/poll` in the console end to end: the app's console commands over a real runtime (store, scheduler, service)."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys

import pytest

from bot.app import console_commands
from bot.config import config_from_dict
from bot.console import Console
from bot.runtime import open_runtime
from tests.fakes import ScriptedBackend


async def run_console(runtime, lines: list[str]) -> list[str]:
    out = io.StringIO()
    console = Console(
        chat=runtime.chat,
        config=runtime.config.console,
        commands=console_commands(runtime),
        stdin=io.StringIO("".join(f"{line}\n" for line in lines)),
        stdout=out,
    )
    await console.run()
    return out.getvalue().splitlines()


async def test_console_poll_create_vote_results_close(tmp_path, capsys):
    config = config_from_dict({"bot": {"data_dir": str(tmp_path / "data")}})
    backend = ScriptedBackend(default="Go takes the crown tonight!")
    async with open_runtime(config, backend=backend) as runtime:
        out = await run_console(
            runtime,
            [
                "/poll create Game tonight? | chess | go | shogi | 2m",
                "/poll create Another? | a | b | 2m",
                "/poll vote 2",
                "/poll vote shogi",
                "/poll vote 9",
                "/poll results",
                "/poll close",
                "/poll vote 1",
                "/poll",
            ],
        )
        await runtime.polls.drain()
    text = "\n".join(out)
    assert "Poll #1 is open for 2m: Game tonight?" in text
    assert "  2. go" in out
    assert "Poll #1 is already running in this channel; close it first." in out
    assert "Vote counted: 2. go (poll #1)." in out
    assert "Vote counted: 3. shogi (poll #1)." in out  # the change replaces the earlier vote
    assert any("There is no option 9" in line for line in out)
    assert "Poll #1 (live, 1 voter): Game tonight?" in out
    assert "Poll #1 (final, 1 voter): Game tonight?" in out
    assert "“shogi” wins with 1 vote (100%)." in out
    assert "Poll #1 has closed; votes are no longer counted." in out
    assert "/poll create Question? | option 1 | option 2 | duration (e.g. 2m) [multi]" in text
    # The announcement arrives through the close listener (printed, like a deadline close would be).
    assert "Wick: Go takes the crown tonight!" in capsys.readouterr().out


async def test_console_refuses_bad_polls_clearly(tmp_path):
    config = config_from_dict({"bot": {"data_dir": str(tmp_path / "data")}})
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        out = await run_console(
            runtime,
            [
                "/poll create Q? | only | 2m",
                "/poll create Q? | " + " | ".join(str(i) for i in range(11)) + " | 2m",
                "/poll create Q? | same | SAME | 2m",
                "/poll create  | a | b | 2m",
                "/poll create Q? | a | b | 0",
                "/poll create Q? | a | b | -5m",
                "/poll create Q? | a | b | 10 years",
                "/poll create Q? | a | b | soon",
                "/poll create " + "q" * 301 + " | a | b | 2m",
                "/poll create Q? | a | " + "b" * 56 + " | 2m",
                "/poll vote 1",
                "/poll close",
            ],
        )
    assert out[1:] == [
        "A poll needs at least 2 options; got 1.",
        "A poll takes at most 10 options; got 11.",
        "Options 1 and 2 are the same ('SAME'): every option must be different.",
        "The question is empty: ask something, e.g. `Pizza or tacos? | pizza | tacos | 2m`.",
        "The duration must be positive, not '0'. Write 90s, 2m, 1h30m, 1d or a number of seconds.",
        "The duration must be positive, not '-5m'. Write 90s, 2m, 1h30m, 1d or a number of seconds.",
        "A poll can run at most 7d; got 3650d.",
        "Not a duration: 'soon'. Write 90s, 2m, 1h30m, 1d or a number of seconds.",
        "The question is 301 characters long; the limit is 300.",
        "Option 2 is 56 characters long; the limit is 55.",
        "No poll is running here.",
        "No poll is running here.",
    ]


async def test_console_forget_mid_poll_keeps_one_vote_that_a_new_vote_replaces(tmp_path):
    config = config_from_dict({"bot": {"data_dir": str(tmp_path / "data")}})
    async with open_runtime(config, backend=ScriptedBackend(default="Tea it is.")) as runtime:
        out = await run_console(
            runtime,
            [
                "/poll create Tea or coffee? | tea | coffee | 2m",
                "/poll vote tea",
                "/forget",
                "/poll results",
                "/poll vote coffee",
                "/poll results",
            ],
        )
        await runtime.polls.drain()
    assert out.count("Poll #1 (live, 1 voter): Tea or coffee?") == 2, out  # counted once before and after
    assert "Vote counted: 2. coffee (poll #1)." in out
    db = sqlite3.connect(tmp_path / "data" / "familiar.db")
    try:
        votes = db.execute("SELECT platform, user_id, option FROM poll_votes").fetchall()
        creator = db.execute("SELECT creator_id, creator_name FROM polls").fetchone()
    finally:
        db.close()
    assert len(votes) == 1 and votes[0][0] == "console" and votes[0][2] == 2  # replaced, not added
    assert votes[0][1] != "local" and "local" not in creator and "you" not in creator


@pytest.mark.slow
def test_piped_familiar_chat_runs_a_poll(tmp_path):
    """The real CLI with the embedded model: a poll through piped lines; the announcement is the engine's or the template."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[bot]\ndata_dir = "{tmp_path / "data"}"\n[polls]\nannounce_timeout_s = 20.0\n', encoding="utf-8"
    )
    run = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "chat"],
        input="/poll create Tea or coffee? | tea | coffee | 2m\n/poll vote tea\n/poll close\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "Poll #1 is open for 2m: Tea or coffee?" in run.stdout
    assert "Vote counted: 1. tea (poll #1)." in run.stdout
    assert "“tea” wins with 1 vote (100%)." in run.stdout
    db = sqlite3.connect(tmp_path / "data" / "familiar.db")
    assert db.execute("SELECT status FROM polls").fetchall() == [("closed",)]
    assert db.execute("SELECT platform, user_id, option FROM poll_votes").fetchall() == [
        ("console", "local", 1)
    ]
    db.close()
