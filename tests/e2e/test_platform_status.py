"""The clients report their connection to `runtime.metrics`, so the dashboard's "platforms connected" is true:
connected on ready, disconnected when the socket drops, connected again on resume/reconnect, stopped at the end."""

from __future__ import annotations

import asyncio

from bot.dashboard.status import platform_statuses
from bot.runtime import open_runtime
from tests.e2e.discord_harness import discord_config, running_bot
from tests.e2e.twitch_harness import running_twitch, twitch_config
from tests.fakes import ScriptedBackend


def record_reports(runtime, monkeypatch):
    """Every `metrics.platform` call, in order, while still updating the metrics."""
    calls: list[tuple[str, bool, str]] = []
    report = runtime.metrics.platform

    def spy(name, *, connected, detail=""):
        calls.append((name, connected, detail))
        report(name, connected=connected, detail=detail)

    monkeypatch.setattr(runtime.metrics, "platform", spy)
    return calls


async def eventually(predicate, within=15.0):
    """Wait until `predicate()` holds (the clients report from their own tasks, with no sign on the fake side)."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


def states(runtime):
    return {p.name: (p.state, p.detail) for p in platform_statuses(runtime.config, runtime.metrics)}


def changes(calls, name):
    """The reported states with repeats folded (as Metrics keeps them)."""
    out: list[tuple[bool, str]] = []
    for platform, connected, detail in calls:
        if platform == name and (not out or out[-1] != (connected, detail)):
            out.append((connected, detail))
    return out


async def test_discord_reports_ready_drop_resume_and_stop(fake_discord, tmp_path, monkeypatch):
    config = discord_config(str(tmp_path / "data"))
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        calls = record_reports(runtime, monkeypatch)
        assert states(runtime)["discord"] == ("not reported", "")
        async with running_bot(runtime, fake_discord):
            await eventually(lambda: changes(calls, "discord"))
            assert states(runtime)["discord"] == ("connected", "")
            await fake_discord.drop_gateway()
            await fake_discord.wait_until(lambda: fake_discord.resumes == 1, within=15)
            await eventually(lambda: len(changes(calls, "discord")) >= 3)
            assert changes(calls, "discord") == [(True, ""), (False, "reconnecting"), (True, "")]
            assert states(runtime)["discord"] == ("connected", "")
        assert states(runtime)["discord"] == ("disconnected", "stopped")


async def test_twitch_reports_welcome_drop_reconnect_and_stop(fake_twitch, tmp_path, monkeypatch):
    config = twitch_config(str(tmp_path / "data"))
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        calls = record_reports(runtime, monkeypatch)
        assert states(runtime)["twitch"] == ("not reported", "")
        async with running_twitch(runtime, fake_twitch):
            await eventually(lambda: changes(calls, "twitch"))
            assert states(runtime)["twitch"] == ("connected", "")
            old = set(fake_twitch.sessions)
            await fake_twitch.drop_sockets()
            await fake_twitch.wait_until(lambda: bool(set(fake_twitch.sessions) - old), within=15)
            await eventually(lambda: len(changes(calls, "twitch")) >= 3)
            assert changes(calls, "twitch") == [(True, ""), (False, "reconnecting"), (True, "")]
            assert states(runtime)["twitch"] == ("connected", "")
        assert states(runtime)["twitch"] == ("disconnected", "stopped")
