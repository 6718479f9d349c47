"""A real retrain on a dialogue corpus nobody here wrote, fed in as chat from consenting viewers.

    pip download --no-deps chatterbot-corpus==1.3.3 -d /tmp/cc
    python -m bench.retrain_corpus /tmp/cc/chatterbot_corpus-1.3.3-py2.py3-none-any.whl --junk 200

The ChatterBot English corpus (BSD-3-Clause), minus the categories the general-chat reference is made of, is logged
as conversations between consenting viewers and the character, with ``--junk`` lines of junk (keyboard mash, odd
Unicode, copy-paste spam, one person's flood) mixed in. Then `familiar retrain`'s own code runs on a fresh data
folder (the bundled tuning adopted as the serving version, the real training worker): it prints what the
data-quality step dropped, the three gate figures before and after, the decision, the training speed and the
worker's peak resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML comes with the bench's corpus tooling

from bot.config import config_from_dict
from bot.store import ConversationLog, MessageRecord, Store
from cogs.admin.service import ModelService
from cogs.admin.serving import serving_adapter
from cogs.common.actor import Actor
from cogs.privacy.service import PrivacyService
from models.persona import default_card_path, load_card

LOG_CATEGORIES = (
    "movies",
    "sports",
    "literature",
    "money",
    "health",
    "gossip",
    "psychology",
    "science",
    "history",
)
ADMIN = Actor("console", "owner", "owner", is_admin=True)
VIEWERS = 40


def corpus_conversations(source: Path) -> list[list[str]]:
    out = []
    with zipfile.ZipFile(source) as wheel:
        for category in LOG_CATEGORIES:
            text = wheel.read(f"chatterbot_corpus/data/english/{category}.yml").decode("utf-8")
            for conversation in yaml.safe_load(text)["conversations"]:
                lines = [str(t).strip() for t in conversation if str(t).strip()]
                if len(lines) >= 2:
                    out.append(lines)
    return out


def junk_lines(count: int, rng: random.Random) -> list[str]:
    kinds = [
        lambda: "".join(rng.choice("asdfghjklqwertyuiopzxcvbnm") for _ in range(rng.randint(8, 30))),
        lambda: "".join(chr(rng.randint(0x2500, 0x25FF)) for _ in range(rng.randint(3, 12))),
        lambda: "!!!!!!!!!!" * rng.randint(1, 4),
        lambda: "FREE FOLLOWERS at bestviewers dot com",
        lambda: "x" * rng.randint(10, 60),
        lambda: " ".join("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(5)) for _ in range(3)),
    ]
    return [rng.choice(kinds)() for _ in range(count)]


async def fill_log(store: Store, conversations: list[list[str]], junk: list[str]) -> int:
    log = ConversationLog(store)
    rows = 0

    async def say(conversation: str, viewer: int, user_text: str, reply: str) -> None:
        nonlocal rows
        await log.log(MessageRecord(platform="console", channel_id="corpus", conversation_id=conversation,
                                    author_id=f"viewer{viewer}", author_name=f"viewer{viewer}", role="user",
                                    content=user_text))  # fmt: skip
        await log.log(MessageRecord(platform="console", channel_id="corpus", conversation_id=conversation,
                                    author_id="familiar", author_name="Wick", role="assistant", content=reply))  # fmt: skip
        rows += 2

    for index, lines in enumerate(conversations):
        for said, answer in zip(lines[::2], lines[1::2], strict=False):
            await say(f"corpus-{index}", index % VIEWERS, said, answer)
    for index, line in enumerate(junk):
        viewer = 999 if index % 3 == 0 else index % VIEWERS  # a third of the junk is one person's flood
        await say(f"junk-{index % 20}", viewer, line, line[::-1] or "?")
    await store.flush()
    return rows


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(1)
    conversations = corpus_conversations(Path(args.corpus))
    junk = junk_lines(args.junk, rng)
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict(
            {
                "bot": {"data_dir": str(Path(tmp) / "data")},
                "model": {"source": args.source, "device": args.device},
                "privacy": {"console_consent": "all"},
                "training": {
                    "max_steps": args.steps,
                    "persona_samples": args.samples,
                    "torch_threads": args.threads,
                },
            }
        )
        async with await Store.open(config.database_path) as store:
            rows = await fill_log(store, conversations, junk)
            print(f"logged {rows} rows: {len(conversations)} corpus conversations, {len(junk)} junk lines")
            privacy = PrivacyService(store=store, config=config.privacy)
            service = ModelService(config=config, store=store, privacy=privacy, card=load_card(default_card_path()),
                                   serving_adapter=serving_adapter(config))  # fmt: skip
            print(f"serving: {service.served_name()}")
            dataset = await service.build_dataset()
            print("dataset:", {k: v for k, v in dataset.stats.as_dict().items() if v})
            started = time.perf_counter()
            result = await service.retrain(ADMIN, on_progress=lambda line: print(f"  {line}", flush=True))
            elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB (Linux)
    print(f"\nresult: {result.status}: {result.message}")
    metrics = result.metrics
    print(
        f"training: {metrics.get('steps')} steps, {metrics.get('tokens_per_s')} tok/s, {elapsed:.0f} s in all"
    )
    print(f"training worker peak resident memory: {peak:.0f} MiB (target <= 2560)")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retrain_corpus", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "corpus", help="the chatterbot-corpus wheel (pip download --no-deps chatterbot-corpus)"
    )
    parser.add_argument("--junk", type=int, default=200, help="junk lines mixed into the log")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (0 = the configured epochs)")
    parser.add_argument("--samples", type=int, default=3, help="sampled replies per persona question")
    parser.add_argument("--threads", type=int, default=0, help="training threads (0 = half the cores)")
    parser.add_argument("--source", default="embedded")
    parser.add_argument("--device", default="cpu")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
