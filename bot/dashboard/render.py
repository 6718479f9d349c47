"""Pages as HTML: view data -> charts -> Jinja templates with autoescaping on for every value.

Autoescaping is the rule, not a habit: user text (messages, names, poll questions, story premises) reaches the
templates as plain `str` and is escaped by Jinja; only the SVG charts (escaped in `charts.py`) are `Markup`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from bot.dashboard import charts
from bot.dashboard.data import TOP_CHANNELS_MAX, CommunityView, ModelsView
from bot.dashboard.status import LiveStatus
from cogs.common.held import HeldText

HOURLY_MAX_DAYS = 7  # longer windows are drawn per day


def _when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "—" if ts is None else time.strftime(fmt, time.localtime(ts))


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _fixed(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bot.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, ms=_ms, pct=_pct, fixed=_fixed)
    return env


_ENV = _environment()


def channel_label(platform: str, channel_id: str) -> str:
    return f"{platform} #{channel_id}"


def volume_chart(view: CommunityView) -> Markup:
    """Messages (people's and the character's) per hour, or per day for long windows, stacked by channel."""
    hourly = view.days <= HOURLY_MAX_DAYS
    step_h = 1 if hourly else 24
    first = int(view.since) // 3600
    last = int(view.until) // 3600
    if not hourly:  # whole local days would need tz maths; UTC-aligned 24 h buckets are honest enough
        first = first - first % 24
    n = (last - first) // step_h + 1
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for r in view.volume:
        totals[(r.platform, r.channel_id)] += r.user_msgs + r.bot_msgs
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    shown = ranked[:TOP_CHANNELS_MAX]
    index = {key: i for i, key in enumerate(shown)}
    has_other = len(ranked) > len(shown)
    values = [[0] * n for _ in range(len(shown) + (1 if has_other else 0))]
    for r in view.volume:
        slot = (r.hour - first) // step_h
        if 0 <= slot < n:
            values[index.get((r.platform, r.channel_id), len(shown))][slot] += r.user_msgs + r.bot_msgs
    labels = [_when((first + i * step_h) * 3600, "%a %H:00" if hourly else "%b %d") for i in range(n)]
    names = [channel_label(*key) for key in shown] + (["other channels"] if has_other else [])
    title = f"Messages per {'hour' if hourly else 'day'} by channel (people and the character)"
    return charts.stacked_bars("volume", title, labels, list(zip(names, values, strict=True)))


def sentiment_chart(view: CommunityView) -> Markup:
    fmt = "%H:00" if view.days == 1 else "%b %d"
    points = [(_when(p.start, fmt), p.mean) for p in view.sentiment]
    return charts.line(
        "sentiment", "Mood of people's messages (VADER compound, −1 … +1)", points, y_min=-1, y_max=1
    )


def model_charts(view: ModelsView) -> list[Markup]:
    labels = [m.registry_name or m.version for m in view.models]
    return [
        charts.bars(
            "model-rating",
            "👍 share of rated replies",
            [(label, m.up_ratio) for label, m in zip(labels, view.models, strict=True)],
            fmt=lambda v: f"{v * 100:.0f}%",
            y_max=1.0,
        ),
        charts.bars(
            "model-replies",
            "Replies served",
            [(label, float(m.replies)) for label, m in zip(labels, view.models, strict=True)],
            fmt=lambda v: f"{v:,.0f}",
        ),
        charts.bars(
            "model-latency",
            "Mean reply latency (ms)",
            [(label, m.mean_latency_ms) for label, m in zip(labels, view.models, strict=True)],
            fmt=lambda v: f"{v:,.0f}",
        ),
        charts.bars(
            "model-loss",
            "Held-out loss when trained (lower is better)",
            [(label, m.eval_loss) for label, m in zip(labels, view.models, strict=True)],
            fmt=lambda v: f"{v:.3f}",
        ),
    ]


@dataclass(frozen=True)
class Page:
    title: str
    active: str  # nav item
    refresh_s: int | None = None


def _community_context(view: CommunityView) -> dict[str, Any]:
    channels: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in view.volume:
        channels[(r.platform, r.channel_id)][0] += r.user_msgs
        channels[(r.platform, r.channel_id)][1] += r.bot_msgs
    channel_rows = sorted(
        ((channel_label(*k), v[0], v[1]) for k, v in channels.items()),
        key=lambda row: (-(row[1] + row[2]), row[0]),
    )
    return {
        "community": view,
        "volume_chart": volume_chart(view),
        "sentiment_chart": sentiment_chart(view),
        "topics_chart": charts.hbars(
            "topics", [(t, round(score, 3)) for t, score in view.topics], fmt=lambda v: f"{v:.2f}"
        ),
        "poll_charts": {
            p.id: charts.hbars(
                f"poll-{p.id}", [(o.label, float(o.votes)) for o in p.options], fmt=lambda v: f"{v:.0f}"
            )
            for p in view.polls
        },
        "channel_rows": channel_rows,
    }


def render_login(*, error: str | None = None) -> str:
    return _ENV.get_template("login.html").render(
        page=Page("Sign in", ""), error=error, report=False, character="dashboard"
    )


def render_status(
    status: LiveStatus, counts: dict[str, int], *, character: str, held: Sequence[HeldText] = ()
) -> str:
    return _ENV.get_template("status.html").render(
        page=Page("Live status", "status", refresh_s=10), status=status, counts=counts, character=character,
        report=False, held=held,
    )  # fmt: skip


def render_models(view: ModelsView, *, character: str) -> str:
    return _ENV.get_template("models.html").render(
        page=Page("Model versions", "models"), models=view, model_charts=model_charts(view), character=character,
        report=False,
    )  # fmt: skip


def render_community(view: CommunityView, *, character: str, windows: tuple[int, ...]) -> str:
    return _ENV.get_template("community.html").render(
        page=Page("Community", "community"), windows=windows, character=character, report=False,
        **_community_context(view),
    )  # fmt: skip


def render_report(
    status: LiveStatus,
    counts: dict[str, int],
    models: ModelsView,
    community: CommunityView,
    *,
    character: str,
    held: Sequence[HeldText] = (),
) -> str:
    return _ENV.get_template("report.html").render(
        page=Page("Report", ""), status=status, counts=counts, models=models, model_charts=model_charts(models),
        character=character, report=True, windows=(), held=held, **_community_context(community),
    )  # fmt: skip
