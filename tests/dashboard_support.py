"""A database filled like a lived-in bot, for the dashboard's tests (unit, end-to-end and browser)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bot.store import Store, load_migrations

__all__ = ["dashboard_migrations", "fill", "open_store", "write_registry"]


async def open_store(path: str | Path) -> Store:
    return await Store.open(path)


def dashboard_migrations():
    """The bundled migrations up to and including the dashboard's rollups (the step a test may hold back)."""
    steps = load_migrations()
    last = next(i for i, m in enumerate(steps) if m.name == "dashboard")
    return steps[: last + 1]


XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'
SECRET = "correct-horse-battery-staple-42"


def write_registry(data_dir: Path, now: float) -> None:
    """Two trained versions: v0001 promoted, v0002 rejected; the pointer at v0001 (only meta.json is read)."""
    root = data_dir / "adapters"
    for name, promoted, loss in (("v0001", True, 2.1), ("v0002", False, 2.3)):
        (root / name).mkdir(parents=True, exist_ok=True)
        meta = {
            "version": name,
            "created_at": now - 5 * 86_400 + (0 if name == "v0001" else 86_400),
            "promoted": promoted,
            "metrics": {"serving_loss": 2.5, "candidate_loss": loss},
            "gate": {"promote": promoted, "reasons": [] if promoted else ["held-out loss did not improve"]},
            "requested_by": "owner",
        }
        if promoted:
            meta["promoted_at"] = meta["created_at"] + 60
        (root / name / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    (root / "ACTIVE").write_text("v0001\n", encoding="utf-8")


_INSERT = (
    "INSERT INTO messages (platform, channel_id, conversation_id, author_id, author_name, role, content, "
    "created_at, model_version, latency_ms, rating) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
BASE_VERSION = "embedded:SmolLM2-135M-Instruct"
ADAPTER_VERSION = "embedded+adapter:v0001"


async def fill(store: Store, now: float | None = None) -> dict[str, int]:
    """Messages over two days on three channels, ratings on two model versions, a poll and a story.

    Returns the expected numbers the tests check against.
    """
    now = time.time() if now is None else now
    rows = []
    people = [
        ("discord", "d-ann", "Ann"),
        ("discord", "d-bob", "Bob"),
        ("twitch", "t-cat", "cat_streams"),
        ("discord", "d-evil", XSS_SCRIPT),
        ("twitch", "t-img", XSS_IMG),
    ]
    channels = {"discord": ["100", "200"], "twitch": ["mychannel"]}
    lines = [
        "I love the dragon castle quest, it is great!",
        "The dragon castle boss fight was terrible and awful",
        "Pizza night on stream was fun",
        "What music playlist is playing on stream?",
        XSS_SCRIPT + " " + XSS_IMG,
    ]
    expected = {"user": 0, "replies": 0, "up": 0, "down": 0, "base_replies": 0, "adapter_replies": 0}
    for i in range(60):
        platform, author, name = people[i % len(people)]
        channel = channels[platform][i % len(channels[platform])]
        at = now - 3600 * (i % 30) - 60
        rows.append(
            (
                platform,
                channel,
                f"{platform}:{channel}",
                author,
                name,
                "user",
                lines[i % 5],
                at,
                None,
                None,
                None,
            )
        )
        version = BASE_VERSION if i < 30 else ADAPTER_VERSION
        rating = 1 if i % 3 == 0 else (-1 if i % 3 == 1 else None)
        latency = 400 if version == BASE_VERSION else 200
        rows.append(
            (platform, channel, f"{platform}:{channel}", "familiar", "Familiar", "assistant", "Happy to help!",
             at + 1, version, latency, rating)
        )  # fmt: skip
        expected["user"] += 1
        expected["replies"] += 1
        expected["up"] += rating == 1
        expected["down"] += rating == -1
        expected["base_replies" if version == BASE_VERSION else "adapter_replies"] += 1
    rows.append(("console", "local", "console:local", "familiar", "Familiar", "system", "[conversation reset]",
                 now - 30, None, None, None))  # fmt: skip
    await store.write_many(_INSERT, rows)

    async def polls_and_story(tx):
        poll = await tx.execute(
            "INSERT INTO polls (question, multi, creator_platform, creator_id, creator_name, created_at, closes_at, "
            "status) VALUES (?, 0, 'discord', 'd-ann', ?, ?, ?, 'closed')",
            (f"Best snack? {XSS_SCRIPT}", XSS_IMG, now - 7200, now - 3600),
        )
        for pos, label in ((1, "Pizza"), (2, "Tacos <b>bold</b>")):
            await tx.execute("INSERT INTO poll_options (poll_id, position, label) VALUES (?, ?, ?)",
                             (poll.lastrowid, pos, label))  # fmt: skip
        for i, (platform, user, option) in enumerate(
            (("discord", "d-ann", 1), ("discord", "d-bob", 1), ("twitch", "t-cat", 2))
        ):
            await tx.execute(
                "INSERT INTO poll_votes (poll_id, platform, user_id, slot, option, voted_at) VALUES (?, ?, ?, 0, ?, ?)",
                (poll.lastrowid, platform, user, option, now - 7000 + i),
            )
        game = await tx.execute(
            "INSERT INTO story_games (platform, channel_id, premise, narrator, status, started_by, started_by_name, "
            "created_at) VALUES ('discord', '100', ?, 'Familiar', 'active', 'd-bob', 'Bob', ?)",
            (f"A heist {XSS_IMG}", now - 5000),
        )
        for number in (1, 2, 3):
            turn = await tx.execute(
                "INSERT INTO story_turns (game_id, number, action_kind, action, narration, status, opened_at) "
                "VALUES (?, ?, ?, 'go', 'The door creaks.', ?, ?)",
                (game.lastrowid, number, "start" if number == 1 else "choice", "closed" if number < 3 else "open",
                 now - 5000 + number),
            )  # fmt: skip
            await tx.execute(
                "INSERT INTO story_options (turn_id, position, kind, label) VALUES (?, 1, 'choice', 'Open it')",
                (turn.lastrowid,),
            )
            for user in ("d-ann", "d-bob") if number < 3 else ("d-ann",):
                await tx.execute(
                    "INSERT INTO story_votes (turn_id, platform, user_id, user_name, option, voted_at) "
                    "VALUES (?, 'discord', ?, ?, 1, ?)",
                    (turn.lastrowid, user, user, now - 4000),
                )

    await store.transaction(polls_and_story)
    return expected
