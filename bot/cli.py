"""The `familiar` command (also `python -m bot`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from bot.config import DEFAULT_CONFIG, EXAMPLE_CONFIG, Config, ConfigError, load_config

log = logging.getLogger("familiar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="familiar",
        description="Familiar: a self-hosted, in-character AI companion for Discord and Twitch.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help=f"config file (default {DEFAULT_CONFIG}, else the bundled example)"
    )
    parser.add_argument(
        "--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (overrides the config)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run every platform enabled in the config (the console when none is)")
    sub.add_parser("chat", help="talk to the character in this terminal (or pipe lines in)")
    report = sub.add_parser("report", help="write the dashboard's views as one self-contained HTML page")
    report.add_argument("--out", metavar="FILE.html", required=True, help="where to write the page")
    report.add_argument(
        "--days", type=int, metavar="N", help="the community views' period (default dashboard.window_days)"
    )
    from cogs.admin import cli as admin_cli  # export-dataset, tune, retrain, model, privacy

    admin_cli.add_parsers(sub)
    return parser


def configure_logging(level: str) -> None:
    # stderr only: stdout belongs to the console chat, whose lines scripts read.
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("transformers", "accelerate", "peft", "discord.gateway", "apscheduler", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


def load(args: argparse.Namespace) -> Config:
    if args.config is None and not DEFAULT_CONFIG.exists():
        print(
            f"familiar: {DEFAULT_CONFIG} not found; using the defaults in {EXAMPLE_CONFIG}", file=sys.stderr
        )
    return load_config(args.config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    try:
        config = load(args)
        configure_logging(args.log_level or config.bot.log_level)
        return asyncio.run(dispatch(command, config, args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        print(f"familiar: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


async def dispatch(command: str, config: Config, args: argparse.Namespace) -> int:
    from bot.app import run_bot, run_console
    from cogs.admin import cli as admin_cli

    if command in admin_cli.COMMANDS:
        return await admin_cli.run(command, config, args)
    if command == "chat":
        return await run_console(config)
    if command == "report":
        from pathlib import Path

        from bot.dashboard.report import write_report

        out = await write_report(config, Path(args.out), days=args.days)
        print(f"familiar: report written to {out}")
        return 0
    return await run_bot(config)


def user_error(exc: BaseException) -> str | None:
    """A message for errors a person can act on; None for bugs, which keep their traceback."""
    from bot.store import StoreError
    from models.loader import ModelLoadError
    from models.persona import CardError

    if isinstance(exc, ConfigError | CardError | ModelLoadError | StoreError):
        return str(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
