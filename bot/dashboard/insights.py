"""Top topics (YAKE keyword extraction) and sentiment (VADER lexicon) over samples of the log.

Both libraries are local: YAKE ships its stop-word lists and VADER its lexicon, so nothing is downloaded. Both are
CPU work, so callers run them in a thread. Results are cached by the exact rows they were computed from (their ids):
when a person is forgotten their rows leave the sample, the key changes and the old result is never shown again.
The cache is small and entries expire after `CACHE_TTL_S` anyway.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from bot.dashboard.data import SentimentPoint, TextSample

TOPICS_MAX = 15
TOPIC_MAX_NGRAM = 2
CACHE_MAX = 32  # cached analyses (topics and sentiment buckets together)
CACHE_TTL_S = 60.0
POSITIVE = 0.05  # VADER's usual thresholds for a positive / negative compound score
NEGATIVE = -0.05
_URL = re.compile(r"https?://\S+|<[@#!&]?\d+>|@\w+")  # links and platform mentions are not topics


class AnalysisCache:
    """A bounded, short-lived cache keyed by the sample's row ids."""

    def __init__(
        self, *, max_entries: int = CACHE_MAX, ttl_s: float = CACHE_TTL_S, clock=time.monotonic
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()  # filled from worker threads

    def get_or_compute(self, kind: str, sample: TextSample, compute: Callable[[], Any]) -> Any:
        key = kind + ":" + hashlib.sha256(repr(sample.ids).encode()).hexdigest()
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] <= self._ttl:
                return hit[1]
        value = compute()
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@functools.cache
def _vader() -> Any:
    """The analyser, built once (reading the lexicon takes ~15 ms); polarity_scores keeps no state."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def top_topics(texts: Sequence[str], *, top: int = TOPICS_MAX) -> tuple[tuple[str, float], ...]:
    """The sample's key phrases, best first, with a relevance in (0, 1] (1 = the best one)."""
    cleaned = [_URL.sub(" ", t).strip() for t in texts]
    text = "\n".join(f"{t.rstrip('.!?')}." for t in cleaned if t)
    if not text.strip():
        return ()
    import yake

    extractor = yake.KeywordExtractor(lan="en", n=TOPIC_MAX_NGRAM, top=top * 2, dedupLim=0.7)
    found = extractor.extract_keywords(text)  # [(phrase, score)], lower score = more relevant
    seen: set[str] = set()
    topics: list[tuple[str, float]] = []
    for phrase, score in found:
        key = phrase.lower()
        if key in seen or len(key) < 3:
            continue
        seen.add(key)
        topics.append((key, float(score)))
        if len(topics) >= top:
            break
    if not topics:
        return ()
    best = topics[0][1] or 1e-12
    return tuple((phrase, min(1.0, best / (score or 1e-12))) for phrase, score in topics)


def sentiment_point(start: float, end: float, sample: TextSample, messages: int) -> SentimentPoint:
    if not sample.texts:
        return SentimentPoint(start, end, None, 0, 0, 0, messages)
    analyzer = _vader()
    scores = [analyzer.polarity_scores(text)["compound"] for text in sample.texts]
    return SentimentPoint(
        start=start,
        end=end,
        mean=sum(scores) / len(scores),
        positive=sum(1 for s in scores if s >= POSITIVE),
        negative=sum(1 for s in scores if s <= NEGATIVE),
        scored=len(scores),
        messages=messages,
    )


def analyse(
    cache: AnalysisCache,
    topic_sample: TextSample,
    sentiment_samples: Sequence[tuple[tuple[float, float], TextSample, int]],
) -> tuple[tuple[tuple[str, float], ...], tuple[SentimentPoint, ...]]:
    """Topics and the sentiment trend (run it in a thread)."""
    topics = cache.get_or_compute("topics", topic_sample, lambda: top_topics(topic_sample.texts))
    points = []
    for (start, end), sample, messages in sentiment_samples:
        point = cache.get_or_compute(
            f"sentiment:{start}:{end}:{messages}",
            sample,
            functools.partial(sentiment_point, start, end, sample, messages),
        )
        points.append(point)
    return topics, tuple(points)
