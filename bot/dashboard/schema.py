"""The dashboard's schema step (rollups, triggers, indexes): `bot/dashboard/migration.sql`.

It belongs in `bot/store/migrations/` as the next numbered file (0006_dashboard.sql, after the platforms' 0005).
Migration numbers must run 1..n without a gap, so until 0005 exists it cannot sit there without breaking every
database; meanwhile `dashboard_migrations()` appends it to the bundled steps as the next number. Once the file is
bundled this function returns the bundled list unchanged.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bot.store import Migration, Store, load_migrations

NAME = "dashboard"


def dashboard_migrations() -> list[Migration]:
    bundled = load_migrations()
    if any(m.name == NAME for m in bundled):
        return bundled
    sql = resources.files("bot.dashboard").joinpath("migration.sql").read_text(encoding="utf-8")
    return [*bundled, Migration(version=len(bundled) + 1, name=NAME, sql=sql)]


async def open_store(path: str | Path) -> Store:
    """`Store.open` with the dashboard's step included."""
    return await Store.open(path, migrations=dashboard_migrations())
