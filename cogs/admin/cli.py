"""`familiar export-dataset | tune | retrain | model status|rollback | privacy ...`: the learning loop from a shell.

These commands open the database but never load the model into this process (training runs in its own). A bot
running meanwhile notices a moved pointer within `training.pointer_check_s` and hot-swaps to it
(`ModelService.follow_pointer`); the chat commands swap at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from bot.config import Config
from cogs.common.actor import Actor
from models import quality

if TYPE_CHECKING:
    from cogs.admin.service import ModelService
    from cogs.privacy.service import ConsentWords, PrivacyService

COMMANDS = frozenset({"export-dataset", "tune", "retrain", "model", "privacy"})
TUNE_HELP = (
    "Train the character on its own material (its card, the dialogue files next to it, moderators' teachings) "
    "plus the consenting log when there is enough of it; gate the new adapter on held-out loss, general chat loss "
    "and persona score, and promote it if it passes (resumes an interrupted run)."
)
CLI_ACTOR = Actor(platform="console", user_id="cli", name="the command line", is_admin=True)
PLATFORM_CHOICES = ("discord", "twitch", "console")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export-dataset", help="write the training examples (consent applied) as JSONL")
    export.add_argument("--out", required=True, metavar="FILE", help="output file (train and eval examples)")
    export.add_argument("--eval-out", metavar="FILE", help="write the held-out examples here instead")
    tune = sub.add_parser(
        "tune",
        help="train the character on its card, dialogue files and teachings; promote it if better",
        description=TUNE_HELP,
    )
    tune.add_argument(
        "--fresh", action="store_true", help="start over instead of resuming a run that a stop interrupted"
    )
    retrain = sub.add_parser(
        "retrain",
        help="train a new adapter from the log, gate it, promote it if better (resumes an interrupted one)",
    )
    retrain.add_argument(
        "--fresh",
        action="store_true",
        help="start over instead of resuming a retrain that a stop interrupted",
    )
    model = sub.add_parser("model", help="adapter versions: status, rollback")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    model_sub.add_parser("status", help="the serving version and the latest trained ones")
    rollback = model_sub.add_parser("rollback", help="serve an earlier version (default: the previous one)")
    rollback.add_argument("version", nargs="?", help="vNNNN, or 'base' for no adapter")
    privacy = sub.add_parser("privacy", help="a person's consent, data export and deletion; log retention")
    privacy_sub = privacy.add_subparsers(dest="privacy_command", metavar="ACTION", required=True)
    consent = privacy_sub.add_parser("consent", help="show or set a person's training consent")
    consent.add_argument("platform", choices=PLATFORM_CHOICES)
    consent.add_argument("user_id")
    consent.add_argument(
        "choice", nargs="?", choices=("on", "off"), help="on: their messages from now on count; off: none do"
    )
    consent.add_argument(
        "--include-history",
        action="store_true",
        help="with on: their messages from before count too (default: only those from now on)",
    )
    for name, text in (
        ("forget", "delete everything logged from a person"),
        ("export", "print a person's data"),
    ):
        p = privacy_sub.add_parser(name, help=text)
        p.add_argument("platform", choices=PLATFORM_CHOICES)
        p.add_argument("user_id")
    privacy_sub.add_parser("prune", help="apply privacy.retention_days now")


@asynccontextmanager
async def _services(config: Config) -> AsyncIterator[tuple[PrivacyService, ModelService]]:
    # Imported here so `familiar --help` does not pay for torch.
    from bot.runtime import load_persona
    from bot.store import Store
    from cogs.admin.service import ModelService
    from cogs.admin.serving import serving_adapter
    from cogs.privacy.service import PrivacyService
    from cogs.teach.privacy import TEACHINGS_HOOK

    card = load_persona(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with await Store.open(config.database_path) as store:
        privacy = PrivacyService(store=store, config=config.privacy)
        privacy.register_hook(TEACHINGS_HOOK)  # as in the running bot: forget and export cover teachings
        models = ModelService(
            config=config, store=store, privacy=privacy, card=card, serving_adapter=serving_adapter(config)
        )
        try:
            yield privacy, models
        finally:
            await models.close()


async def run(command: str, config: Config, args: argparse.Namespace) -> int:
    if getattr(args, "include_history", False) and args.choice != "on":
        print("familiar privacy consent: --include-history goes with on", file=sys.stderr)
        return 2
    async with _services(config) as (privacy, models):
        if command == "export-dataset":
            dataset = await models.build_dataset()
            dataset.write(args.out, args.eval_out)
            s = dataset.stats
            print(
                f"wrote {len(dataset.train)} training and {len(dataset.eval)} held-out examples from "
                f"{s.conversations} conversations to {args.out}{' and ' + args.eval_out if args.eval_out else ''} "
                f"(left out: {s.excluded_no_consent} without consent, {s.excluded_deleted} deleted, "
                f"{s.excluded_downvoted} rated 👎, {s.excluded_length} too long/short, {s.duplicates} duplicates; "
                f"the data-quality step kept {s.examples} of {s.candidates} candidates"
                f"{': dropped ' + quality.describe(s.quality_dropped) if s.examples < s.candidates else ''})"
            )
            refusal = models.quality_refusal(dataset)
            if refusal:
                print(f"A retrain now would answer: {refusal}")
            return 0
        if command in ("tune", "retrain"):
            train = models.tune if command == "tune" else models.retrain
            result = await train(
                CLI_ACTOR, on_progress=lambda line: print(line, flush=True), fresh=args.fresh
            )
            print(result.message)
            return 0 if result.ok else 1
        if command == "model":
            if args.model_command == "status":
                print("\n".join(models.status()))
                return 0
            message = await models.rollback(CLI_ACTOR, args.version)
            print(message)
            return 1 if message.startswith("Refused") else 0
        if args.privacy_command == "consent":
            if args.choice is None:
                print(await privacy.status(args.platform, args.user_id, words=_cli_words(args)))
            else:
                print(
                    await privacy.set_consent(
                        args.platform,
                        args.user_id,
                        args.choice == "on",
                        include_history=args.include_history,
                        words=_cli_words(args),
                    )
                )
        elif args.privacy_command == "forget":
            print((await privacy.forget(args.platform, args.user_id)).summary())
        elif args.privacy_command == "export":
            json.dump(
                await privacy.export(args.platform, args.user_id), sys.stdout, indent=2, ensure_ascii=False
            )
            print()
        elif args.privacy_command == "prune":
            print(f"deleted {await privacy.prune()} log rows past retention")
        return 0


def _cli_words(args: argparse.Namespace) -> ConsentWords:
    """The answers name this command line's own forms (the operator reads them, not the person)."""
    from cogs.privacy.service import ConsentWords

    person = f"familiar privacy {{}} {args.platform} {args.user_id}"
    return ConsentWords(
        include_history=f"`{person.format('consent')} on --include-history`",
        off=f"`{person.format('consent')} off`",
        forget=f"`{person.format('forget')}`",
    )
