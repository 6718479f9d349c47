"""Twitch under stress and failure: a 200-message burst, a dropped EventSub socket, 429s, bad and refreshed tokens."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from bot.platforms.twitch.pacing import PacerSettings
from bot.platforms.twitch.platform import TwitchStartError, run_twitch
from bot.platforms.twitch.tokens import KV_PREFIX
from bot.runtime import open_runtime
from tests.e2e.twitch_harness import ACCELERATION, accelerated_clock, running_twitch, twitch_config
from tests.fakes import ScriptedBackend

ENV_TOKEN = "fake-bot-token-0123456789"
ENV_REFRESH = "fake-bot-refresh-0123456789"


@pytest.fixture
def config(tmp_path):
    return twitch_config(str(tmp_path / "data"))


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def pacer_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("twitch-pacer") and not t.done()}


async def test_burst_of_200_stays_under_20_per_30s_and_leaves_no_task(fake_twitch, config):
    counter = iter(range(10_000))
    backend = ScriptedBackend(respond=lambda request: f"Answer number {next(counter)}.")
    # 30 s of pacer time last 0.5 s here; stale after 60 pacer-seconds (1 s).
    options = {"pacer_settings": PacerSettings(max_age_s=60.0, queue_per_channel=20), **accelerated_clock()}
    async with open_runtime(config, backend=backend) as runtime:
        async with running_twitch(runtime, fake_twitch, **options) as bot:
            ids = [
                await fake_twitch.send_chat(f"!ask question {n}", login=f"viewer{n}", user_id=str(10_000 + n))
                for n in range(200)
            ]
            await fake_twitch.wait_sent(20)
            await asyncio.sleep(2.5)  # five windows: everything left is answered or stale
            sent = list(fake_twitch.sent)
            stats = bot.pacer.stats
            waiting = bot.pacer.queue_depth("100")
            assert pacer_tasks()  # the workers run while the bot does
        assert not pacer_tasks()
    window_wall_s = 30.0 / ACCELERATION
    assert max_in_window([s.at for s in sent], window_wall_s) <= 20
    assert 20 <= len(sent) < 200
    assert ids[-1] in {s.reply_parent_message_id for s in sent}  # the freshest question got its answer
    assert stats.max_queue_depth <= 20
    assert stats.sent == len(sent)
    assert stats.dropped_overflow + stats.dropped_stale + stats.sent + stats.failed + waiting == 200
    assert len(backend.requests) == len(sent)  # nothing was generated only to be thrown away


async def test_dropped_eventsub_socket_reconnects_and_answers(fake_twitch, config):
    backend = ScriptedBackend(["Before the storm.", "After the storm."])
    async with open_runtime(config, backend=backend) as runtime, running_twitch(runtime, fake_twitch):
        await fake_twitch.send_chat("!ask before?", login="ann", user_id="701")
        await fake_twitch.wait_sent(1)
        old_sessions = set(fake_twitch.sessions)
        await fake_twitch.drop_sockets()
        await fake_twitch.wait_until(lambda: bool(set(fake_twitch.sessions) - old_sessions), within=15)
        await fake_twitch.wait_connected()
        assert fake_twitch.connections == 2
        await fake_twitch.send_chat("!ask after?", login="ann", user_id="701")
        sent = await fake_twitch.wait_sent(2)
        assert sent[1].message == "After the storm."


async def test_helix_429_is_survived(fake_twitch, config):
    backend = ScriptedBackend(["Patience.", "Still here."])
    fake_twitch.fail_chat_with_429 = 2
    options = {"pacer_settings": PacerSettings(retry_after_s=0.05)}
    async with (
        open_runtime(config, backend=backend) as runtime,
        running_twitch(runtime, fake_twitch, **options) as bot,
    ):
        first = await fake_twitch.send_chat("!ask are you there?", login="bea", user_id="702")
        (sent,) = await fake_twitch.wait_sent(1)
        assert sent.message == "Patience." and sent.reply_parent_message_id == first
        assert bot.pacer.stats.rate_limited == 2
        await fake_twitch.send_chat("!ask and now?", login="bea", user_id="702")
        sent_all = await fake_twitch.wait_sent(2)
        assert sent_all[1].message == "Still here."
        await runtime.store.flush()
        rows = await runtime.log.recent("twitch:streamer", 10)
        assert [r.platform_message_id for r in rows if r.role == "assistant"] == [
            s.message_id for s in sent_all
        ]


def _no_secrets(text: str, fake) -> None:
    for secret in (fake.client_secret, ENV_TOKEN, ENV_REFRESH):
        assert secret not in text


async def test_bad_client_secret_is_a_clear_error_without_secrets(fake_twitch, config, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", "wrong-secret-value-42")
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        with pytest.raises(TwitchStartError) as info:
            await asyncio.wait_for(run_twitch(runtime, asyncio.Event()), 10)
    message = str(info.value)
    assert "TWITCH_CLIENT_SECRET" in message and "rejected" in message
    assert "wrong-secret-value-42" not in message and "wrong-secret-value-42" not in caplog.text
    assert not pacer_tasks()


async def test_bad_user_token_is_a_clear_error_without_secrets(fake_twitch, config, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TWITCH_BOT_TOKEN", "expired-token-value-77")
    monkeypatch.setenv("TWITCH_BOT_REFRESH_TOKEN", "revoked-refresh-value-77")
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        with pytest.raises(TwitchStartError) as info:
            await asyncio.wait_for(run_twitch(runtime, asyncio.Event()), 10)
    message = str(info.value)
    assert "TWITCH_BOT_TOKEN" in message and "TWITCH_BOT_REFRESH_TOKEN" in message
    for text in (message, caplog.text):
        assert "expired-token-value-77" not in text and "revoked-refresh-value-77" not in text
        _no_secrets(text, fake_twitch)


async def test_missing_environment_names_the_variables(fake_twitch, config, monkeypatch):
    monkeypatch.delenv("TWITCH_BOT_REFRESH_TOKEN")
    monkeypatch.delenv("TWITCH_CLIENT_SECRET")
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        with pytest.raises(TwitchStartError, match="TWITCH_CLIENT_SECRET, TWITCH_BOT_REFRESH_TOKEN"):
            await run_twitch(runtime, asyncio.Event())


async def test_refreshed_token_is_kept_in_the_database_and_used_next_time(fake_twitch, config, caplog):
    caplog.set_level(logging.DEBUG)
    fake_twitch.revoke(ENV_TOKEN)  # expired: twitchio refreshes it with the refresh token at start
    async with open_runtime(config, backend=ScriptedBackend(default="Fresh.")) as runtime:
        async with running_twitch(runtime, fake_twitch):
            await fake_twitch.send_chat("!ask still there?", login="cid", user_id="703")
            await fake_twitch.wait_sent(1)
        stored = json.loads(await runtime.store.kv_get(KV_PREFIX + fake_twitch.bot.id))
    assert stored["token"] != ENV_TOKEN and stored["token"] in fake_twitch.tokens
    assert ENV_REFRESH not in fake_twitch.refresh_tokens  # the environment's refresh token is used up
    # aiosqlite logs SQL parameters at DEBUG; bot.cli.configure_logging keeps it at WARNING or above.
    for record in [r for r in caplog.records if not r.name.startswith("aiosqlite")]:
        for secret in (stored["token"], stored["refresh"], ENV_TOKEN, ENV_REFRESH):
            assert secret not in record.getMessage()

    # A restart with the same (now stale) environment uses the stored pair and needs no refresh.
    before = fake_twitch.requests.count(("POST", "/oauth2/token"))
    async with open_runtime(config, backend=ScriptedBackend(default="Again.")) as runtime:
        async with running_twitch(runtime, fake_twitch):
            await fake_twitch.send_chat("!ask and now?", login="cid", user_id="703")
            await fake_twitch.wait_sent(2)
    assert fake_twitch.requests.count(("POST", "/oauth2/token")) == before + 1  # only the app token


async def test_stop_event_stops_the_bot_cleanly(fake_twitch, config):
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_twitch(runtime, stop))
        await fake_twitch.wait_connected()
        stop.set()
        await asyncio.wait_for(task, 10)
        assert task.exception() is None
        assert not pacer_tasks()
        await fake_twitch.wait_until(lambda: not fake_twitch.sessions, within=5)


async def test_a_failed_platform_leaves_twitch_running(fake_twitch, config, caplog):
    from bot import app

    async def broken_platform() -> None:
        raise RuntimeError("login failed: the token was rejected")

    async with open_runtime(config, backend=ScriptedBackend(default="Still chatting.")) as runtime:
        stop = asyncio.Event()
        bad = asyncio.create_task(app._run_platform("Other", broken_platform()))
        good = asyncio.create_task(app._run_platform("Twitch", run_twitch(runtime, stop)))
        assert await bad is False
        assert "Other is not running: login failed" in caplog.text
        await fake_twitch.wait_connected()
        await fake_twitch.send_chat("!ask are you alive?", login="dan", user_id="704")
        await fake_twitch.wait_sent(1)
        stop.set()
        assert await asyncio.wait_for(good, 10) is True


async def test_twitch_with_bad_credentials_is_reported_and_contained(
    fake_twitch, config, monkeypatch, caplog
):
    from bot import app

    monkeypatch.setenv("TWITCH_BOT_TOKEN", "nope-token-99")
    monkeypatch.setenv("TWITCH_BOT_REFRESH_TOKEN", "nope-refresh-99")
    async with open_runtime(config, backend=ScriptedBackend()) as runtime:
        ok = await asyncio.wait_for(app._run_platform("Twitch", run_twitch(runtime, asyncio.Event())), 10)
    assert ok is False
    assert "Twitch is not running: Twitch login failed" in caplog.text
    assert "nope-token-99" not in caplog.text and "nope-refresh-99" not in caplog.text
