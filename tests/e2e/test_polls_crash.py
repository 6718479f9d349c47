"""SIGKILL during a burst of votes: every vote acknowledged before the kill is in the database afterwards, once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import PollsConfig
from bot.store import Store
from cogs.polls.service import PollService

ROOT = Path(__file__).resolve().parents[2]
ACKS_BEFORE_KILL = 1500

VOTER = textwrap.dedent(
    """
    import asyncio, itertools, sys
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from bot.config import PollsConfig
    from bot.store import Store
    from cogs.common.actor import Actor
    from cogs.polls.service import PollService

    async def main(path):
        store = await Store.open(path)
        scheduler = AsyncIOScheduler()
        scheduler.start()
        polls = PollService(store=store, scheduler=scheduler, config=PollsConfig())
        await polls.start()
        creator = Actor("console", "local", "you", is_admin=True)
        poll = await polls.create(creator, "Crash?", ["a", "b", "c"], "1h", channel_id="local")
        print("POLL", poll.id, flush=True)
        ids = itertools.count()

        async def voter():
            while True:
                i = next(ids)
                await polls.vote(Actor("twitch", f"u{i}", f"u{i}"), poll.id, i % 3 + 1)
                sys.stdout.write(f"ACK u{i} {i % 3 + 1}\\n")
                sys.stdout.flush()

        await asyncio.gather(*(voter() for _ in range(200)))

    asyncio.run(main(sys.argv[1]))
    """
)


def vote_then_kill(db: Path, acks_before_kill: int) -> dict[str, int]:
    """Run the voter process, SIGKILL it once `acks_before_kill` votes were acknowledged; return {user: option}."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", VOTER, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: dict[str, int] = {}
    deadline = time.monotonic() + 120
    try:
        assert child.stdout is not None
        for line in child.stdout:
            parts = line.split()
            if parts and parts[0] == "ACK":
                acked[parts[1]] = int(parts[2])
                if len(acked) >= acks_before_kill:
                    child.send_signal(signal.SIGKILL)  # mid-burst: 200 voters are still voting
                    break
            assert time.monotonic() < deadline, "the voter process was too slow"
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    assert len(acked) >= acks_before_kill
    return acked


def test_sigkill_mid_burst_keeps_every_acknowledged_vote(tmp_path):
    db = tmp_path / "crash.db"
    acked = vote_then_kill(db, ACKS_BEFORE_KILL)

    conn = sqlite3.connect(db)  # opening the file recovers the WAL, as a restart would
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = dict(conn.execute("SELECT user_id, option FROM poll_votes WHERE poll_id = 1").fetchall())
        total = conn.execute("SELECT COUNT(*) FROM poll_votes").fetchone()[0]
    finally:
        conn.close()
    missing = [user for user in acked if user not in stored]
    assert not missing, f"{len(missing)} acknowledged votes lost, e.g. {missing[:5]}"
    assert all(stored[user] == option for user, option in acked.items())
    assert total == len(stored)  # one row per person: nothing counted twice
    assert total >= len(acked)  # votes committed but not yet printed when the kill came are kept too


async def test_restart_after_the_kill_serves_the_same_poll(tmp_path):
    """After a kill the next process opens the database cleanly and keeps counting where it stopped."""
    db = tmp_path / "crash.db"
    seen = len(await asyncio.to_thread(vote_then_kill, db, 200))

    store = await Store.open(db)
    scheduler = AsyncIOScheduler()
    scheduler.start()
    polls = PollService(store=store, scheduler=scheduler, config=PollsConfig())
    await polls.start()
    try:
        before = await polls.results(1)
        assert before.poll.is_open and before.voters >= seen
        from cogs.common.actor import Actor

        await polls.vote(Actor("discord", "after", "after"), 1, "b")
        after = await polls.results(1)
        assert after.voters == before.voters + 1
    finally:
        await polls.close()
        scheduler.shutdown(wait=False)
        await store.close()
