"""The live status: what the running process knows right now (nothing here is read from the database log)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.config import Config
from bot.metrics import Metrics
from cogs.admin.progress import step_fraction

if TYPE_CHECKING:
    from cogs.admin.service import ModelService


@dataclass(frozen=True)
class PlatformStatus:
    name: str
    enabled: bool
    state: str  # connected | disconnected | not reported | not enabled
    since: float | None
    detail: str = ""


@dataclass(frozen=True)
class RetrainStatus:
    running: bool
    line: str  # the latest progress line, or the last result
    step: int | None = None
    total_steps: int | None = None
    phase: str | None = None
    eta_s: float | None = None
    started_by: str | None = None

    @property
    def fraction(self) -> float | None:
        return step_fraction(self.step, self.total_steps)


@dataclass(frozen=True)
class LiveStatus:
    at: float
    live: bool  # False in a static report: no process to ask
    platforms: tuple[PlatformStatus, ...]
    queue_depth: int | None
    requests_per_min: float | None
    failures_per_min: float | None
    p50_ms: float | None
    p95_ms: float | None
    latency_samples: int
    serving: str | None
    registry_active: str | None
    retrain: RetrainStatus | None
    write_queue: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "platforms": [
                {"name": p.name, "enabled": p.enabled, "state": p.state, "since": p.since}
                for p in self.platforms
            ],
            "queue_depth": self.queue_depth,
            "requests_per_min": self.requests_per_min,
            "failures_per_min": self.failures_per_min,
            "latency_ms": {"p50": self.p50_ms, "p95": self.p95_ms, "samples": self.latency_samples},
            "serving": self.serving,
            "registry_active": self.registry_active,
            "retrain": None
            if self.retrain is None
            else {
                "running": self.retrain.running,
                "line": self.retrain.line,
                "step": self.retrain.step,
                "total_steps": self.retrain.total_steps,
                "phase": self.retrain.phase,
                "eta_s": self.retrain.eta_s,
                "started_by": self.retrain.started_by,
            },
            "write_queue": self.write_queue,
        }


def enabled_platforms(config: Config) -> dict[str, bool]:
    return {"discord": config.discord.enabled, "twitch": config.twitch.enabled}


def platform_statuses(config: Config, metrics: Metrics | None) -> tuple[PlatformStatus, ...]:
    reported = metrics.snapshot().platforms if metrics is not None else {}
    out = []
    for name, enabled in enabled_platforms(config).items():
        state = reported.get(name)
        if state is not None:
            out.append(
                PlatformStatus(
                    name,
                    enabled,
                    "connected" if state.connected else "disconnected",
                    state.since,
                    state.detail,
                )
            )
        else:
            out.append(PlatformStatus(name, enabled, "not reported" if enabled else "not enabled", None))
    for name, state in sorted(reported.items()):  # e.g. the console, or a platform added later
        if name not in enabled_platforms(config):
            out.append(
                PlatformStatus(
                    name, True, "connected" if state.connected else "disconnected", state.since, state.detail
                )
            )
    return tuple(out)


def retrain_status(models: ModelService | None) -> RetrainStatus | None:
    """From the model service's typed progress (`ModelService.progress`); None when there is no service."""
    if models is None:
        return None
    progress = models.progress
    if progress is None:
        last = models.last_result
        # A retrain a stop interrupted waits for the admin: that matters more than how the last one ended.
        interrupted = models.interrupted_notice()
        return RetrainStatus(
            running=False, line=interrupted or (f"Last retrain: {last.message}" if last else "")
        )
    return RetrainStatus(
        running=True,
        line=progress.line,
        step=progress.step,
        total_steps=progress.total_steps,
        phase=progress.phase,
        eta_s=progress.eta_s,
        started_by=progress.started_by,
    )


def live_status(
    *,
    config: Config,
    metrics: Metrics | None,
    backend: Any,
    models: ModelService | None,
    store: Any,
    now: float | None = None,
) -> LiveStatus:
    snap = metrics.snapshot() if metrics is not None else None
    registry = getattr(models, "registry", None)
    stats = getattr(store, "stats", None)
    write_queue = None
    if callable(stats):
        write_queue = getattr(stats(), "queued", None)
    return LiveStatus(
        at=now if now is not None else time.time(),
        live=True,
        platforms=platform_statuses(config, metrics),
        queue_depth=getattr(backend, "queue_depth", None) if backend is not None else None,
        requests_per_min=snap.requests_per_min if snap else None,
        failures_per_min=snap.failures_per_min if snap else None,
        p50_ms=snap.p50_ms if snap else None,
        p95_ms=snap.p95_ms if snap else None,
        latency_samples=snap.latency_samples if snap else 0,
        serving=getattr(backend, "model_version", None) if backend is not None else None,
        registry_active=(registry.active_name() or "base") if registry is not None else None,
        retrain=retrain_status(models),
        write_queue=write_queue,
    )


def offline_status(config: Config, registry_active: str | None, now: float | None = None) -> LiveStatus:
    """For the static report: no process is running, so only the registry's pointer is known."""
    return LiveStatus(
        at=now if now is not None else time.time(),
        live=False,
        platforms=tuple(
            PlatformStatus(name, enabled, "enabled" if enabled else "not enabled", None)
            for name, enabled in enabled_platforms(config).items()
        ),
        queue_depth=None,
        requests_per_min=None,
        failures_per_min=None,
        p50_ms=None,
        p95_ms=None,
        latency_samples=0,
        serving=None,
        registry_active=registry_active or "base",
        retrain=None,
        write_queue=None,
    )
