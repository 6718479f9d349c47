"""The clients report their connection to `runtime.metrics`, so the dashboard's "platforms connected" is true:
connected on ready, disconnected when the socket drops (for as long as an outage lasts), connected again on
resume/reconnect, stopped at the end."""

from __future__ import annotations

import asyncio

import twitchio.eventsub.websockets

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


class QuickBackoff:
    """twitchio's reconnect backoff (3 s, doubling) shortened to a steady 0.1 s, so an outage test runs quickly."""

    def __init__(self, **_: object) -> None:
        pass

    def calculate(self) -> float:
        return 0.1


async def test_twitch_reports_the_loss_while_no_replacement_socket_can_be_opened(
    fake_twitch, tmp_path, monkeypatch
):
    monkeypatch.setattr(twitchio.eventsub.websockets, "Backoff", QuickBackoff)
    config = twitch_config(str(tmp_path / "data"))
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        calls = record_reports(runtime, monkeypatch)
        async with running_twitch(runtime, fake_twitch):
            await eventually(lambda: states(runtime)["twitch"] == ("connected", ""))
            fake_twitch.refuse_sockets = True  # an outage: the socket drops and no new one can be opened
            await fake_twitch.drop_sockets()
            await eventually(lambda: states(runtime)["twitch"] == ("disconnected", "reconnecting"), within=3)
            tried = fake_twitch.refused_sockets
            await fake_twitch.wait_until(lambda: fake_twitch.refused_sockets >= tried + 3)  # still trying
            assert states(runtime)["twitch"] == ("disconnected", "reconnecting")

            fake_twitch.refuse_sockets = False  # the outage ends: twitchio's next attempt gets a socket
            await fake_twitch.wait_connected()
            await eventually(lambda: states(runtime)["twitch"] == ("connected", ""))
            assert changes(calls, "twitch") == [(True, ""), (False, "reconnecting"), (True, "")]
            await fake_twitch.send_chat("@wickbot still there?", login="alice", user_id="501")
            await fake_twitch.wait_sent(1)  # chat flows again over the replacement socket
        assert states(runtime)["twitch"] == ("disconnected", "stopped")
