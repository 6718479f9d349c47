"""Consent modes, forget (with other features' tables), export and retention, over a real store."""

from __future__ import annotations

import time

from bot.config import PrivacyConfig
from bot.store import ConversationLog, MessageRecord, Store
from cogs.privacy.service import PrivacyHook, PrivacyService
from models.dataset import build_dataset, load_log_rows
from models.persona import Card


def msg(author, content, *, platform="discord", role="user", created_at=None, conv="discord:1"):
    return MessageRecord(
        platform=platform, channel_id="1", conversation_id=conv, author_id=author, author_name=author.title(),
        role=role, content=content, created_at=created_at or time.time(),
    )  # fmt: skip


async def test_consent_modes(tmp_path):
    async with await Store.open(tmp_path / "db.sqlite") as store:
        privacy = PrivacyService(
            store=store,
            config=PrivacyConfig(discord_consent="opt-in", twitch_consent="opt-out", console_consent="all"),
        )
        assert not await privacy.may_train("discord", "ann")
        await privacy.set_consent("discord", "ann", True)
        assert await privacy.may_train("discord", "ann")
        await privacy.set_consent("discord", "ann", False)
        assert not await privacy.may_train("discord", "ann")
        assert await privacy.may_train("twitch", "bob")
        await privacy.set_consent("twitch", "bob", False)
        assert not await privacy.may_train("twitch", "bob")
        await privacy.set_consent("console", "local", False)
        assert await privacy.may_train("console", "local")
        allowed = await privacy.allowed_predicate()
        now = time.time()
        assert not allowed("discord", "ann", now) and not allowed("twitch", "bob", now)
        assert allowed("twitch", "carl", 0.0)  # opt-out: an unlisted person counts fully
        assert "opt-out" in await privacy.status("twitch", "bob")


async def test_forget_deletes_messages_anonymises_votes_and_withdraws_consent(tmp_path):
    async with await Store.open(tmp_path / "db.sqlite") as store:
        privacy = PrivacyService(store=store, config=PrivacyConfig(discord_consent="opt-out"))
        log = ConversationLog(store)
        for text in ("one", "two"):
            await log.log_durable(msg("ann", text))
        await log.log_durable(msg("bob", "bob stays"))
        poll = await store.write(
            "INSERT INTO polls (question, creator_platform, creator_id, creator_name, created_at, closes_at) "
            "VALUES ('Best?', 'discord', 'ann', 'Ann', 1, 2)"
        )
        await store.write(
            "INSERT INTO poll_options (poll_id, position, label) VALUES (?, 1, 'a')", (poll.lastrowid,)
        )
        await store.write(
            "INSERT INTO poll_votes (poll_id, platform, user_id, slot, option, voted_at) VALUES (?, 'discord', 'ann', 0, 1, 1)",
            (poll.lastrowid,),
        )
        seen = []

        async def custom(tx, platform, user_id, anonymous):
            seen.append((platform, user_id, anonymous))
            return 7

        privacy.register_hook(PrivacyHook(name="custom feature", forget=custom))
        exported = await privacy.export("discord", "ann")
        assert [m["content"] for m in exported["messages"]] == ["one", "two"]
        assert exported["poll_votes"] == [{"poll_id": poll.lastrowid, "option": 1, "voted_at": 1.0}]

        report = await privacy.forget("discord", "ann")
        assert report.messages == 2
        assert report.anonymised["poll votes"] == 1 and report.anonymised["polls created"] == 1
        assert report.anonymised["custom feature"] == 7 and seen[0][:2] == ("discord", "ann")
        assert await store.fetchval("SELECT count(*) FROM messages WHERE author_id = 'ann'") == 0
        assert await store.fetchval("SELECT count(*) FROM poll_votes WHERE user_id = 'ann'") == 0
        assert await store.fetchval("SELECT count(*) FROM poll_votes") == 1  # the tally is kept
        assert await store.fetchval("SELECT creator_name FROM polls") == "someone"
        assert not await privacy.may_train("discord", "ann")  # opt-out platform: forget withdrew consent
        assert (await privacy.export("discord", "ann"))["messages"] == []
        # A dataset built now has no trace of her.
        rows = await load_log_rows(store)
        ds = build_dataset(rows, card=Card(name="Wick"), allowed=await privacy.allowed_predicate())
        assert all("one" != m["content"] for e in ds.train + ds.eval for m in e["messages"])


async def test_retention_prunes_old_rows_only(tmp_path):
    async with await Store.open(tmp_path / "db.sqlite") as store:
        now = 1_000_000_000.0
        log = ConversationLog(store)
        await log.log_durable(msg("ann", "old", created_at=now - 40 * 86_400))
        await log.log_durable(msg("ann", "recent", created_at=now - 5 * 86_400))
        keep = PrivacyService(store=store, config=PrivacyConfig(retention_days=0))
        assert await keep.prune(now) == 0
        privacy = PrivacyService(store=store, config=PrivacyConfig(retention_days=30))
        assert await privacy.prune(now) == 1
        assert [r["content"] for r in await store.fetchall("SELECT content FROM messages")] == ["recent"]
