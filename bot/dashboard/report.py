"""`familiar report --out FILE.html`: every dashboard view as one self-contained static page."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bot.config import Config, ConfigError
from bot.dashboard.pages import Pages, Sources
from bot.store import Store

log = logging.getLogger(__name__)

MAX_DAYS = 366


async def write_report(
    config: Config, out: Path, *, days: int | None = None, character: str | None = None
) -> Path:
    """Render the report from the configured database into `out` (written atomically); returns the path."""
    days = config.dashboard.window_days if days is None else days
    if not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"report: --days must be between 1 and {MAX_DAYS}, not {days}")
    if not config.database_path.is_file():
        raise ConfigError(f"report: there is no database at {config.database_path} yet (has the bot run?)")
    if character is None:
        from bot.runtime import load_persona

        character = load_persona(config).char_name
    async with await Store.open(config.database_path) as store:
        html = await Pages(Sources(config=config, store=store, character=character)).report(days)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    log.info("report written to %s (%d bytes)", out, len(html.encode("utf-8")))
    return out
