"""`/tune` in the console end to end: the app's commands over a real runtime (SQLite, the bundled character and its
dialogue files) with the fake training worker (tests/fake_training_worker.py) instead of a real run."""

from __future__ import annotations

import asyncio
import io

from bot.console import Console
from bot.runtime import open_runtime
from cogs.admin.console import admin_commands
from cogs.common.actor import Actor
from tests.e2e.test_polls_console import run_console
from tests.fakes import ScriptedBackend
from tests.retrain_support import GATE_FIGURES, retrain_config


async def finished(runtime, within=60.0):
    """The tune's result, once its background task has reported it."""
    async with asyncio.timeout(within):
        while runtime.models.running or runtime.models.last_result is None:  # noqa: ASYNC110 (a service's state)
            await asyncio.sleep(0.05)
    return runtime.models.last_result


async def test_console_tune_runs_in_the_background_and_reports_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    monkeypatch.setenv("FAKE_TRAINING_STEP_S", "0.3")  # still running when the next lines are read
    async with open_runtime(
        retrain_config(tmp_path), backend=ScriptedBackend(default="Still here.")
    ) as runtime:
        lines = await run_console(
            runtime, ["/help", "/tune now", "/tune", "/tune", "/retrain", "are you there?"]
        )
        result = await finished(runtime)
        status = await run_console(runtime, ["/tune status"])
    notified = capsys.readouterr().out.splitlines()
    help_lines = [line.strip() for line in lines[1:] if line.startswith("  /")]
    assert any(line.startswith("/tune [fresh|cancel|status]") for line in help_lines), help_lines
    usage, started, busy, busy_retrain, reply = lines[-5:]
    assert usage == "Usage: /tune [fresh|cancel|status]"
    assert started == "Tuning in the background; keep chatting. Progress follows."
    assert busy.startswith("A retrain is already running; /tune status shows its progress")
    assert busy_retrain.startswith("A retrain is already running; /retrain status")
    assert reply.endswith("Still here.")  # the chat goes on while it trains

    assert result.status == "promoted", result.message
    assert notified[0].startswith("(tune) building the dataset")
    learning = next(line for line in notified if line.startswith("(tune) learning from "))
    assert "dialogue-file lines" in learning and "from the card" in learning
    assert [line.split(" ·")[0] for line in notified if line.startswith("(tune) step ")] == [
        "(tune) step 1/3", "(tune) step 2/3", "(tune) step 3/3"
    ]  # fmt: skip
    final = notified[-1]
    assert final.startswith("(tune) v0001 is live — promoted: ") and all(f in final for f in GATE_FIGURES), (
        final
    )
    assert f"Learnt from {learning.removeprefix('(tune) learning from ').removesuffix('…')}." in final
    assert runtime.models.registry.active_name() == "v0001"
    text = "\n".join(status)
    assert "Registry points at: v0001" in text and all(f in text for f in GATE_FIGURES)


async def test_console_tune_is_refused_to_a_non_admin(tmp_path):
    async with open_runtime(retrain_config(tmp_path), backend=ScriptedBackend()) as runtime:
        out = io.StringIO()
        guest = Actor(platform="console", user_id="guest", name="guest", is_moderator=True)
        console = Console(
            chat=runtime.chat,
            config=runtime.config.console,
            commands=admin_commands(runtime.models, notify=out.write, actor=guest),
            stdin=io.StringIO("/tune\n/tune fresh\n/retrain\n"),
            stdout=out,
        )
        await console.run()
        await asyncio.sleep(0.1)  # nothing was started in the background either
        assert not runtime.models.running and runtime.models.last_result is None
        assert runtime.models.registry.versions() == []
    assert out.getvalue().splitlines()[1:] == [
        "Only an admin can tune the character.",
        "Only an admin can tune the character.",
        "Only an admin can retrain the character.",
    ]
