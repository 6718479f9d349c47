"""Consent counts from the moment it is given: earlier messages only when the person includes them, none after a
withdrawal; opt-out and all places; the texts each platform shows; the 0011 migration of older databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.config import PrivacyConfig
from bot.store import ConversationLog, MessageRecord, Store
from bot.store.migrate import load_migrations
from cogs.privacy.service import ALL_MESSAGES, PrivacyService, parse_choice
from models.dataset import DatasetLimits, build_dataset, load_log_rows
from models.persona import Card


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(author: str, content: str, at: float, *, role: str, platform: str, conv: str) -> MessageRecord:
    return MessageRecord(
        platform=platform, channel_id="1", conversation_id=conv, author_id=author,
        author_name=author.title(), role=role, content=content, created_at=at,
    )  # fmt: skip


async def say(log: ConversationLog, author: str, text: str, at: float, platform: str = "discord") -> None:
    """One exchange in the person's own conversation: their message at `at`, the character's answer right after."""
    conv = f"{platform}:{author}"
    await log.log_durable(record(author, text, at, role="user", platform=platform, conv=conv))
    await log.log_durable(
        record("wick", f"Wick answers: {text}", at + 1, role="assistant", platform=platform, conv=conv)
    )


async def learnt(store: Store, privacy: PrivacyService) -> list[str]:
    """The people's messages a retrain built now would learn from (as context or as the question answered)."""
    rows = await load_log_rows(store)
    ds = build_dataset(
        rows,
        card=Card(name="Wick"),
        allowed=await privacy.allowed_predicate(),
        limits=DatasetLimits(eval_fraction=0),
    )
    found = {m["content"] for e in ds.train + ds.eval for m in e["messages"] if m["role"] == "user"}
    return sorted(text.split(": ", 1)[1] for text in found)


def service(store: Store, clock: Clock, **modes: str) -> PrivacyService:
    return PrivacyService(store=store, config=PrivacyConfig(**modes), clock=clock)


async def test_consent_counts_from_then_unless_history_is_included(tmp_path):
    clock = Clock()
    async with await Store.open(tmp_path / "db.sqlite") as store:
        privacy = service(store, clock, discord_consent="opt-in")
        log = ConversationLog(store)
        await say(log, "ann", "before one", 100)
        await say(log, "ann", "before two", 200)
        assert await learnt(store, privacy) == []

        clock.now = 300
        text = await privacy.set_consent("discord", "ann", True)
        assert text.startswith("Thank you! From now on your messages may be used to teach me.")
        assert "Your earlier messages stay out; use `/privacy consent choice:on include_history:True`" in text
        await say(log, "ann", "after one", 400)
        assert await learnt(store, privacy) == ["after one"]
        allowed = await privacy.allowed_predicate()
        assert not allowed("discord", "ann", 299.9) and allowed("discord", "ann", 300)
        assert await privacy.usable_from("discord", "ann") == 300

        # Saying on again keeps the start: nothing already counted drops out.
        clock.now = 500
        again = await privacy.set_consent("discord", "ann", True)
        assert again.startswith("You already said yes on 1970-01-01 00:05 UTC") and "stay out" in again
        assert await learnt(store, privacy) == ["after one"]

        # Including history adds the earlier ones.
        text = await privacy.set_consent("discord", "ann", True, include_history=True)
        assert text.startswith("Thank you! Your messages may be used to teach me, earlier ones included.")
        assert await learnt(store, privacy) == ["after one", "before one", "before two"]
        assert await privacy.usable_from("discord", "ann") == ALL_MESSAGES
        status = await privacy.status("discord", "ann")
        assert status == (
            "Training consent here is opt-in; you said on, earlier messages included, "
            "so your messages are used, earlier ones included."
        )
        # ... and a plain `on` after that does not take them away.
        assert (await privacy.set_consent("discord", "ann", True)).startswith(
            "Your messages here were already used"
        )
        assert await learnt(store, privacy) == ["after one", "before one", "before two"]

        # Withdrawing stops every use: the next dataset has none of hers, earlier or later.
        clock.now = 600
        off = await privacy.set_consent("discord", "ann", False)
        assert off.startswith(
            "Done: your messages will not be used to teach me any more, earlier ones included"
        )
        await say(log, "ann", "after off", 700)
        assert await learnt(store, privacy) == []

        # Consent given again counts from the new moment only.
        clock.now = 800
        await privacy.set_consent("discord", "ann", True)
        await say(log, "ann", "after on again", 900)
        assert await learnt(store, privacy) == ["after on again"]
        assert "you said on at 1970-01-01 00:13 UTC" in await privacy.status("discord", "ann")


async def test_history_at_first_consent_and_forget(tmp_path):
    clock = Clock(50)
    async with await Store.open(tmp_path / "db.sqlite") as store:
        privacy = service(store, clock, discord_consent="opt-in")
        log = ConversationLog(store)
        await say(log, "bob", "old words", 10)
        await privacy.set_consent("discord", "bob", True, include_history=True)
        await say(log, "bob", "new words", 60)
        assert await learnt(store, privacy) == ["new words", "old words"]

        clock.now = 100
        await privacy.forget("discord", "bob")
        await say(log, "bob", "said after forget", 110)
        assert await learnt(store, privacy) == []
        clock.now = 200
        await privacy.set_consent(
            "discord", "bob", True
        )  # history is not carried over from before the forget
        await say(log, "bob", "said after consenting again", 210)
        assert await learnt(store, privacy) == ["said after consenting again"]


async def test_opt_out_and_all_places(tmp_path):
    clock = Clock(100)
    async with await Store.open(tmp_path / "db.sqlite") as store:
        privacy = service(store, clock, twitch_consent="opt-out", console_consent="all")
        log = ConversationLog(store)
        for who in ("carl", "dora", "eve"):
            await say(log, who, f"{who} early", 10, platform="twitch")
        await say(log, "local", "console early", 10, platform="console")
        # Nobody said anything: everyone counts fully.
        assert await learnt(store, privacy) == ["carl early", "console early", "dora early", "eve early"]

        # carl says on: he already counted, earlier messages included, and still does.
        text = await privacy.set_consent("twitch", "carl", True)
        assert text.startswith("Your messages here were already used to teach me, earlier ones included")
        assert "everyone who has not said `!consent off`" in text
        # dora says off, later on again: from then on only. eve says off, later on with her history.
        await privacy.set_consent("twitch", "dora", False)
        await privacy.set_consent("twitch", "eve", False)
        await privacy.set_consent(
            "console", "local", False
        )  # noted, but the owner learns from everything here
        await say(log, "dora", "dora while off", 150, platform="twitch")
        assert await learnt(store, privacy) == ["carl early", "console early"]
        clock.now = 200
        dora = await privacy.set_consent("twitch", "dora", True)
        assert "Your earlier messages stay out; use `!consent history` to include them." in dora
        eve = await privacy.set_consent("twitch", "eve", True, include_history=True)
        assert eve.startswith("Thank you! Your messages may be used to teach me, earlier ones included.")
        for who in ("carl", "dora", "eve"):
            await say(log, who, f"{who} late", 300, platform="twitch")
        assert await learnt(store, privacy) == [
            "carl early", "carl late", "console early", "dora late", "eve early", "eve late",
        ]  # fmt: skip
        allowed = await privacy.allowed_predicate()
        assert allowed("twitch", "someone-new", 0.0) and allowed("console", "local", 0.0)


async def test_export_shows_since_and_history(tmp_path):
    clock = Clock(3_600)
    async with await Store.open(tmp_path / "db.sqlite") as store:
        privacy = service(store, clock, discord_consent="opt-in")
        assert (await privacy.export("discord", "ann"))["training_consent"] == {
            "mode": "opt-in", "choice": None, "since": None, "include_history": None,
            "used_for_training": False, "messages_used": "none",
        }  # fmt: skip
        await privacy.set_consent("discord", "ann", True)
        assert (await privacy.export("discord", "ann"))["training_consent"] == {
            "mode": "opt-in", "choice": True, "since": 3_600.0, "include_history": False,
            "used_for_training": True, "messages_used": "those written from 1970-01-01 01:00 UTC on",
        }  # fmt: skip
        await privacy.set_consent("discord", "ann", True, include_history=True)
        consent = (await privacy.export("discord", "ann"))["training_consent"]
        assert consent["include_history"] is True and consent["messages_used"] == "all, earlier ones included"


def test_typed_consent_words():
    assert parse_choice("") == ("status", False)
    assert parse_choice(" ON ") == ("on", False)
    assert parse_choice("off") == ("off", False)
    assert parse_choice("history") == parse_choice("all") == parse_choice("on History") == ("on", True)
    assert parse_choice("on all") == ("on", True)
    assert parse_choice("off history") is None and parse_choice("maybe") is None


# -- the 0011 migration ------------------------------------------------------------------------------------------


def _database_at_0010(path: Path) -> None:
    """A database as Familiar left it before consent had a start: two choices made, messages from before them."""
    conn = sqlite3.connect(path)
    for migration in load_migrations()[:10]:
        conn.executescript(migration.sql)
    conn.execute("PRAGMA user_version = 10")
    conn.executemany(
        "INSERT INTO consent (platform, user_id, training, updated_at) VALUES (?, ?, ?, ?)",
        [("discord", "old-yes", 1, 500.0), ("discord", "old-no", 0, 500.0)],
    )
    for author in ("old-yes", "old-no"):
        conn.execute(
            "INSERT INTO messages (platform, channel_id, conversation_id, author_id, author_name, role, content,"
            " created_at) VALUES ('discord', '1', ?, ?, ?, 'user', ?, 100.0)",
            (f"discord:{author}", author, author, f"{author} before the upgrade"),
        )
        conn.execute(
            "INSERT INTO messages (platform, channel_id, conversation_id, author_id, author_name, role, content,"
            " created_at) VALUES ('discord', '1', ?, 'wick', 'Wick', 'assistant', ?, 101.0)",
            (f"discord:{author}", f"Wick answers {author}"),
        )
    conn.commit()
    conn.close()


async def test_migration_keeps_every_choice_and_old_consent_keeps_history(tmp_path):
    path = tmp_path / "familiar.db"
    _database_at_0010(path)
    async with await Store.open(path) as store:
        rows = await store.fetchall(
            "SELECT user_id, training, since, include_history FROM consent ORDER BY user_id"
        )
        assert [tuple(r) for r in rows] == [("old-no", 0, 500.0, 0), ("old-yes", 1, 500.0, 1)]
        privacy = service(store, Clock(1_000), discord_consent="opt-in")
        assert await learnt(store, privacy) == ["old-yes before the upgrade"]  # consented under the old rule
        assert await privacy.usable_from("discord", "old-yes") == ALL_MESSAGES
        assert await privacy.usable_from("discord", "old-no") is None


# -- the console and the command line name their own commands --------------------------------------------------


async def test_console_consent_command(tmp_path):
    from cogs.privacy.console import privacy_commands

    async with await Store.open(tmp_path / "db.sqlite") as store:
        privacy = service(store, Clock(100), console_consent="opt-in")
        consent = {c.name: c for c in privacy_commands(privacy, export_dir=tmp_path)}["consent"]
        on = await consent.handler("on")
        assert isinstance(on, str) and on.startswith("Thank you! From now on")
        assert "use `/consent on history` to include them. `/consent off` undoes it." in on
        assert "earlier ones included" in str(await consent.handler("on history"))
        assert (await privacy.consent("console", "local")) is not None
        assert str(await consent.handler("on maybe")).startswith("Usage: /consent on|off|status|on history")


def test_cli_consent_with_history(tmp_path, capsys):
    from bot.cli import main

    config = tmp_path / "config.toml"
    config.write_text(f'[bot]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    base = ["--config", str(config), "privacy", "consent", "discord", "42"]
    assert main([*base, "on"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("Thank you! From now on")
        and "`familiar privacy consent discord 42 on --include-history`" in out
    )
    assert main([*base, "on", "--include-history"]) == 0
    assert "earlier ones included" in capsys.readouterr().out
    assert main(base) == 0
    assert "you said on, earlier messages included" in capsys.readouterr().out
    assert main([*base, "off", "--include-history"]) == 2
    assert "--include-history goes with on" in capsys.readouterr().err
