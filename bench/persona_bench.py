"""Persona benchmark: is the served character itself? (``python -m bench.persona_bench``)

Asks every persona check of a card (its hand-written held-out questions and those derived from the card) several
times, each in a fresh chat, through the real serving path: the ChatService (prompt assembly, stops, cleaning) over
the engine that `make run` starts (dtype auto, 4-bit path, the adapter merged). It does so for the untuned model and
for the tuned one (the card's bundled adapter, or ``--adapter``), side by side in one run, and prints the share of
faithful replies against the target (>= 90%) with the general-chat reference loss of both (<= +5%).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bot.config import ChatConfig, GenerationConfig, PromptConfig
from bot.store import ConversationLog, Store
from cogs.admin.tuning_data import GENERAL_REFERENCE
from cogs.chat.service import ChatMessage, ChatService
from models.bundled import bundled_adapter_path
from models.engine import Engine
from models.loader import LoadedModel, ModelSpec, load_model
from models.persona import Card, default_card_path, load_card
from models.persona.checks import (
    PersonaCheck,
    PersonaScore,
    all_checks,
    checks_path_for,
    load_checks,
    score_replies,
)
from models.threads import call_in_own_thread
from models.tuning.persona_eval import asker

PERSONA_TARGET = 0.90
GENERAL_TOLERANCE = 0.05


async def ask_all(engine: Engine, card: Card, checks: Sequence[PersonaCheck], samples: int) -> PersonaScore:
    """Each check's question ``samples`` times, each in its own fresh conversation, at the bot's defaults."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "persona.db")
        try:
            service = ChatService(
                backend=engine,
                card=card,
                log_=ConversationLog(store),
                chat=ChatConfig(cooldown_s=0.0),
                generation=GenerationConfig(),
                prompt=PromptConfig(),
            )

            async def one(index: int, sample: int) -> str:
                reply = await service.respond(
                    ChatMessage(
                        platform="console",
                        conversation_id=f"persona-{index}-{sample}",
                        channel_id=f"persona-{index}-{sample}",
                        author_id=f"viewer{index}",
                        author_name=asker(index),
                        content=checks[index].question,
                    )
                )
                return reply.text

            replies = await asyncio.gather(*(one(i, s) for i in range(len(checks)) for s in range(samples)))
        finally:
            await store.close()
    grouped = [list(replies[i * samples : (i + 1) * samples]) for i in range(len(checks))]
    return score_replies(checks, grouped)


def general_loss(loaded: LoadedModel) -> float:
    """Loss per reply token on the shipped general-chat reference (the gate's second figure)."""
    import torch

    from models.training.data import encode_all, read_jsonl
    from models.training.trainer import ReplyLoss, eval_loss

    items, _ = encode_all(loaded.tokenizer, read_jsonl(GENERAL_REFERENCE), 512)
    model = loaded.model
    with torch.no_grad():
        return eval_loss(ReplyLoss(model), items, pad_id=loaded.tokenizer.pad_token_id, device=loaded.device)


async def measure(
    spec: ModelSpec, card: Card, checks: Sequence[PersonaCheck], samples: int
) -> tuple[PersonaScore, float]:
    loaded = call_in_own_thread(lambda: load_model(spec))
    async with Engine(loaded, max_batch=16) as engine:
        score = await ask_all(engine, card, checks, samples)
    fp32 = call_in_own_thread(lambda: load_model(ModelSpec(source=spec.source, adapter=spec.adapter,
                                                            device="cpu", dtype="float32")))  # fmt: skip
    return score, general_loss(fp32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.persona_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--card", default="", help="a card file (default: the bundled character)")
    parser.add_argument(
        "--adapter", default="", help="the tuned adapter (default: <card>.adapter next to it)"
    )
    parser.add_argument("--source", default="embedded")
    parser.add_argument("--samples", type=int, default=4, help="sampled replies per question")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    card_file = Path(args.card) if args.card else default_card_path()
    card = load_card(card_file)
    hand = load_checks(checks_path_for(card_file)) if checks_path_for(card_file).is_file() else []
    checks = all_checks(card, hand)
    adapter = Path(args.adapter) if args.adapter else bundled_adapter_path(card_file)
    if not adapter.is_dir():
        print(f"no tuned adapter at {adapter}: run `make character` or pass --adapter", file=sys.stderr)
        return 1
    print(f"{card.name}: {len(checks)} checks ({len(hand)} hand-written), {args.samples} samples each")
    rows = {}
    for label, path in (("untuned", None), ("tuned", str(adapter))):
        spec = ModelSpec(source=args.source, adapter=path, device="cpu", dtype="auto")
        rows[label] = asyncio.run(measure(spec, card, checks, args.samples))
        score, loss = rows[label]
        print(f"  {label}: persona {score.score:.1%} ({score.passed}/{score.total}), general loss {loss:.4f}")
    (before, loss_before), (after, loss_after) = rows["untuned"], rows["tuned"]
    print(f"\n{'figure':36} {'untuned':>9} {'tuned':>9}  target")
    print(f"{'persona score (served, sampled)':36} {before.score:>9.1%} {after.score:>9.1%}  >= {PERSONA_TARGET:.0%} "
          f"{'met' if after.score >= PERSONA_TARGET else 'NOT MET'}")  # fmt: skip
    change = loss_after / loss_before - 1
    print(f"{'general-chat reference loss':36} {loss_before:>9.4f} {loss_after:>9.4f}  <= +{GENERAL_TOLERANCE:.0%} "
          f"({change:+.1%}) {'met' if change <= GENERAL_TOLERANCE else 'NOT MET'}")  # fmt: skip
    for about, (passed, total) in sorted(after.by_about.items()):
        was = before.by_about.get(about, (0, 0))
        print(f"  {about:20} {was[0]:>3}/{was[1]:<3} -> {passed:>3}/{total}")
    for question, reply in after.failures:
        print(f"  unfaithful: {question!r} -> {reply!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
