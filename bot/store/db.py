"""The process's one SQLite database: a single writer task with group commit, and a separate read connection.

Why one writer: SQLite allows one writer at a time anyway, and funnelling every write through one queue gives a
total order (a delete enqueued after a log line always sees that line) and lets many small writes share one COMMIT,
which is what makes a busy chat cheap on disk. Each item runs inside its own SAVEPOINT, so a bad statement fails
only the caller that sent it.

Two kinds of write:
- `write`, `write_many`, `transaction`: resolve after the COMMIT that includes them (durable acknowledgement:
  a poll vote acknowledged is a vote on disk, as far as synchronous=NORMAL in WAL mode promises).
- `write_nowait`: returns once the item is queued; failures are logged. Used for the conversation log so replies
  never wait on the disk. It awaits only while the bounded queue is full, i.e. when the disk is far behind; it never
  drops a write.

Reads go to a second connection; under WAL they run beside the writer and see only committed data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from bot.store.migrate import Migration, apply_migrations, load_migrations
from bot.store.records import StoreError, WriteResult

log = logging.getLogger(__name__)

WRITE_QUEUE_MAX = 10_000  # items waiting for the writer; beyond this, write_nowait waits for room
WRITE_BATCH_MAX = (
    500  # items per transaction: bounds the work lost to a failed COMMIT and the time a batch holds the lock
)
BUSY_TIMEOUT_MS = 5_000  # how long a connection waits for another process's lock before SQLITE_BUSY

Params = Sequence[Any] | dict[str, Any]
T = TypeVar("T")


class WriteTx:
    """The view of the write transaction that `Store.transaction` hands to its function.

    It offers statements and reads but no COMMIT or ROLLBACK: the writer owns the transaction, and the function's
    work is committed (or, if it raises, rolled back to its savepoint) together with the rest of the batch.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> WriteResult:
        """Run one statement; return rows changed and the last inserted row id."""
        async with self._conn.execute(sql, params) as cursor:
            return WriteResult(rowcount=cursor.rowcount, lastrowid=cursor.lastrowid)

    async def executemany(self, sql: str, params_seq: Iterable[Params]) -> int:
        """Run one statement per parameter set; return the total rows changed."""
        async with self._conn.executemany(sql, params_seq) as cursor:
            return cursor.rowcount

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Read inside the transaction (sees its own uncommitted changes)."""
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


TxFn = Callable[[WriteTx], Awaitable[Any]]


@dataclass(eq=False)
class _WriteItem:
    """One queued unit of work; `future` is None for fire-and-forget writes."""

    run: Callable[[WriteTx], Awaitable[Any]]
    description: str
    future: asyncio.Future[Any] | None
    outcome: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class StoreStats:
    """Writer counters, for tests and the admin status command.

    `commits`: transactions committed; `items`: writes in those transactions (including ones whose own statement
    failed and was rolled back to its savepoint); `failed_items`: writes that reported an error, for any reason;
    `largest_batch`: most items one COMMIT carried; `queued`: items waiting now.
    """

    commits: int
    items: int
    failed_items: int
    largest_batch: int
    queued: int


@dataclass
class _Counters:
    commits: int = 0
    items: int = 0
    failed_items: int = 0
    largest_batch: int = 0


_STOP = object()  # queue sentinel: close() asks the writer to finish what is queued and exit


class Store:
    """The SQLite database: `await Store.open(path)`, then write/read; `await store.close()` (or `async with`)."""

    def __init__(self, *, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        """Use `Store.open`; this only wires already-configured connections together."""
        self.path = path
        self._writer_conn = writer
        self._reader_conn = reader
        self._tx = WriteTx(writer)
        self._queue: asyncio.Queue[_WriteItem | object] = asyncio.Queue(maxsize=WRITE_QUEUE_MAX)
        self._counters = _Counters()
        self._closing = False
        self._closed = False
        self._waiting_puts = 0  # callers blocked on a full queue; the writer stays until they are served
        self._writer_task: asyncio.Task[None] = asyncio.create_task(self._write_loop(), name="store-writer")

    # -- lifetime -------------------------------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, migrations: Sequence[Migration] | None = None) -> Self:
        """Open (creating if needed) the database at `path`, upgrade its schema, start the writer.

        `migrations` defaults to the bundled `bot/store/migrations/*.sql`; tests pass their own. A database whose
        schema is newer than the code is refused with a `StoreError` and left untouched.
        """
        label = str(path)
        steps = load_migrations() if migrations is None else list(migrations)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        opened: list[aiosqlite.Connection] = []
        try:
            # isolation_level=None: no implicit BEGINs from Python's sqlite3; the writer issues its own.
            writer = await aiosqlite.connect(path, isolation_level=None)
            opened.append(writer)
            writer.row_factory = sqlite3.Row
            await _configure(writer, label=label)
            await apply_migrations(writer, steps, db_label=label)
            reader = await aiosqlite.connect(path, isolation_level=None)
            opened.append(reader)
            reader.row_factory = sqlite3.Row
            await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            # The read connection must never write: that would bypass the writer's ordering.
            await reader.execute("PRAGMA query_only = ON")
        except BaseException:
            for conn in reversed(opened):
                with contextlib.suppress(Exception):
                    await conn.close()
            raise
        log.info("opened database %s", label)
        return cls(path=label, writer=writer, reader=reader)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit everything already queued (including fire-and-forget writes), then close both connections.

        Writes submitted after close() has begun are refused with `StoreError`. Safe to call twice.
        """
        if self._closed:
            return
        if not self._closing:
            self._closing = True
            if not self._writer_task.done():
                await self._queue.put(_STOP)
        try:
            await self._writer_task
        finally:
            if not self._closed:
                self._closed = True
                await self._writer_conn.close()
                await self._reader_conn.close()
                log.info("closed database %s", self.path)

    # -- writes ---------------------------------------------------------------------------------------------------

    async def write(self, sql: str, params: Params = ()) -> WriteResult:
        """Run one statement through the writer; resolve after its COMMIT. Raises the statement's error."""
        return await self._submit(_statement(sql, params), sql, durable=True)

    async def write_many(self, sql: str, params_seq: Iterable[Params]) -> int:
        """Run `sql` once per parameter set, all or nothing; resolve after COMMIT with the total rows changed."""
        rows = list(
            params_seq
        )  # materialise now: the writer runs later, and a generator may change meanwhile

        async def run(tx: WriteTx) -> int:
            return await tx.executemany(sql, rows)

        return await self._submit(run, sql, durable=True)

    async def transaction(self, fn: Callable[[WriteTx], Awaitable[T]]) -> T:
        """Run `fn(tx)` inside the writer's transaction, all or nothing; resolve with its result after COMMIT.

        `fn` runs on the writer, so it sees every write queued before it and none queued after. Keep it to database
        work: while it awaits, every other write waits too.
        """
        return await self._submit(fn, getattr(fn, "__qualname__", repr(fn)), durable=True)

    async def write_nowait(self, sql: str, params: Params = ()) -> None:
        """Queue one statement and return without waiting for the disk; a failure is logged, not raised.

        Waits only for room in the queue (WRITE_QUEUE_MAX items), never drops the write.
        """
        await self._submit(_statement(sql, params), sql, durable=False)

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed."""

        async def nothing(tx: WriteTx) -> None:
            return None

        await self._submit(nothing, "flush", durable=True)

    async def _submit(self, run: TxFn, description: str, *, durable: bool) -> Any:
        if self._closing:
            raise StoreError(f"database {self.path} is closed")
        if self._writer_task.done():
            raise StoreError(f"database {self.path}: the writer has stopped")
        future: asyncio.Future[Any] | None = asyncio.get_running_loop().create_future() if durable else None
        item = _WriteItem(run=run, description=description, future=future)
        self._waiting_puts += 1
        try:
            await self._queue.put(item)
        finally:
            self._waiting_puts -= 1
        if future is None:
            return None
        return await future

    # -- the writer -----------------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        stopping = False
        try:
            while True:
                # After close(): keep serving until the queue is empty and nobody is still waiting to enqueue,
                # so every write accepted before close() reaches the disk.
                if stopping and self._queue.empty() and self._waiting_puts == 0:
                    return
                batch: list[_WriteItem] = []
                entry = await self._queue.get()
                while True:
                    if entry is _STOP:
                        stopping = True
                    else:
                        assert isinstance(entry, _WriteItem)
                        batch.append(entry)
                    if len(batch) >= WRITE_BATCH_MAX:
                        break
                    try:
                        entry = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                if batch:
                    await self._commit_batch(batch)
        except BaseException as exc:
            # Only a bug or cancellation gets here; fail what is still queued rather than leave callers hanging.
            log.exception("database writer for %s stopped", self.path)
            self._fail_pending(StoreError(f"database {self.path}: the writer stopped ({exc!r})"))
            raise

    async def _commit_batch(self, batch: list[_WriteItem]) -> None:
        """Run `batch` in one transaction, one SAVEPOINT per item, then resolve every item's future."""
        conn = self._writer_conn
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                await conn.execute("SAVEPOINT item")
                try:
                    item.outcome = await item.run(self._tx)
                except Exception as exc:
                    if not conn.in_transaction:
                        # SQLite aborted the whole transaction (disk full, I/O error): earlier items are gone too.
                        raise
                    await conn.execute("ROLLBACK TO item")
                    item.error = exc
                await conn.execute("RELEASE item")
            await conn.execute("COMMIT")
        except BaseException as exc:
            # Nothing in the batch reached the disk: every item fails, including those that ran cleanly.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
            log.error("database %s: a batch of %d writes was rolled back: %r", self.path, len(batch), exc)
            for item in batch:
                item.error = exc if isinstance(exc, Exception) else StoreError(f"write interrupted: {exc!r}")
                self._resolve(item)
            if not isinstance(exc, Exception):
                raise  # cancellation: the writer stops, its loop fails what is still queued
            return
        self._counters.commits += 1
        self._counters.items += len(batch)
        self._counters.largest_batch = max(self._counters.largest_batch, len(batch))
        for item in batch:
            self._resolve(item)

    def _resolve(self, item: _WriteItem) -> None:
        if item.error is not None:
            self._counters.failed_items += 1
        future = item.future
        if future is None:
            if item.error is not None:
                log.error(
                    "database %s: queued write failed: %s (%s)", self.path, item.error, item.description
                )
            return
        if future.done():  # the caller was cancelled; its write still happened
            return
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(item.outcome)

    def _fail_pending(self, error: StoreError) -> None:
        while True:
            try:
                entry = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if isinstance(entry, _WriteItem):
                entry.error = error
                self._resolve(entry)

    # -- reads ----------------------------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Rows of a query on the read connection (committed data only)."""
        return list(await self._reader_conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row of a query, or None."""
        async with self._reader_conn.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    # -- key/value ------------------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        """The value stored under `key`, or None."""
        value = await self.fetchval("SELECT value FROM kv WHERE key = ?", (key,))
        return None if value is None else str(value)

    async def kv_set(self, key: str, value: str) -> None:
        """Store `value` under `key` (replacing any old one); returns after COMMIT."""
        await self.write(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, value, time.time()),
        )

    async def kv_delete(self, key: str) -> bool:
        """Remove `key`; True if it existed. Returns after COMMIT."""
        result = await self.write("DELETE FROM kv WHERE key = ?", (key,))
        return result.rowcount > 0

    # -- introspection --------------------------------------------------------------------------------------------

    @property
    def stats(self) -> StoreStats:
        """A snapshot of the writer's counters."""
        c = self._counters
        return StoreStats(
            commits=c.commits,
            items=c.items,
            failed_items=c.failed_items,
            largest_batch=c.largest_batch,
            queued=self._queue.qsize(),
        )


def _statement(sql: str, params: Params) -> TxFn:
    async def run(tx: WriteTx) -> WriteResult:
        return await tx.execute(sql, params)

    return run


async def _configure(conn: aiosqlite.Connection, *, label: str) -> None:
    """Set the writer's pragmas; journal_mode is persistent in the file, the others per connection."""
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
        row = await cursor.fetchone()
    mode = str(row[0]).lower() if row else "unknown"
    if mode != "wal":
        # e.g. ":memory:" or a file system without shared memory; the separate read connection needs WAL.
        raise StoreError(
            f"database {label} cannot use WAL journaling (got {mode!r}); use a file on a local disk"
        )
    # NORMAL in WAL mode: a power cut may lose the last commits but never corrupts the file, and commits skip fsync.
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")
