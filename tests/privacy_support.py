"""What a leak test reads: every text value stored in some tables of a database file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


def table_cells(path: str | Path, tables: Sequence[str]) -> list[str]:
    """Every non-null value of every row of ``tables``, as text (where a forgotten id or name would show up)."""
    db = sqlite3.connect(path)
    try:
        found: list[str] = []
        for table in tables:
            for row in db.execute(f"SELECT * FROM {table}"):
                found.extend(str(v) for v in row if v is not None)
        return found
    finally:
        db.close()
