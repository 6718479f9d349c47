"""Dashboard pages over a year of log: 1,000,000 messages (`python -m bench.dashboard_bench`).

The log is filled the fast way (executemany in large transactions; the dashboard's triggers keep its rollups as rows
arrive, as they would in production), then each page is rendered as the server renders it and timed: the
community view twice, cold and with its text analysis cached.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from bot.config import config_from_dict
from bot.dashboard.pages import Pages, Sources
from bot.metrics import Metrics
from bot.store import Store

CHUNK = 100_000  # rows per transaction
YEAR_S = 365 * 86_400
WORDS = (
    "dragon castle quest boss raid stream music playlist pizza movie anime game patch speedrun clip emote chat "
    "weekend coffee rain code bug hype lore map build guild tournament"
).split()
MOODS = ("love it", "this is great", "so boring", "awful lag today", "pretty good", "not sure", "amazing run")
VERSIONS = ("embedded:SmolLM2-135M-Instruct", "embedded+adapter:v0001", "embedded+adapter:v0002")
INSERT = (
    "INSERT INTO messages (platform, channel_id, conversation_id, author_id, author_name, role, content, "
    "created_at, model_version, latency_ms, rating) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def rows(n: int, now: float, rng: random.Random):
    channels = [("discord", str(1000 + i)) for i in range(12)] + [("twitch", f"chan{i}") for i in range(4)]
    for i in range(n // 2):
        platform, channel = channels[rng.randrange(len(channels))]
        person = rng.randrange(3_000)
        at = now - YEAR_S * (1 - i / (n // 2)) + rng.random()  # oldest first, as a log grows
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + ", " + rng.choice(MOODS)
        conv = f"{platform}:{channel}"
        yield (platform, channel, conv, f"u{person}", f"person{person}", "user", text, at, None, None, None)
        version = VERSIONS[min(len(VERSIONS) - 1, int(3 * i / (n // 2)))]
        rating = rng.choice((1, 1, -1, None, None, None, None))
        yield (platform, channel, conv, "familiar", "Familiar", "assistant", "Sure!", at + 1.5, version,
               rng.randint(150, 2500), rating)  # fmt: skip


async def fill(store, n: int, now: float) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    batch = []
    for row in rows(n, now, rng):
        batch.append(row)
        if len(batch) >= CHUNK:
            await store.write_many(INSERT, batch)
            batch = []
    if batch:
        await store.write_many(INSERT, batch)

    async def polls_and_stories(tx):
        for p in range(200):
            poll = await tx.execute(
                "INSERT INTO polls (question, creator_platform, creator_id, creator_name, created_at, closes_at, "
                "status) VALUES (?, 'discord', 'u1', 'person1', ?, ?, 'closed')",
                (f"Poll {p}?", now - p * 3600 * 24, now - p * 3600 * 24 + 600),
            )
            for pos in (1, 2, 3):
                await tx.execute(
                    "INSERT INTO poll_options (poll_id, position, label) VALUES (?, ?, ?)",
                    (poll.lastrowid, pos, f"option {pos}"),
                )
            await tx.executemany(
                "INSERT INTO poll_votes (poll_id, platform, user_id, slot, option, voted_at) VALUES (?, 'discord', ?, 0, ?, ?)",
                [(poll.lastrowid, f"u{u}", 1 + u % 3, now) for u in range(300)],
            )
        for g in range(50):
            game = await tx.execute(
                "INSERT INTO story_games (platform, channel_id, premise, narrator, status, started_by, started_by_name, "
                "created_at) VALUES ('twitch', 'chan0', ?, 'Familiar', 'ended', 'u2', 'person2', ?)",
                (f"Story {g}", now - g * 86_400),
            )
            for t in range(1, 41):
                turn = await tx.execute(
                    "INSERT INTO story_turns (game_id, number, action_kind, action, narration, status, opened_at) "
                    "VALUES (?, ?, 'choice', 'go', 'Onward.', 'closed', ?)",
                    (game.lastrowid, t, now),
                )
                await tx.executemany(
                    "INSERT INTO story_votes (turn_id, platform, user_id, user_name, option, voted_at) "
                    "VALUES (?, 'twitch', ?, ?, 1, ?)",
                    [(turn.lastrowid, f"u{u}", f"person{u}", now) for u in range(30)],
                )

    await store.transaction(polls_and_stories)
    await store.write("ANALYZE")
    return time.perf_counter() - started


async def timed(label: str, coro) -> float:
    started = time.perf_counter()
    html = await coro
    elapsed = time.perf_counter() - started
    print(f"  {label:<28} {elapsed * 1000:8.1f} ms   ({len(html) / 1024:.0f} KiB)")
    return elapsed


async def main(messages: int) -> None:
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "bench.db")
        try:
            took = await fill(store, messages, now)
            count = await store.fetchval("SELECT count(*) FROM messages")
            print(
                f"filled {count:,} messages over a year in {took:.1f} s ({count / took:,.0f} rows/s, triggers on)"
            )
            config = config_from_dict({"bot": {"data_dir": tmp}})
            metrics = Metrics()
            for _ in range(500):
                metrics.request_done(random.uniform(0.2, 2.0))
            pages = Pages(Sources(config=config, store=store, character="Familiar", metrics=metrics))
            print("page render times:")
            await timed("status", pages.status())
            await timed("models", pages.models())
            for days in (1, 7, 30, 90):
                await timed(f"community {days}d (cold)", pages.community(days))
                await timed(f"community {days}d (cached)", pages.community(days))
            await timed("report (7d, cached)", pages.report(7))
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    asyncio.run(main(args.messages))
