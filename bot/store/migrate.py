"""Numbered schema migrations: discover `NNNN_name.sql` files, apply the missing ones in order.

The schema version lives in `PRAGMA user_version` (0 for a new file). Each migration runs in its own
`BEGIN IMMEDIATE` transaction together with the version bump, so a failing migration leaves the database exactly at
the previous version. Features add their own files (0002_polls.sql, 0003_story.sql, ...); nothing here needs to
change for that. A migration must not contain BEGIN/COMMIT itself, nor statements that cannot run inside a
transaction (VACUUM, PRAGMA journal_mode).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import aiosqlite

from bot.store.records import StoreError

log = logging.getLogger(__name__)

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(StoreError):
    """The migration files themselves are wrong (a gap, a duplicate, a bad name) or one failed to apply."""


@dataclass(frozen=True)
class Migration:
    """One schema step: `version` is the number in the file name, `sql` the script that reaches it."""

    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def migrations_dir() -> Traversable:
    """The bundled migrations folder (package data, so it works from a wheel as well as from the source tree)."""
    return resources.files("bot.store").joinpath("migrations")


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """Read and validate every `NNNN_name.sql` in `directory` (default: the bundled folder), sorted by version.

    Other `.sql` names are an error rather than ignored: a misnamed file would otherwise be silently skipped and its
    schema never created.
    """
    folder = migrations_dir() if directory is None else directory
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_lowercase_name.sql")
        found.append(
            Migration(
                version=int(match["version"]), name=match["name"], sql=entry.read_text(encoding="utf-8")
            )
        )
    found.sort(key=lambda m: m.version)
    check_numbering(found)
    return found


def check_numbering(migrations: Sequence[Migration]) -> None:
    """Raise `MigrationError` unless the versions are exactly 1, 2, ..., n (sorted, no gap, no duplicate)."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            names = ", ".join(m.filename for m in migrations)
            raise MigrationError(
                f"migration numbering must run 1..n without gaps or duplicates; expected {expected:04d}, "
                f"found {migration.filename} (files: {names})"
            )


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements, honouring strings, comments and trigger bodies.

    `executescript` cannot be used: Python's sqlite3 commits any open transaction before running it, which would
    break the one-transaction-per-migration guarantee.
    """
    statements: list[str] = []
    *pieces, tail = sql.split(";")
    pending = ""
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _has_code(pending):
                statements.append(pending.strip())
            pending = ""
    # Whatever follows the last complete statement: comments and blank lines are fine, an unterminated one is not.
    tail = pending + tail
    if _has_code(tail):
        raise MigrationError(f"unterminated SQL statement in migration: {tail.strip()[:80]!r}")
    return statements


def _has_code(sql: str) -> bool:
    """True if `sql` holds anything besides whitespace, `--` comments and semicolons."""
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.DOTALL)
    return bool(without_comments.replace(";", "").strip())


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The database's `PRAGMA user_version`."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    assert row is not None  # the pragma always answers one row
    return int(row[0])


async def apply_migrations(
    conn: aiosqlite.Connection, migrations: Iterable[Migration], *, db_label: str
) -> tuple[int, int]:
    """Bring the database on `conn` up to the last of `migrations`; return (version before, version after).

    `conn` must be in autocommit mode (`isolation_level=None`) so the explicit transactions here are the only ones.
    A database newer than the code is refused, not touched: running old code on a new schema could corrupt it.
    """
    steps = list(migrations)
    check_numbering(steps)
    latest = steps[-1].version if steps else 0
    before = await schema_version(conn)
    if before > latest:
        raise StoreError(
            f"database {db_label} is at schema version {before} but this Familiar knows only up to {latest}; "
            "upgrade Familiar or restore a backup"
        )
    for migration in steps[before:]:
        await _apply_one(conn, migration, db_label=db_label)
    after = await schema_version(conn)
    if after != before:
        log.info("database %s upgraded from schema version %d to %d", db_label, before, after)
    return before, after


async def _apply_one(conn: aiosqlite.Connection, migration: Migration, *, db_label: str) -> None:
    # IMMEDIATE takes the write lock up front, and the version is re-read under it, so two processes starting on
    # the same file cannot both apply a step.
    await conn.execute("BEGIN IMMEDIATE")
    try:
        current = await schema_version(conn)
        if current >= migration.version:
            await conn.execute("COMMIT")
            return
        for statement in split_statements(migration.sql):
            await conn.execute(statement)
        # The header field is part of the transaction: the version moves only if every statement succeeded.
        await conn.execute(f"PRAGMA user_version = {migration.version:d}")
        await conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise MigrationError(
                f"migration {migration.filename} failed on database {db_label}: {exc}"
            ) from exc
        raise
    log.info("applied migration %s to %s", migration.filename, db_label)
