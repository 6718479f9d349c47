"""Each page: gather its data, run the text analysis off the event loop, render. Shared by the server, the static
report and the benchmark, so all three show (and time) the same thing."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from bot.config import Config
from bot.dashboard.data import WINDOWS_DAYS, CommunityView, DashboardData, sentiment_buckets
from bot.dashboard.insights import AnalysisCache, analyse
from bot.dashboard.render import render_community, render_models, render_report, render_status
from bot.dashboard.status import LiveStatus, live_status, offline_status
from bot.metrics import Metrics
from bot.store import Store


@dataclass(frozen=True)
class Sources:
    """What the dashboard reads: the database always; the live parts only inside the running bot."""

    config: Config
    store: Store
    character: str
    metrics: Metrics | None = None
    backend: Any = None
    models: Any = None  # cogs.admin.service.ModelService (retrain progress, registry pointer)


class Pages:
    def __init__(self, sources: Sources, *, cache: AnalysisCache | None = None) -> None:
        self.sources = sources
        self.data = DashboardData(sources.store, registry_root=sources.config.data_dir / "adapters")
        self.cache = cache if cache is not None else AnalysisCache()

    def live(self) -> LiveStatus:
        s = self.sources
        return live_status(
            config=s.config, metrics=s.metrics, backend=s.backend, models=s.models, store=s.store
        )

    async def status(self) -> str:
        counts = await self.data.recent_counts()
        held = await self.data.held()
        return render_status(self.live(), counts, character=self.sources.character, held=held)

    async def models(self) -> str:
        return render_models(await self.data.models(), character=self.sources.character)

    async def community_view(self, days: int) -> CommunityView:
        view = await self.data.community(days)
        topic_sample = await self.data.topic_sample(view.since)
        buckets = sentiment_buckets(days, view.until)
        samples = await self.data.sentiment_samples(buckets)
        per_bucket = [(bucket, sample, n) for bucket, (sample, n) in zip(buckets, samples, strict=True)]
        topics, points = await asyncio.to_thread(analyse, self.cache, topic_sample, per_bucket)
        return dataclasses.replace(view, topics=topics, sentiment=points)

    async def community(self, days: int) -> str:
        view = await self.community_view(days)
        return render_community(view, character=self.sources.character, windows=WINDOWS_DAYS)

    async def report(self, days: int) -> str:
        """Every view on one static page (no live numbers: a report is read without the bot)."""
        models = await self.data.models()
        status = offline_status(self.sources.config, models.active)
        counts = await self.data.recent_counts()
        community = await self.community_view(days)
        held = await self.data.held()
        return render_report(status, counts, models, community, character=self.sources.character, held=held)
