"""Votes ingested per second through PollService with durable commits (`python -m bench.votes_bench`).

Each vote goes the whole way a platform's vote goes: rule checks, the batcher, a `Store.transaction` and its COMMIT;
a voter's `vote()` returns only after the commit. Concurrent voters (distinct people) keep the writer busy, as a
chat full of `!vote` lines would. The tally is checked afterwards: a fast wrong count is a failure, not a result.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import PollsConfig
from bot.store import Store
from cogs.common.actor import Actor
from cogs.polls.service import PollService

TARGET_VOTES_PER_S = 5_000
OPTIONS = 10


async def run(votes: int, concurrency: int, changes: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "bench.db")
        scheduler = AsyncIOScheduler()
        scheduler.start()
        service = PollService(store=store, scheduler=scheduler, config=PollsConfig())
        await service.start()
        try:
            creator = Actor("console", "bench", "bench", is_admin=True)
            poll = await service.create(
                creator,
                "Benchmark?",
                [f"option {i}" for i in range(1, OPTIONS + 1)],
                "1h",
                channel_id="bench",
            )
            people = [Actor("twitch", f"u{i}", f"user {i}") for i in range(votes)]
            changers = int(votes * changes)  # people who vote twice: the second vote replaces the first
            work = [(p, i % OPTIONS + 1) for i, p in enumerate(people)] + [
                (people[i], (i + 1) % OPTIONS + 1) for i in range(changers)
            ]
            queue: asyncio.Queue[tuple[Actor, int]] = asyncio.Queue()
            for item in work:
                queue.put_nowait(item)

            async def voter() -> None:
                while not queue.empty():
                    person, option = queue.get_nowait()
                    await service.vote(person, poll.id, option)

            commits_before = store.stats.commits
            started = time.perf_counter()
            await asyncio.gather(*(voter() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            commits = store.stats.commits - commits_before

            results = await service.results(poll.id)
            expected = [0] * OPTIONS
            final = {i: i % OPTIONS + 1 for i in range(votes)} | {
                i: (i + 1) % OPTIONS + 1 for i in range(changers)
            }
            for option in final.values():
                expected[option - 1] += 1
            assert list(results.counts) == expected, f"tally {results.counts} != expected {expected}"
            assert results.voters == votes
        finally:
            await service.close()
            scheduler.shutdown(wait=False)
            await store.close()
    rate = len(work) / elapsed
    print(
        f"votes: {len(work)} ({votes} people, {changers} changed their vote), {concurrency} concurrent voters, "
        f"{commits} commits ({len(work) / max(commits, 1):.0f} votes per commit)"
    )
    print(f"durable votes ingested: {rate:,.0f}/s in {elapsed:.2f}s; tally exact")
    print(f"ratio to the {TARGET_VOTES_PER_S:,}/s target: {rate / TARGET_VOTES_PER_S:.2f}x")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=30_000, help="distinct voters")
    parser.add_argument("--concurrency", type=int, default=500, help="voters voting at the same time")
    parser.add_argument("--changes", type=float, default=0.1, help="share of voters who change their vote")
    args = parser.parse_args()
    asyncio.run(run(args.votes, args.concurrency, args.changes))


if __name__ == "__main__":
    main()
