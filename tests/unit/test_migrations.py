"""Migration discovery, numbering and the upgrade path: new file, older file, newer file, failing step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.store import MigrationError, Store, StoreError
from bot.store.migrate import MIGRATION_FILE, load_migrations, migrations_dir, split_statements

LATEST = len(load_migrations())


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _copy_bundled(dest: Path) -> Path:
    """A writable copy of the bundled migrations folder, to add test-only steps to."""
    dest.mkdir()
    for entry in migrations_dir().iterdir():
        if entry.name.endswith(".sql"):
            (dest / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    return dest


def _build_v1(path: Path) -> None:
    """A database as Familiar with only 0001 left it, holding one message and one setting."""
    sql = load_migrations()[0].sql
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO messages (platform, channel_id, conversation_id, author_id, author_name, role, content,"
        " created_at) VALUES ('discord', 'c1', 'discord:c1', 'u1', 'Ann', 'user', 'hello from v1', 1.0)"
    )
    conn.execute("INSERT INTO kv (key, value, updated_at) VALUES ('greeting', 'hi', 1.0)")
    conn.commit()
    conn.close()


# -- the real migrations folder ---------------------------------------------------------------------------------


def test_bundled_migrations_are_numbered_one_to_n_without_gaps() -> None:
    names = sorted(e.name for e in migrations_dir().iterdir() if e.name.endswith(".sql"))
    assert names, "no migrations bundled"
    for name in names:
        assert MIGRATION_FILE.match(name), f"{name} is not named NNNN_lowercase_name.sql"
    versions = [int(name[:4]) for name in names]
    assert versions == list(range(1, len(names) + 1)), f"gap or duplicate in {names}"
    assert [m.version for m in load_migrations()] == versions


def test_bundled_migrations_each_parse_into_statements() -> None:
    for migration in load_migrations():
        statements = split_statements(migration.sql)
        assert statements, f"{migration.filename} has no statements"
        assert all(sqlite3.complete_statement(s) for s in statements)


# -- numbering errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "expected 0002"),
        (["0001_a.sql", "0001_b.sql"], "expected 0002"),
        (["0002_b.sql"], "expected 0001"),
        (["0001_a.sql", "2_b.sql"], "not named"),
        (["0001_a.sql", "0002_Bad-Name.sql"], "not named"),
    ],
)
def test_gaps_duplicates_and_bad_names_are_refused(tmp_path: Path, names: list[str], message: str) -> None:
    for name in names:
        (tmp_path / name).write_text(f"CREATE TABLE t_{name[:4]} (x);", encoding="utf-8")
    with pytest.raises(MigrationError, match=message):
        load_migrations(tmp_path)


def test_non_sql_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x);", encoding="utf-8")
    (tmp_path / "README.md").write_text("notes", encoding="utf-8")
    assert [m.filename for m in load_migrations(tmp_path)] == ["0001_a.sql"]


# -- statement splitting ----------------------------------------------------------------------------------------


def test_split_statements_keeps_strings_comments_and_trigger_bodies_whole() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'semi;colon');
    /* block; comment */
    CREATE TRIGGER a_ins AFTER INSERT ON a BEGIN
        UPDATE a SET x = 'y;' WHERE rowid = new.rowid;
        SELECT 1;
    END;
    -- trailing comment
    """
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].endswith("DEFAULT 'semi;colon');")
    assert "CREATE TRIGGER a_ins" in statements[1] and statements[1].endswith("END;")


def test_split_statements_refuses_an_unterminated_statement() -> None:
    with pytest.raises(MigrationError, match="unterminated"):
        split_statements("CREATE TABLE a (x); CREATE TABLE b (y)")


# -- applying ---------------------------------------------------------------------------------------------------


async def test_new_database_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "data" / "familiar.db"  # the data folder does not exist yet
    async with await Store.open(path):
        pass
    assert _user_version(path) == LATEST
    assert {"messages", "kv"} <= _tables(path)
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {
        "messages_platform_message",
        "messages_conversation_time",
        "messages_platform_author",
        "messages_created_at",
    } <= indexes


async def test_reopening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "familiar.db"
    for _ in range(2):
        async with await Store.open(path) as store:
            await store.kv_set("k", "v")
    assert _user_version(path) == LATEST


async def test_version_0_file_with_foreign_data_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "familiar.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE legacy (x TEXT)")
        conn.execute("INSERT INTO legacy VALUES ('kept')")
    async with await Store.open(path) as store:
        assert await store.fetchval("SELECT x FROM legacy") == "kept"
    assert _user_version(path) == LATEST


async def test_version_1_database_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "familiar.db"
    _build_v1(path)
    folder = _copy_bundled(tmp_path / "migrations")
    next_version = LATEST + 1
    (folder / f"{next_version:04d}_test_extra.sql").write_text(
        "ALTER TABLE messages ADD COLUMN lang TEXT;\n"
        "CREATE TABLE test_extra (id INTEGER PRIMARY KEY, question TEXT NOT NULL);\n",
        encoding="utf-8",
    )
    async with await Store.open(path, migrations=load_migrations(folder)) as store:
        row = await store.fetchone("SELECT content, lang FROM messages")
        assert row is not None
        assert (row["content"], row["lang"]) == ("hello from v1", None)
        assert await store.kv_get("greeting") == "hi"
        await store.write("INSERT INTO test_extra (question) VALUES (?)", ("tea or coffee?",))
    assert _user_version(path) == next_version
    assert "test_extra" in _tables(path)


async def test_newer_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "familiar.db"
    newer = LATEST + 2
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    expected = (
        f"database {path} is at schema version {newer} but this Familiar knows only up to {LATEST}; "
        "upgrade Familiar or restore a backup"
    )
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    assert str(info.value) == expected
    assert _user_version(path) == newer
    assert _tables(path) == set()


async def test_failing_migration_rolls_back_to_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "familiar.db"
    folder = _copy_bundled(tmp_path / "migrations")
    bad = folder / f"{LATEST + 1:04d}_broken.sql"
    bad.write_text("CREATE TABLE half_done (x);\nINSERT INTO no_such_table VALUES (1);\n", encoding="utf-8")
    with pytest.raises(MigrationError, match=bad.name):
        await Store.open(path, migrations=load_migrations(folder))
    assert _user_version(path) == LATEST  # the good steps stay, the broken one left no trace
    assert "half_done" not in _tables(path)
    # Fixed, it applies on the next start.
    bad.write_text("CREATE TABLE half_done (x);\n", encoding="utf-8")
    async with await Store.open(path, migrations=load_migrations(folder)):
        pass
    assert _user_version(path) == LATEST + 1
