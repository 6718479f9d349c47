"""The owner's dashboard: rollups, query plans, escaping, sign-in, forget, the static report and live metrics."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.cli import main as cli_main
from bot.config import ConfigError, config_from_dict
from bot.dashboard import Pages, Sources, dashboard_secret, serve_dashboard
from bot.dashboard.auth import COOKIE_NAME, Authenticator
from bot.dashboard.data import registry_name, sentiment_buckets
from bot.dashboard.insights import AnalysisCache
from bot.dashboard.server import DashboardServer
from bot.metrics import Metrics, percentile
from bot.store import Store
from cogs.admin.progress import TrainingProgress
from cogs.admin.service import ModelService
from cogs.privacy.service import PrivacyService
from tests.dashboard_support import (
    ADAPTER_VERSION,
    BASE_VERSION,
    SECRET,
    XSS_IMG,
    XSS_SCRIPT,
    fill,
    open_store,
    write_registry,
)
from tests.fakes import ScriptedBackend


def _config(tmp_path: Path, **dashboard):
    return config_from_dict({"bot": {"data_dir": str(tmp_path)}, "dashboard": {"enabled": True, **dashboard}})


async def _pages(tmp_path: Path, store: Store, metrics: Metrics | None = None) -> Pages:
    return Pages(
        Sources(
            config=_config(tmp_path), store=store, character="Familiar", metrics=metrics or Metrics(),
            backend=ScriptedBackend(version=ADAPTER_VERSION),
        )
    )  # fmt: skip


async def _rollups(store: Store) -> tuple[dict, dict]:
    hourly = {
        (r["hour"], r["platform"], r["channel_id"]): (r["user_msgs"], r["bot_msgs"])
        for r in await store.fetchall("SELECT * FROM dash_hourly")
    }
    model = {r["model_version"]: tuple(r)[1:] for r in await store.fetchall("SELECT * FROM dash_model")}
    return hourly, model


async def _recomputed(store: Store) -> tuple[dict, dict]:
    hourly = {
        (r[0], r[1], r[2]): (r[3], r[4])
        for r in await store.fetchall(
            "SELECT CAST(created_at / 3600 AS INTEGER), platform, channel_id, sum(role = 'user'), "
            "sum(role != 'user') FROM messages WHERE role != 'system' GROUP BY 1, 2, 3"
        )
    }
    model = {
        r[0]: tuple(r)[1:]
        for r in await store.fetchall(
            "SELECT model_version, count(*), coalesce(sum(latency_ms), 0), count(latency_ms), "
            "sum(coalesce(rating, 0) = 1), sum(coalesce(rating, 0) = -1) FROM messages "
            "WHERE model_version IS NOT NULL AND role NOT IN ('user', 'system') GROUP BY 1"
        )
    }
    return hourly, model


async def test_rollups_stay_exact_through_inserts_ratings_and_deletes(tmp_path):
    async with await open_store(tmp_path / "db.sqlite") as store:
        expected = await fill(store)
        hourly, model = await _rollups(store)
        assert (hourly, model) == await _recomputed(store)
        assert sum(u for u, _ in hourly.values()) == expected["user"]
        assert model[BASE_VERSION][0] == expected["base_replies"]
        assert model[ADAPTER_VERSION][0] == expected["adapter_replies"]
        assert sum(m[3] for m in model.values()) == expected["up"]
        # A rating changes, a reply's version changes, a message is deleted, a person is forgotten.
        await store.write("UPDATE messages SET rating = -1 WHERE rating = 1 AND id % 4 = 0")
        await store.write("UPDATE messages SET rating = NULL WHERE rating = -1 AND id % 5 = 0")
        await store.write("DELETE FROM messages WHERE id % 7 = 0")
        await PrivacyService(store=store, config=_config(tmp_path).privacy).forget("discord", "d-ann")
        assert await _rollups(store) == await _recomputed(store)
        await store.write("DELETE FROM messages")
        assert await _rollups(store) == ({}, {})


async def test_migration_backfills_rows_logged_before_it(tmp_path):
    from tests.dashboard_support import dashboard_migrations

    steps = dashboard_migrations()
    async with await Store.open(tmp_path / "db.sqlite", migrations=steps[:-1]) as store:
        await fill(store)
    async with await Store.open(tmp_path / "db.sqlite", migrations=steps) as store:
        assert await _rollups(store) == await _recomputed(store)
        assert (await _rollups(store))[0]


BOUNDED_SCANS = {"dash_model", "polls", "story_games", "teachings", "held"}


class _Recording:
    """Wraps a store's reads to collect every query a page runs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queries: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def fetchall(self, sql, params=()):
        self.queries.append((sql, tuple(params)))
        return await self.store.fetchall(sql, params)

    async def fetchone(self, sql, params=()):
        self.queries.append((sql, tuple(params)))
        return await self.store.fetchone(sql, params)

    async def fetchval(self, sql, params=()):
        self.queries.append((sql, tuple(params)))
        return await self.store.fetchval(sql, params)


async def test_no_page_scans_the_log(tmp_path):
    """Every query of every page uses an index or a rollup: EXPLAIN QUERY PLAN never says 'SCAN messages'."""
    write_registry(tmp_path, time.time())
    async with await open_store(tmp_path / "db.sqlite") as store:
        await fill(store)
        await store.write("ANALYZE")
        recording = _Recording(store)
        pages = Pages(Sources(config=_config(tmp_path), store=recording, character="Familiar"))  # type: ignore[arg-type]
        await pages.status()
        await pages.models()
        for days in (1, 7, 90):
            await pages.community(days)
        await pages.report(7)
        assert len(recording.queries) > 20
        for sql, params in recording.queries:
            plan = [row[3] for row in await store.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert plan, sql
            for step in plan:
                scanned = re.match(r"SCAN (\S+)", step)
                # Small tables read newest-first with a LIMIT, one row per model version, subquery results.
                assert (
                    scanned is None or scanned.group(1) in BOUNDED_SCANS or step.startswith("SCAN (subquery")
                ), f"{sql}\n-> {plan}"
                if "messages" in step:
                    assert "INDEX" in step, f"{sql}\n-> {plan}"


async def test_user_text_is_escaped_everywhere(tmp_path):
    write_registry(tmp_path, time.time())
    async with await open_store(tmp_path / "db.sqlite") as store:
        await fill(store)
        pages = await _pages(tmp_path, store)
        for html in (
            await pages.status(),
            await pages.models(),
            await pages.community(7),
            await pages.report(7),
        ):
            assert "<script" not in html
            assert "<img" not in html
            assert 'onerror="' not in html  # only ever as text: &#34; instead of a quote
            assert "<b>bold" not in html
        community = await pages.community(7)
        assert (
            "&lt;script&gt;alert(1)&lt;/script&gt;" in community
        )  # a name and a poll question, shown as text
        assert (
            "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in community
        )  # a name, a poll creator, a premise
        assert "Tacos &lt;b&gt;bold&lt;/b&gt;" in community


async def test_views_show_the_numbers(tmp_path):
    write_registry(tmp_path, time.time())
    async with await open_store(tmp_path / "db.sqlite") as store:
        expected = await fill(store)
        pages = await _pages(tmp_path, store)
        view = await pages.community_view(7)
        assert view.user_messages == expected["user"] and view.replies == expected["replies"]
        assert view.people_total == 5 and view.people_by_platform == {"discord": 3, "twitch": 2}
        assert {p.name for p in view.top_people} >= {"Ann", "Bob", "cat_streams"}
        assert any("dragon" in topic for topic, _ in view.topics)
        assert [p for p in view.sentiment if p.mean is not None]
        (poll,) = view.polls
        assert [(o.label, o.votes) for o in poll.options] == [("Pizza", 2), ("Tacos <b>bold</b>", 1)]
        assert poll.voters == 3
        (story,) = view.stories
        assert (story.turns, story.votes, story.voters) == (3, 5, 2)
        models = await pages.data.models()
        by_version = {m.version: m for m in models.models}
        adapter = by_version[ADAPTER_VERSION]
        assert (
            adapter.registry_name == "v0001" and adapter.eval_loss == 2.1 and adapter.mean_latency_ms == 200
        )
        assert by_version[BASE_VERSION].mean_latency_ms == 400
        assert sum(m.up for m in models.models) == expected["up"]
        assert models.active == "v0001"
        assert [e.kind for e in models.events] == ["rejected", "trained", "promoted", "trained"]
        html = await pages.models()
        assert 'data-chart="model-rating"' in html and 'data-label="v0001"' in html


async def test_forgotten_person_leaves_every_view(tmp_path):
    async with await open_store(tmp_path / "db.sqlite") as store:
        await fill(store)
        pages = await _pages(tmp_path, store)
        before = await pages.community(7)
        assert "cat_streams" in before
        topics_before = (await pages.community_view(7)).topics
        await PrivacyService(store=store, config=_config(tmp_path).privacy).forget("twitch", "t-cat")
        after_view = await pages.community_view(7)
        after = await pages.community(7)
        assert "cat_streams" not in after and "cat_streams" not in await pages.report(7)
        assert after_view.people_by_platform["twitch"] == 1
        # "pizza" came from cat's messages only (lines[2] is spoken by people[2] = cat): gone with them.
        assert any("pizza" in t for t, _ in topics_before)
        assert not any("pizza" in t for t, _ in after_view.topics)
        assert (await pages.community_view(7)).polls[0].voters == 3  # the vote stays, anonymised


def test_analysis_cache_is_bounded_and_keyed_by_rows():
    from bot.dashboard.data import TextSample

    clock = [0.0]
    cache = AnalysisCache(max_entries=2, ttl_s=10, clock=lambda: clock[0])
    calls = []
    for ids in ((1,), (2,), (3,), (3,)):
        cache.get_or_compute("t", TextSample(ids, ()), lambda ids=ids: calls.append(ids) or ids)
    assert calls == [(1,), (2,), (3,)] and len(cache) == 2
    clock[0] = 11
    cache.get_or_compute("t", TextSample((3,), ()), lambda: calls.append("again"))
    assert calls[-1] == "again"


# ------------------------------------------------------------------------------------------------ secret and sign-in
def test_secret_is_required_and_long(tmp_path, monkeypatch):
    monkeypatch.delenv("FAMILIAR_DASHBOARD_SECRET", raising=False)
    assert dashboard_secret(config_from_dict({})) is None  # off by default: no secret needed
    with pytest.raises(ConfigError, match="FAMILIAR_DASHBOARD_SECRET"):
        dashboard_secret(_config(tmp_path))
    monkeypatch.setenv("MY_SECRET", "short")
    with pytest.raises(ConfigError, match="shorter than"):
        dashboard_secret(_config(tmp_path, secret_env="MY_SECRET"))
    monkeypatch.setenv("MY_SECRET", SECRET)
    assert dashboard_secret(_config(tmp_path, secret_env="MY_SECRET")) == SECRET
    assert config_from_dict({}).dashboard.host == "127.0.0.1" and not config_from_dict({}).dashboard.enabled


def test_sessions_are_signed_and_expire():
    now = [1000.0]
    auth = Authenticator(SECRET, clock=lambda: now[0], ttl_s=60)
    token = auth.new_session()
    assert auth.check_session(token)
    assert not auth.check_session(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert not Authenticator(SECRET + "x", clock=lambda: now[0]).check_session(token)
    assert not auth.check_session("v1.99999999999.x.y") and not auth.check_session("garbage")
    assert auth.check_bearer(f"Bearer {SECRET}") and not auth.check_bearer(f"Basic {SECRET}")
    assert not auth.check_bearer("Bearer " + SECRET[:-1]) and not auth.check_secret(None)
    now[0] += 61
    assert not auth.check_session(token)


async def test_server_answers_401_and_nothing_else_without_the_secret(tmp_path):
    write_registry(tmp_path, time.time())
    async with await open_store(tmp_path / "db.sqlite") as store:
        await fill(store)
        server = DashboardServer(await _pages(tmp_path, store), SECRET, failed_login_delay_s=0)
        async with TestClient(TestServer(server.app())) as client:
            for path in ("/", "/models", "/community", "/api/status", "/nope"):
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{COOKIE_NAME}=v1.1.2.3"}):
                    r = await client.get(path, headers=headers, allow_redirects=False)
                    body = await r.text()
                    assert r.status == 401, (path, headers)
                    assert "Ann" not in body and "dragon" not in body and "v0001" not in body
                    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            r = await client.get("/", headers={"Accept": "text/html"})
            assert r.status == 401 and 'name="secret"' in await r.text()
            r = await client.post("/login", data={"secret": "wrong"}, allow_redirects=False)
            assert r.status == 401 and COOKIE_NAME not in r.cookies
            # Bearer works for tools.
            r = await client.get("/api/status", headers={"Authorization": f"Bearer {SECRET}"})
            assert r.status == 200 and (await r.json())["serving"] == ADAPTER_VERSION
            # The form sets an HttpOnly, SameSite=Strict session cookie.
            r = await client.post("/login", data={"secret": SECRET}, allow_redirects=False)
            assert r.status == 303 and r.headers["Location"] == "/"
            set_cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and SECRET not in set_cookie
            for path in ("/", "/models", "/community?days=1", "/community?days=abc"):
                r = await client.get(path)
                assert r.status == 200, path
            assert "Ann" in await (await client.get("/community")).text()
            r = await client.post("/logout", allow_redirects=False)
            assert r.status == 303
            client.session.cookie_jar.clear()
            assert (await client.get("/")).status == 401


async def test_serve_dashboard_binds_loopback_and_stops(tmp_path):
    async with await open_store(tmp_path / "db.sqlite") as store:
        sources = Sources(config=_config(tmp_path, port=0), store=store, character="Familiar")
        async with serve_dashboard(sources, SECRET) as server:
            assert server is not None and server.port
            import aiohttp

            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{server.port}/") as r:
                    assert r.status == 401
                async with http.get(
                    f"http://127.0.0.1:{server.port}/", headers={"Authorization": f"Bearer {SECRET}"}
                ) as r:
                    assert r.status == 200
        off = Sources(config=config_from_dict({}), store=store, character="Familiar")
        async with serve_dashboard(off, None) as nothing:
            assert nothing is None


async def test_live_status_reads_metrics_backend_and_retrain(tmp_path):
    metrics = Metrics()
    for ms in range(100, 1100, 100):
        metrics.request_done(ms / 1000)
    metrics.request_failed()
    metrics.platform("discord", connected=True)
    config = config_from_dict({"bot": {"data_dir": str(tmp_path)}, "discord": {"enabled": True}})

    class Models:
        running = True
        last_result = None
        registry = type("R", (), {"active_name": staticmethod(lambda: "v0003")})()
        progress = TrainingProgress(
            phase="training", line="step 3/12 · loss 2.1 · 250 tok/s · ETA 40s", started_by="owner",
            started_at=0.0, step=3, total_steps=12, eta_s=40.0, loss=2.1, tokens_per_s=250.0,
        )  # fmt: skip

    async with await open_store(tmp_path / "db.sqlite") as store:
        pages = Pages(
            Sources(config=config, store=store, character="F", metrics=metrics, backend=ScriptedBackend(),
                    models=Models())
        )  # fmt: skip
        live = pages.live()
        assert live.requests_per_min == 11 and live.failures_per_min == 1
        assert live.p50_ms == 500 and live.p95_ms == 1000 and live.queue_depth == 0
        assert live.retrain is not None and live.retrain.fraction == 0.25
        assert {p.name: p.state for p in live.platforms} == {"discord": "connected", "twitch": "not enabled"}
        html = await pages.status()
        assert 'id="retrain-progress" data-value="0.250"' in html and "v0003" in html
        assert (
            '<span id="retrain-eta">40</span>' in html and '<span id="retrain-phase">training</span>' in html
        )
        assert pages.live().as_json()["retrain"]["eta_s"] == 40.0


async def test_real_model_service_feeds_the_retrain_line(tmp_path):
    config = _config(tmp_path)
    async with await open_store(tmp_path / "db.sqlite") as store:
        from models.persona import default_card_path, load_card

        privacy = PrivacyService(store=store, config=config.privacy)
        models = ModelService(
            config=config, store=store, privacy=privacy, card=load_card(default_card_path())
        )
        pages = Pages(Sources(config=config, store=store, character="F", models=models))
        live = pages.live()
        assert live.retrain is not None and not live.retrain.running and live.registry_active == "base"


def test_metrics_window_and_percentiles():
    now = [0.0]
    m = Metrics(max_samples=5, clock=lambda: now[0])
    assert m.snapshot().p50_ms is None and m.snapshot().requests_per_min == 0
    for i in range(8):
        m.request_done(i)
    snap = m.snapshot()
    assert snap.latency_samples == 5  # the ring buffer keeps the newest five
    assert snap.p50_ms == 5000 and snap.p95_ms == 7000
    now[0] = 120  # past the one-minute rate window, inside the five-minute latency window
    assert m.snapshot().requests_per_min == 0 and m.snapshot().latency_samples == 5
    now[0] = 1000
    assert m.snapshot().latency_samples == 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_helpers():
    assert registry_name("embedded+adapter:v0012") == "v0012"
    assert registry_name("embedded:SmolLM2") is None and registry_name("gguf+adapter:my-lora") is None
    hourly = sentiment_buckets(1, 7200.5)
    assert len(hourly) == 24 and hourly[-1] == (7200, 10800)
    daily = sentiment_buckets(7, 86_400 * 3 + 5)
    assert len(daily) == 7 and daily[-1][1] - daily[-1][0] == 86_400


# ------------------------------------------------------------------------------------------------ the static report
async def test_report_command_writes_one_self_contained_page(tmp_path, monkeypatch, capsys):
    write_registry(tmp_path, time.time())
    async with await open_store(tmp_path / "familiar.db") as store:
        await fill(store)
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[bot]\ndata_dir = "{tmp_path}"\n', encoding="utf-8")
    out = tmp_path / "out" / "report.html"
    # The CLI runs its own event loop: call it from a thread.
    import asyncio

    code = await asyncio.to_thread(cli_main, ["--config", str(config_file), "report", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    html = out.read_text(encoding="utf-8")
    for chart in ("volume", "sentiment", "topics", "model-rating", "model-loss", "poll-1"):
        assert f'data-chart="{chart}"' in html
    assert "<script" not in html and "<link" not in html and "<img" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from anywhere
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    missing = await asyncio.to_thread(
        cli_main, ["--config", str(config_file), "report", "--out", str(out), "--days", "0"]
    )
    assert missing == 2 and "--days" in capsys.readouterr().err


def test_xss_payloads_are_what_the_support_module_logs():
    assert XSS_SCRIPT == "<script>alert(1)</script>" and "onerror" in XSS_IMG


async def test_models_history_comes_from_the_registry_log(tmp_path):
    """Promotions and rollbacks are read from the registry's history, not guessed from reply times."""
    from models.registry import Registry
    from tests.unit.test_registry import add_version

    registry = Registry(tmp_path / "adapters")
    v1, v2 = add_version(registry), add_version(registry)
    registry.activate(v1.name, action="promote", by="owner", detail="held-out loss 2.5 -> 2.1")
    registry.mark(registry.get(v1.name), promoted=True, promoted_at=time.time())  # as ModelService does
    registry.activate(v2.name, action="promote", by="owner")
    registry.activate(v1.name, action="rollback", by="Bob")
    async with await open_store(tmp_path / "db.sqlite") as store:
        pages = await _pages(tmp_path, store)
        models = await pages.data.models()
        pointer = [(e.kind, e.version, e.detail) for e in models.events if e.kind != "trained"]
        assert pointer[0] == ("rollback", "v0001", "from v0002; by Bob")
        assert ("promoted", "v0002", "from v0001; by owner") in pointer
        assert [k for k, v, _ in pointer if v == "v0001"] == ["rollback", "promoted"]  # not twice from meta
        html = await pages.models()
        assert '<span class="pill rollback">rollback</span>' in html and "from v0002; by Bob" in html
