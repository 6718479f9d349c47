"""What the dashboard shows, read from the database and the model registry.

Every query is an index search or reads a rollup kept by migration 0006's triggers; none scans the log
(tests/unit/test_dashboard.py checks the plans). Where SQLite's planner would rather walk a whole index to skip a
sort (a GROUP BY over a year of rows), `INDEXED BY` keeps it on the time-window index. Work is bounded by the
time window and by the `*_MAX` limits below, so a year of log costs what a week of it does. Nothing is cached
here: a forgotten person's rows are gone from the next page.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.store import Store
from cogs.common.held import HeldText, held_text
from models.registry import HistoryEntry, Registry, Version
from models.training.gate import GateDecision

# The community view's periods in days; one day is drawn per hour, longer ones per hour or day.
WINDOWS_DAYS = (1, 7, 30, 90)
TOP_PEOPLE_MAX = 10
TOP_CHANNELS_MAX = 6  # channels drawn apart in the volume chart; the rest are summed as "other"
POLLS_MAX = 20
STORIES_MAX = 20
TEACHINGS_MAX = 50  # newest moderators' corrections shown on the models page
HELD_MAX = 50  # newest held texts shown on the status page (the table keeps `safety.held_keep`)
TOPIC_SAMPLE_MAX = 800  # newest user messages read for topics (keyword extraction costs ~0.4 ms per message)
SENTIMENT_SAMPLE_PER_BUCKET = 150  # newest user messages scored per bucket of the sentiment trend
_ADAPTER_VERSION = re.compile(r"adapter:(v\d{4,})$")


@dataclass(frozen=True)
class VolumeRow:
    hour: int  # unix time // 3600
    platform: str
    channel_id: str
    user_msgs: int
    bot_msgs: int


@dataclass(frozen=True)
class Person:
    platform: str
    name: str
    messages: int


@dataclass(frozen=True)
class TextSample:
    ids: tuple[int, ...]  # what the sample is made of: a changed sample (a forgotten person) changes this
    texts: tuple[str, ...]


@dataclass(frozen=True)
class PollOption:
    position: int
    label: str
    votes: int


@dataclass(frozen=True)
class PollSummary:
    id: int
    question: str
    status: str
    multi: bool
    created_at: float
    closes_at: float
    creator_name: str
    voters: int
    options: tuple[PollOption, ...]

    @property
    def total_votes(self) -> int:
        return sum(o.votes for o in self.options)


@dataclass(frozen=True)
class StorySummary:
    id: int
    platform: str
    channel_id: str
    premise: str
    narrator: str
    status: str
    started_by_name: str
    created_at: float
    ended_at: float | None
    ended_reason: str | None
    turns: int
    votes: int
    voters: int
    writeins: int


@dataclass(frozen=True)
class ModelStats:
    """One served model version, as the log and the registry know it."""

    version: str  # the log's model_version, e.g. "embedded+adapter:v0002"
    registry_name: str | None  # "v0002" when it is a registry version
    replies: int
    mean_latency_ms: float | None
    up: int
    down: int
    first_at: float | None
    last_at: float | None
    eval_loss: float | None  # held-out loss measured when it was trained (the gate's candidate loss)
    parent_loss: float | None  # the serving model's loss on the same held-out set, before it
    # The gate's other two figures (models/training/gate.py), this version's and the one it replaced; None for
    # versions trained before the gate measured them.
    general_loss: float | None = None  # loss on the general-chat reference
    parent_general_loss: float | None = None
    persona_score: float | None = None  # share of sampled replies faithful to the card
    parent_persona_score: float | None = None

    @property
    def rated(self) -> int:
        return self.up + self.down

    @property
    def up_ratio(self) -> float | None:
        return self.up / self.rated if self.rated else None


@dataclass(frozen=True)
class RegistryEvent:
    at: float
    version: str
    kind: str  # trained | rejected (from the versions) | promoted | rollback | activated (from the history)
    detail: str


@dataclass(frozen=True)
class TeachingSummary:
    """A reply a moderator corrected (cogs/teach): what the character said and what it was taught to say."""

    id: int
    created_at: float
    platform: str
    teacher_name: str
    original: str
    taught: str


@dataclass(frozen=True)
class ModelsView:
    models: tuple[ModelStats, ...]
    events: tuple[RegistryEvent, ...]
    active: str | None  # the registry's pointer (None = base model)
    registry_versions: int
    teachings: tuple[TeachingSummary, ...] = ()  # newest first, at most TEACHINGS_MAX


@dataclass(frozen=True)
class CommunityView:
    days: int
    since: float
    until: float
    volume: tuple[VolumeRow, ...]
    people_total: int
    people_by_platform: dict[str, int]
    top_people: tuple[Person, ...]
    polls: tuple[PollSummary, ...]
    stories: tuple[StorySummary, ...]
    topics: tuple[tuple[str, float], ...] = ()
    sentiment: tuple[SentimentPoint, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user_messages(self) -> int:
        return sum(r.user_msgs for r in self.volume)

    @property
    def replies(self) -> int:
        return sum(r.bot_msgs for r in self.volume)


@dataclass(frozen=True)
class SentimentPoint:
    start: float
    end: float
    mean: float | None  # VADER compound in [-1, 1] over the sample; None without messages
    positive: int
    negative: int
    scored: int  # messages scored (a sample of at most SENTIMENT_SAMPLE_PER_BUCKET)
    messages: int  # user messages in the bucket (from the rollup)


def registry_name(model_version: str) -> str | None:
    """'embedded+adapter:v0002' -> 'v0002'; a base model or a foreign adapter path -> None."""
    match = _ADAPTER_VERSION.search(model_version)
    return match.group(1) if match else None


def sentiment_buckets(days: int, now: float) -> list[tuple[float, float]]:
    """Hourly buckets for one day, daily ones otherwise; aligned to whole hours/days (UTC), oldest first."""
    step = 3600 if days == 1 else 86_400
    end = (int(now) // step + 1) * step
    count = 24 if days == 1 else days
    return [(end - (count - i) * step, end - (count - i - 1) * step) for i in range(count)]


class DashboardData:
    """The dashboard's reads over one store and the adapter registry."""

    def __init__(self, store: Store, *, registry_root: Path | None = None) -> None:
        self._store = store
        self._registry = Registry(registry_root) if registry_root is not None else None

    # ------------------------------------------------------------------------------------------------ totals
    async def recent_counts(self, now: float | None = None) -> dict[str, int]:
        """User messages and replies in the last hour and the last 24 hours (from the rollup)."""
        hour = int(now if now is not None else time.time()) // 3600
        row = await self._store.fetchone(
            "SELECT coalesce(sum(CASE WHEN hour >= ? THEN user_msgs END), 0) AS u1, "
            "coalesce(sum(CASE WHEN hour >= ? THEN bot_msgs END), 0) AS b1, "
            "coalesce(sum(user_msgs), 0) AS u24, coalesce(sum(bot_msgs), 0) AS b24 "
            "FROM dash_hourly WHERE hour >= ?",
            (hour, hour, hour - 23),
        )
        assert row is not None  # an aggregate always answers one row
        return {"user_1h": row["u1"], "bot_1h": row["b1"], "user_24h": row["u24"], "bot_24h": row["b24"]}

    # ------------------------------------------------------------------------------------------------ models
    async def models(self) -> ModelsView:
        rows = await self._store.fetchall(
            "SELECT model_version, replies, latency_sum, latency_n, up, down FROM dash_model"
        )
        versions = self._registry.versions() if self._registry is not None else []
        history = self._registry.history() if self._registry is not None else []
        metas = {v.name: v.meta for v in versions}
        stats = []
        for row in rows:
            version = row["model_version"]
            first = await self._store.fetchval(
                "SELECT min(created_at) FROM messages WHERE model_version = ?", (version,)
            )
            last = await self._store.fetchval(
                "SELECT max(created_at) FROM messages WHERE model_version = ?", (version,)
            )
            name = registry_name(version)
            gate = GateDecision.from_meta(metas.get(name, {})) if name else None
            stats.append(
                ModelStats(
                    version=version,
                    registry_name=name,
                    replies=row["replies"],
                    mean_latency_ms=row["latency_sum"] / row["latency_n"] if row["latency_n"] else None,
                    up=row["up"],
                    down=row["down"],
                    first_at=first,
                    last_at=last,
                    eval_loss=gate.candidate_loss if gate else None,
                    parent_loss=gate.serving_loss if gate else None,
                    general_loss=gate.general_candidate if gate else None,
                    parent_general_loss=gate.general_serving if gate else None,
                    persona_score=gate.persona_candidate if gate else None,
                    parent_persona_score=gate.persona_serving if gate else None,
                )
            )
        stats.sort(key=lambda s: (s.first_at or 0.0, s.version))
        active = self._registry.active_name() if self._registry is not None else None
        return ModelsView(
            models=tuple(stats),
            events=tuple(_registry_events(versions, history)),
            active=active,
            registry_versions=len(versions),
            teachings=tuple(await self.teachings()),
        )

    async def teachings(self) -> list[TeachingSummary]:
        """The newest teachings (ids grow with time), at most `TEACHINGS_MAX`."""
        rows = await self._store.fetchall(
            "SELECT id, created_at, platform, teacher_name, original, taught FROM teachings ORDER BY id DESC LIMIT ?",
            (TEACHINGS_MAX,),
        )
        return [
            TeachingSummary(
                id=r["id"],
                created_at=r["created_at"],
                platform=r["platform"],
                teacher_name=r["teacher_name"],
                original=r["original"],
                taught=r["taught"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------------------------------------ safety
    async def held(self) -> list[HeldText]:
        """The newest texts the moderation step held (never posted), at most `HELD_MAX`, newest first."""
        rows = await self._store.fetchall(
            "SELECT id, created_at, platform, channel_id, kind, text, reasons, source, author_name FROM held "
            "ORDER BY created_at DESC LIMIT ?",
            (HELD_MAX,),
        )
        return [held_text(row) for row in rows]

    # ------------------------------------------------------------------------------------------------ community
    async def community(self, days: int, now: float | None = None) -> CommunityView:
        """Everything but topics and sentiment (see `insights`, which needs the text samples below)."""
        until = now if now is not None else time.time()
        since = until - days * 86_400
        first_hour = int(since) // 3600
        volume = [
            VolumeRow(r["hour"], r["platform"], r["channel_id"], r["user_msgs"], r["bot_msgs"])
            for r in await self._store.fetchall(
                "SELECT hour, platform, channel_id, user_msgs, bot_msgs FROM dash_hourly WHERE hour >= ? "
                "ORDER BY hour",
                (first_hour,),
            )
        ]
        by_platform = {
            r["platform"]: r["people"]
            for r in await self._store.fetchall(
                "SELECT platform, count(DISTINCT author_id) AS people FROM messages INDEXED BY dash_messages_people "
                "WHERE role = 'user' AND created_at >= ? GROUP BY platform ORDER BY platform",
                (since,),
            )
        }
        top = [
            Person(r["platform"], r["name"], r["n"])
            for r in await self._store.fetchall(
                "SELECT platform, author_id, max(author_name) AS name, count(*) AS n "
                "FROM messages INDEXED BY dash_messages_people "
                "WHERE role = 'user' AND created_at >= ? GROUP BY platform, author_id "
                "ORDER BY n DESC, name LIMIT ?",
                (since, TOP_PEOPLE_MAX),
            )
        ]
        return CommunityView(
            days=days,
            since=since,
            until=until,
            volume=tuple(volume),
            people_total=sum(by_platform.values()),  # one person per platform account
            people_by_platform=by_platform,
            top_people=tuple(top),
            polls=tuple(await self.polls()),
            stories=tuple(await self.stories()),
        )

    async def topic_sample(self, since: float) -> TextSample:
        rows = await self._store.fetchall(
            "SELECT id, content FROM messages WHERE role = 'user' AND created_at >= ? "
            "ORDER BY created_at DESC LIMIT ?",
            (since, TOPIC_SAMPLE_MAX),
        )
        return TextSample(tuple(r["id"] for r in rows), tuple(r["content"] for r in rows))

    async def sentiment_samples(self, buckets: list[tuple[float, float]]) -> list[tuple[TextSample, int]]:
        """Per bucket: the newest user messages (a bounded sample) and the bucket's user message count."""
        out = []
        for start, end in buckets:
            rows = await self._store.fetchall(
                "SELECT id, content FROM messages WHERE role = 'user' AND created_at >= ? AND created_at < ? "
                "ORDER BY created_at DESC LIMIT ?",
                (start, end, SENTIMENT_SAMPLE_PER_BUCKET),
            )
            total = await self._store.fetchval(
                "SELECT coalesce(sum(user_msgs), 0) FROM dash_hourly WHERE hour >= ? AND hour < ?",
                (int(start) // 3600, int(end) // 3600),
            )
            out.append((TextSample(tuple(r["id"] for r in rows), tuple(r["content"] for r in rows)), total))
        return out

    async def polls(self) -> list[PollSummary]:
        polls = await self._store.fetchall(
            "SELECT id, question, multi, status, created_at, closes_at, creator_name FROM polls "
            "ORDER BY id DESC LIMIT ?",
            (POLLS_MAX,),
        )
        if not polls:
            return []
        ids = [p["id"] for p in polls]
        marks = ", ".join("?" for _ in ids)
        options: dict[int, list[tuple[int, str]]] = {}
        for r in await self._store.fetchall(
            f"SELECT poll_id, position, label FROM poll_options WHERE poll_id IN ({marks}) ORDER BY poll_id, position",
            ids,
        ):
            options.setdefault(r["poll_id"], []).append((r["position"], r["label"]))
        tallies = {
            (r["poll_id"], r["option"]): r["n"]
            for r in await self._store.fetchall(
                f"SELECT poll_id, option, count(*) AS n FROM poll_votes WHERE poll_id IN ({marks}) "
                "GROUP BY poll_id, option",
                ids,
            )
        }
        voters = {
            r["poll_id"]: r["n"]
            for r in await self._store.fetchall(
                "SELECT poll_id, count(*) AS n FROM (SELECT DISTINCT poll_id, platform, user_id FROM poll_votes "
                f"WHERE poll_id IN ({marks})) GROUP BY poll_id",
                ids,
            )
        }
        return [
            PollSummary(
                id=p["id"],
                question=p["question"],
                status=p["status"],
                multi=bool(p["multi"]),
                created_at=p["created_at"],
                closes_at=p["closes_at"],
                creator_name=p["creator_name"],
                voters=voters.get(p["id"], 0),
                options=tuple(
                    PollOption(pos, label, tallies.get((p["id"], pos), 0))
                    for pos, label in options.get(p["id"], [])
                ),
            )
            for p in polls
        ]

    async def stories(self) -> list[StorySummary]:
        games = await self._store.fetchall(
            "SELECT id, platform, channel_id, premise, narrator, status, started_by_name, created_at, ended_at, "
            "ended_reason FROM story_games ORDER BY id DESC LIMIT ?",
            (STORIES_MAX,),
        )
        if not games:
            return []
        ids = [g["id"] for g in games]
        marks = ", ".join("?" for _ in ids)
        turns = {
            r["game_id"]: r["n"]
            for r in await self._store.fetchall(
                f"SELECT game_id, count(*) AS n FROM story_turns WHERE game_id IN ({marks}) AND status != 'undone' "
                "GROUP BY game_id",
                ids,
            )
        }
        votes = {
            r["game_id"]: (r["votes"], r["voters"])
            for r in await self._store.fetchall(
                "SELECT t.game_id, count(*) AS votes, count(DISTINCT v.platform || ':' || v.user_id) AS voters "
                f"FROM story_turns t JOIN story_votes v ON v.turn_id = t.id WHERE t.game_id IN ({marks}) "
                "GROUP BY t.game_id",
                ids,
            )
        }
        writeins = {
            r["game_id"]: r["n"]
            for r in await self._store.fetchall(
                "SELECT t.game_id, count(*) AS n FROM story_turns t JOIN story_options o ON o.turn_id = t.id "
                f"WHERE t.game_id IN ({marks}) AND o.kind != 'choice' GROUP BY t.game_id",
                ids,
            )
        }
        return [
            StorySummary(
                id=g["id"],
                platform=g["platform"],
                channel_id=g["channel_id"],
                premise=g["premise"],
                narrator=g["narrator"],
                status=g["status"],
                started_by_name=g["started_by_name"],
                created_at=g["created_at"],
                ended_at=g["ended_at"],
                ended_reason=g["ended_reason"],
                turns=turns.get(g["id"], 0),
                votes=votes.get(g["id"], (0, 0))[0],
                voters=votes.get(g["id"], (0, 0))[1],
                writeins=writeins.get(g["id"], 0),
            )
            for g in games
        ]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


HISTORY_KINDS = {"promote": "promoted", "rollback": "rollback", "activate": "activated"}


def _registry_events(versions: list[Version], history: list[HistoryEntry]) -> list[RegistryEvent]:
    """Trained / rejected events from the versions' metadata and pointer changes from the history, newest first.

    A version promoted before the registry kept a history (its `promoted_at` but no history entry) still shows.
    """
    events = []
    for entry in history:
        detail = f"from {entry.previous or 'base'}"
        if entry.detail:
            detail = f"{detail}; {entry.detail}"
        if entry.by:
            detail = f"{detail}; by {entry.by}"
        kind = HISTORY_KINDS.get(entry.action, entry.action)
        events.append(RegistryEvent(entry.at, entry.version or "base", kind, detail))
    recorded = {entry.version for entry in history if entry.action == "promote"}
    for v in versions:
        meta = v.meta
        gate = GateDecision.from_meta(meta)
        created = _number(meta.get("created_at"))
        reasons = meta.get("gate", {}).get("reasons", []) if isinstance(meta.get("gate"), dict) else []
        if created is not None:
            parts = [gate.figures().replace(" -> ", " → ")] if gate is not None else []
            dataset = meta.get("dataset")
            if isinstance(dataset, dict) and dataset.get("summary"):
                parts.append(f"learnt from {dataset['summary']}")
            if meta.get("requested_by"):
                parts.append(f"requested by {meta['requested_by']}")
            events.append(RegistryEvent(created, v.name, "trained", "; ".join(parts)))
        promoted_at = _number(meta.get("promoted_at"))
        if promoted_at is not None:
            if v.name not in recorded:
                events.append(RegistryEvent(promoted_at, v.name, "promoted", "passed the gate and went live"))
        elif created is not None and not meta.get("promoted"):
            reason = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else ""
            events.append(
                RegistryEvent(created + 0.001, v.name, "rejected", reason or "did not pass the gate")
            )
    events.sort(key=lambda e: e.at, reverse=True)
    return events
