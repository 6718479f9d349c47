"""Store (single writer, group commit, reads, kv) and ConversationLog, against a real SQLite file in tmp_path."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from bot.store import ConversationLog, MessageRecord, Store, StoreError, WriteTx
from bot.store import db as store_db


def _msg(
    content: str = "hi",
    *,
    pmid: str | None = None,
    conversation_id: str = "discord:c1",
    author_id: str = "u1",
    channel_id: str = "c1",
    thread_id: str | None = None,
    role: str = "user",
    created_at: float | None = None,
    platform: str = "discord",
) -> MessageRecord:
    extra = {} if created_at is None else {"created_at": created_at}
    return MessageRecord(
        platform=platform,  # type: ignore[arg-type]
        guild_id="g1",
        channel_id=channel_id,
        thread_id=thread_id,
        conversation_id=conversation_id,
        platform_message_id=pmid,
        author_id=author_id,
        author_name=f"name-{author_id}",
        role=role,  # type: ignore[arg-type]
        content=content,
        **extra,  # type: ignore[arg-type]
    )


async def _open(tmp_path: Path) -> Store:
    return await Store.open(tmp_path / "familiar.db")


# -- connection settings ----------------------------------------------------------------------------------------


async def test_wal_and_connection_pragmas(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        assert await store.fetchval("PRAGMA journal_mode") == "wal"

        async def writer_pragmas(tx: WriteTx) -> tuple[int, int, int]:
            return (
                await tx.fetchval("PRAGMA synchronous"),
                await tx.fetchval("PRAGMA foreign_keys"),
                await tx.fetchval("PRAGMA busy_timeout"),
            )

        assert await store.transaction(writer_pragmas) == (1, 1, store_db.BUSY_TIMEOUT_MS)  # 1 = NORMAL


async def test_read_connection_cannot_write(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.fetchall("INSERT INTO kv (key, value, updated_at) VALUES ('a', 'b', 0)")


async def test_in_memory_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="WAL"):
        await Store.open(":memory:")


# -- writes and reads -------------------------------------------------------------------------------------------


async def test_write_then_read(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        result = await store.write(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?)", ("greeting", "hello", 1.0)
        )
        assert result.rowcount == 1
        row = await store.fetchone("SELECT key, value FROM kv WHERE key = ?", ("greeting",))
        assert row is not None and (row["key"], row["value"]) == ("greeting", "hello")
        assert await store.fetchval("SELECT count(*) FROM kv") == 1
        assert await store.fetchone("SELECT * FROM kv WHERE key = 'missing'") is None
        assert await store.fetchval("SELECT value FROM kv WHERE key = 'missing'") is None


async def test_write_many_is_all_or_nothing(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        sql = "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, 0)"
        assert await store.write_many(sql, [(f"k{i}", "v") for i in range(10)]) == 10
        with pytest.raises(sqlite3.IntegrityError):
            await store.write_many(sql, [("new1", "v"), ("k3", "v"), ("new2", "v")])  # k3 already exists
        assert await store.fetchval("SELECT count(*) FROM kv") == 10


async def test_transaction_commits_together_or_not_at_all(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:

        async def move(tx: WriteTx) -> int:
            await tx.execute("INSERT INTO kv (key, value, updated_at) VALUES ('a', '1', 0)")
            seen = await tx.fetchval("SELECT count(*) FROM kv")  # sees its own uncommitted row
            await tx.execute("INSERT INTO kv (key, value, updated_at) VALUES ('b', '2', 0)")
            return int(seen)

        assert await store.transaction(move) == 1

        async def half_then_fail(tx: WriteTx) -> None:
            await tx.execute("INSERT INTO kv (key, value, updated_at) VALUES ('c', '3', 0)")
            raise ValueError("changed my mind")

        with pytest.raises(ValueError, match="changed my mind"):
            await store.transaction(half_then_fail)
        assert [r["key"] for r in await store.fetchall("SELECT key FROM kv ORDER BY key")] == ["a", "b"]


async def test_group_commit_batches_concurrent_writes(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        before = store.stats
        results = await asyncio.gather(
            *(
                store.write("INSERT INTO kv (key, value, updated_at) VALUES (?, ?, 0)", (f"k{i}", str(i)))
                for i in range(1000)
            )
        )
        after = store.stats
        assert all(r.rowcount == 1 for r in results)
        assert after.items - before.items == 1000
        # 1000 acknowledgements, a handful of fsync-worthy commits (batches are capped at WRITE_BATCH_MAX).
        assert after.commits - before.commits <= 1000 // store_db.WRITE_BATCH_MAX + 2
        assert after.largest_batch <= store_db.WRITE_BATCH_MAX
        assert await store.fetchval("SELECT count(*) FROM kv") == 1000


async def test_batch_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_db, "WRITE_BATCH_MAX", 7)
    async with await _open(tmp_path) as store:
        await asyncio.gather(
            *(
                store.write("INSERT INTO kv (key, value, updated_at) VALUES (?, 'v', 0)", (f"k{i}",))
                for i in range(50)
            )
        )
        assert store.stats.largest_batch == 7
        assert store.stats.commits >= 50 // 7


async def test_full_queue_waits_instead_of_dropping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_db, "WRITE_QUEUE_MAX", 5)
    store = await _open(tmp_path)
    log = ConversationLog(store)
    await asyncio.gather(*(log.log(_msg(f"m{i}")) for i in range(200)))
    await store.close()
    async with await _open(tmp_path) as reopened:
        assert await ConversationLog(reopened).count() == 200


async def test_bad_statement_fails_only_its_own_future(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        insert = "INSERT INTO kv (key, value, updated_at) VALUES (?, 'v', 0)"
        results = await asyncio.gather(
            store.write(insert, ("before",)),
            store.write("INSERT INTO no_such_table VALUES (1)"),
            store.write(insert, ("before",)),  # duplicate key
            store.write(insert, ("after",)),
            return_exceptions=True,
        )
        assert not isinstance(results[0], BaseException)
        assert isinstance(results[1], sqlite3.OperationalError)
        assert isinstance(results[2], sqlite3.IntegrityError)
        assert not isinstance(results[3], BaseException)
        assert store.stats.failed_items == 2
        keys = [r["key"] for r in await store.fetchall("SELECT key FROM kv ORDER BY key")]
        assert keys == ["after", "before"]
        # The writer is still alive.
        await store.kv_set("still", "working")
        assert await store.kv_get("still") == "working"


async def test_failed_fire_and_forget_write_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with await _open(tmp_path) as store:
        with caplog.at_level(logging.ERROR, logger="bot.store.db"):
            await store.write_nowait("INSERT INTO no_such_table VALUES (1)")
            await store.flush()
        assert "no_such_table" in caplog.text
        await store.kv_set("k", "v")
        assert await store.kv_get("k") == "v"


async def test_close_flushes_everything_queued(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    log = ConversationLog(store)
    for i in range(500):
        await log.log(_msg(f"line {i}"))
    assert store.stats.items < 500  # most of it is still queued: log() did not wait for the disk
    await store.close()
    await store.close()  # a second close is harmless
    async with await _open(tmp_path) as reopened:
        assert await ConversationLog(reopened).count() == 500


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.write("DELETE FROM kv")
    with pytest.raises(StoreError, match="closed"):
        await ConversationLog(store).log(_msg())


async def test_cancelled_caller_does_not_undo_its_write(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        task = asyncio.create_task(store.kv_set("k", "v"))
        await asyncio.sleep(0)  # queued
        task.cancel()
        await store.flush()
        assert await store.kv_get("k") == "v"


# -- key/value --------------------------------------------------------------------------------------------------


async def test_kv(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        assert await store.kv_get("token") is None
        await store.kv_set("token", "one")
        await store.kv_set("token", "two")
        assert await store.kv_get("token") == "two"
        assert await store.kv_delete("token") is True
        assert await store.kv_delete("token") is False
        assert await store.kv_get("token") is None


# -- conversation log -------------------------------------------------------------------------------------------


def test_message_record_validates_at_the_call_site() -> None:
    with pytest.raises(ValueError, match="platform"):
        _msg(platform="irc")
    with pytest.raises(ValueError, match="role"):
        _msg(role="bot")
    rec = _msg()
    assert rec.created_at > 1_600_000_000  # defaults to now


async def test_log_durable_returns_the_row_id_and_round_trips(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        log = ConversationLog(store)
        question = _msg("what is your name?", pmid="p1", created_at=10.0)
        qid = await log.log_durable(question)
        answer = MessageRecord(
            platform="discord",
            guild_id="g1",
            channel_id="c1",
            conversation_id="discord:c1",
            platform_message_id="p2",
            author_id="bot",
            author_name="Familiar",
            role="assistant",
            content="Call me Wisp.",
            reply_to_id=qid,
            reply_to_platform_id="p1",
            created_at=11.0,
            model_version="embedded@v3",
            latency_ms=420,
        )
        await log.log_durable(answer)
        assert await log.recent("discord:c1", 10) == [question, answer]


async def test_deleting_a_message_unlinks_replies_to_it(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        log = ConversationLog(store)
        qid = await log.log_durable(_msg("q", pmid="p1", created_at=1.0))
        await log.log_durable(
            MessageRecord(
                platform="discord",
                channel_id="c1",
                conversation_id="discord:c1",
                author_id="bot",
                author_name="Familiar",
                role="assistant",
                content="a",
                reply_to_id=qid,
                created_at=2.0,
            )
        )
        assert await log.delete_platform_message("discord", "p1") == 1
        [reply] = await log.recent("discord:c1", 10)
        assert (reply.content, reply.reply_to_id) == ("a", None)


async def test_delete_reaches_a_message_still_queued(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        log = ConversationLog(store)
        await log.log(_msg("oops", pmid="p9"))
        assert store.stats.items == 0  # not written yet
        assert await log.delete_platform_message("discord", "p9") == 1
        assert await log.count() == 0


async def test_delete_user_messages_everywhere_or_per_channel(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        log = ConversationLog(store)
        await log.log(_msg("a", author_id="troll", channel_id="c1"))
        await log.log(_msg("b", author_id="troll", channel_id="c1", thread_id="t1", conversation_id="d:t:t1"))
        await log.log(_msg("c", author_id="troll", channel_id="c2", conversation_id="discord:c2"))
        await log.log(_msg("d", author_id="troll", platform="twitch", conversation_id="twitch:c1"))
        await log.log(_msg("e", author_id="friend", channel_id="c1"))
        # Still queued: the deletes run after the inserts on the one writer.
        assert await log.delete_user_messages("discord", "troll", channel_id="t1") == 1
        assert await log.delete_user_messages("discord", "troll", channel_id="c1") == 1
        assert await log.delete_user_messages("discord", "troll") == 1
        assert await log.count() == 2  # the Twitch line and the friend's line stay


async def test_ratings(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        log = ConversationLog(store)
        await log.log(_msg("reply", pmid="p1", role="assistant"))
        assert await log.set_rating("discord", "p1", 1) == 1
        assert (await log.recent("discord:c1", 1))[0].rating == 1
        assert await log.set_rating("discord", "p1", -1) == 1
        assert (await log.recent("discord:c1", 1))[0].rating == -1
        assert await log.set_rating("discord", "p1", None) == 1
        assert (await log.recent("discord:c1", 1))[0].rating is None
        assert await log.set_rating("discord", "unknown", 1) == 0
        with pytest.raises(ValueError, match="rating"):
            await log.set_rating("discord", "p1", 5)


async def test_a_reply_in_several_parts_is_deleted_and_rated_through_any_part(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        log = ConversationLog(store)
        await log.log(_msg("question", pmid="q1"))
        await log.log(_msg("a long reply", pmid="p3", role="assistant"), parts=["p1", "p2", "p3"])
        await log.log(_msg("short", pmid="s1", role="assistant"), parts=["s1"])  # one part: no parts rows
        await store.flush()
        assert await store.fetchval("SELECT count(*) FROM message_parts") == 3
        assert await log.message_parts("discord", "p1") == ["p1", "p2", "p3"]
        assert await log.message_parts("discord", "p3") == ["p1", "p2", "p3"]
        assert await log.message_parts("discord", "s1") == ["s1"]
        assert await log.message_parts("discord", "nope") == []
        assert await log.message_parts("twitch", "p1") == []  # ids are per platform
        assert await log.set_rating("discord", "p2", -1) == 1
        rows = await log.recent("discord:c1", 10)
        assert [(r.content, r.rating) for r in rows] == [
            ("question", None),
            ("a long reply", -1),
            ("short", None),
        ]
        assert await log.delete_platform_message("discord", "p1") == 1
        assert [r.content for r in await log.recent("discord:c1", 10)] == ["question", "short"]
        assert await store.fetchval("SELECT count(*) FROM message_parts") == 0  # the parts went with the row
        assert await log.delete_platform_message("discord", "p2") == 0


async def test_recent_is_chronological_and_limited(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        log = ConversationLog(store)
        # Logged out of order; two share a timestamp (the row id keeps their logging order).
        for content, at in [("t3", 3.0), ("t1", 1.0), ("t4a", 4.0), ("t4b", 4.0), ("t2", 2.0)]:
            await log.log(_msg(content, created_at=at))
        await log.log(_msg("elsewhere", conversation_id="discord:other", created_at=5.0))
        await store.flush()  # reads see committed rows only
        assert [r.content for r in await log.recent("discord:c1", 3)] == ["t3", "t4a", "t4b"]
        assert [r.content for r in await log.recent("discord:c1", 100)] == ["t1", "t2", "t3", "t4a", "t4b"]
        assert await log.recent("discord:c1", 0) == []
        assert await log.count() == 6
        assert await log.count("discord:other") == 1
