"""Live numbers for the owner's dashboard: requests per minute, reply latency, platform connections.

Everything is in memory and bounded: the latest replies sit in a ring buffer (`MAX_SAMPLES`) and only the last
`LATENCY_WINDOW_S` seconds of it are read. Nothing here names a person, so `forget` has nothing to remove.
Parts of the process report to one `Metrics` held by the runtime (`runtime.metrics`); it is used from the event loop
only, so it needs no lock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_SAMPLES = 4_096  # replies remembered; at 60 requests a second that is still the last minute
RATE_WINDOW_S = 60.0  # requests per minute counts this window
LATENCY_WINDOW_S = 300.0  # p50/p95 are over the replies of the last five minutes


@dataclass(frozen=True)
class PlatformState:
    connected: bool
    since: float  # wall-clock time of the last change
    detail: str = ""


@dataclass(frozen=True)
class MetricsSnapshot:
    requests_per_min: float
    failures_per_min: float
    p50_ms: float | None
    p95_ms: float | None
    latency_samples: int
    platforms: dict[str, PlatformState]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


class Metrics:
    def __init__(
        self,
        *,
        max_samples: int = MAX_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall_clock
        self._done: deque[tuple[float, float]] = deque(maxlen=max_samples)  # (when, latency_s)
        self._failed: deque[float] = deque(maxlen=max_samples)
        self._platforms: dict[str, PlatformState] = {}

    def request_done(self, latency_s: float) -> None:
        """A reply was generated in `latency_s` seconds (queue wait included)."""
        self._done.append((self._clock(), max(0.0, latency_s)))

    def request_failed(self) -> None:
        """A request got the busy answer (queue full, timeout or a failed batch)."""
        self._failed.append(self._clock())

    def platform(self, name: str, *, connected: bool, detail: str = "") -> None:
        """A platform client reports its connection (call on ready/resume and on disconnect)."""
        old = self._platforms.get(name)
        if old is not None and old.connected == connected and old.detail == detail:
            return
        self._platforms[name] = PlatformState(connected=connected, since=self._wall(), detail=detail)

    def snapshot(self) -> MetricsSnapshot:
        now = self._clock()
        done_recent = sum(1 for when, _ in self._done if now - when <= RATE_WINDOW_S)
        failed_recent = sum(1 for when in self._failed if now - when <= RATE_WINDOW_S)
        latencies = sorted(lat for when, lat in self._done if now - when <= LATENCY_WINDOW_S)
        minutes = RATE_WINDOW_S / 60.0
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        return MetricsSnapshot(
            requests_per_min=(done_recent + failed_recent) / minutes,
            failures_per_min=failed_recent / minutes,
            p50_ms=None if p50 is None else p50 * 1000,
            p95_ms=None if p95 is None else p95 * 1000,
            latency_samples=len(latencies),
            platforms=dict(self._platforms),
        )
