"""Retraining and privacy on Discord end to end: the real discord.py client against the fake Discord, the model and
privacy services over SQLite, and a fake training worker (tests/fake_training_worker.py) instead of a real run."""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from bot.config import config_from_dict
from bot.runtime import open_runtime
from bot.store import MessageRecord
from tests.e2e.discord_harness import running_bot
from tests.e2e.fake_discord import ADA, APP_ID, BOB, CAROL, EPHEMERAL, GENERAL_ID, GUILD_ID
from tests.fakes import ScriptedBackend
from tests.retrain_support import GATE_FIGURES, chat_exchange

FAKE_WORKER = Path(__file__).resolve().parents[1] / "fake_training_worker.py"
PROGRESS_TITLE = "🔧 Retrain"
TUNE_TITLE = "🔧 Tune"


def sub(name, *, group=None, **values):
    """The raw options of `/<cmd> [group] name key:value…` (string values)."""
    options = [{"name": k, "type": 3, "value": v} for k, v in values.items()]
    command = {"name": name, "type": 1, "options": options}
    return [{"name": group, "type": 2, "options": [command]}] if group else [command]


def answer_of(fake, inter):
    """(content, ephemeral) of the bot's answer to an interaction: the callback message or the last follow-up."""
    callbacks = fake.requests_to("POST", rf"/interactions/{inter.id}/[^/]+/callback")
    data = (callbacks[0].json.get("data") or {}) if callbacks else {}
    if data.get("content"):
        return data["content"], bool((data.get("flags") or 0) & EPHEMERAL)
    follow = fake.requests_to("POST", rf"/webhooks/\d+/{inter.token}")
    if not follow:
        return None
    body = follow[-1].json or {}
    return body.get("content"), bool((body.get("flags") or 0) & EPHEMERAL)


async def answered(fake, inter, within=5.0):
    return await fake.wait_until(lambda: answer_of(fake, inter), within=within)


@asynccontextmanager
async def runtime_with(data_dir, *, consent="opt-in"):
    raw = {
        "bot": {"data_dir": data_dir},
        "chat": {"cooldown_s": 0.0},
        "discord": {"enabled": True, "guild_ids": [GUILD_ID]},
        "privacy": {"discord_consent": consent},
        "training": {"min_examples": 2, "launcher": f"{sys.executable} {FAKE_WORKER}", "eval_fraction": 0.2},
    }
    backend = ScriptedBackend(default="At your service.")
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime:
        yield runtime


async def log_exchanges(runtime, user, conversations=4, turns=2):
    """Logged exchanges between `user` and the character in #general, as the chat cog would have logged them."""
    for c in range(conversations):
        for k in range(turns):
            base = {"platform": "discord", "guild_id": str(GUILD_ID), "channel_id": str(GENERAL_ID),
                    "conversation_id": f"discord:{GENERAL_ID}:{user['id']}:{c}"}  # fmt: skip
            question, answer = chat_exchange(c * turns + k)  # varied: the data-quality step keeps them all
            await runtime.log.log(MessageRecord(**base, author_id=user["id"], author_name=user["username"],
                                                role="user", content=f"{user['username']} asks {c}.{k}: {question}"))  # fmt: skip
            await runtime.log.log(MessageRecord(**base, author_id="familiar", author_name="Wick", role="assistant",
                                                content=f"Wick answers {user['username']} {c}.{k}: {answer}"))  # fmt: skip
    await runtime.store.flush()


def db_rows(data_dir, sql, params=()):
    db = sqlite3.connect(Path(data_dir) / "familiar.db")
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def fast_progress(bot, monkeypatch):
    """Worker steps 0.3 s apart and progress edits at most every 0.05 s: each step reaches the message."""
    monkeypatch.setenv("FAKE_TRAINING_STEP_S", "0.3")
    bot.get_cog("Admin").edit_interval_s = 0.05


async def retrain_as(fake, user, command="retrain"):
    """`/admin retrain` (or `/admin tune`); returns the progress message once it shows a result."""
    earlier = {m["id"] for m in fake.sent}
    inter = await fake.slash("admin", raw_options=sub(command), user=user)
    text, ephemeral = await answered(fake, inter)
    doing, title = ("Tuning", TUNE_TITLE) if command == "tune" else ("Retraining", PROGRESS_TITLE)
    assert text == f"{doing} started; progress follows in this channel." and not ephemeral
    (posted,) = await fake.wait_for_sent(
        lambda m: m["kind"] == "channel" and m["content"].startswith(title) and m["id"] not in earlier
    )
    final = await fake.wait_until(
        lambda: (m := fake.messages[posted["id"]])["content"].split("\n")[-1][:1] in ("✅", "↩", "⚠") and m,
        within=30,
    )
    return final


async def test_admin_retrain_shows_progress_then_promotes_or_refuses_with_figures(
    fake_discord, tmp_path, monkeypatch
):
    data = str(tmp_path / "data")
    async with runtime_with(data, consent="all") as runtime, running_bot(runtime, fake_discord) as bot:
        fast_progress(bot, monkeypatch)
        await log_exchanges(runtime, ADA)
        monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
        final = await retrain_as(fake_discord, CAROL)
        assert final["content"].startswith(f"{PROGRESS_TITLE}\n✅ v0001 is live")
        assert all(figure in final["content"] for figure in GATE_FIGURES), final["content"]
        # The message was edited as the run went: the dataset, what it learns from, each training step, the result.
        shown = [edit["content"].split("\n", 1)[1] for edit in final["edits"]]
        assert shown[0] == "building the dataset…"
        learning = next(line for line in shown if line.startswith("learning from "))
        assert "from the log" in learning and " 0 from the log" not in learning, learning  # Ada's chat
        assert f"Learnt from {learning.removeprefix('learning from ').removesuffix('…')}." in final["content"]
        steps = [line for line in shown if line.startswith("step ")]
        assert [s.split(" ·")[0] for s in steps] == ["step 1/3", "step 2/3", "step 3/3"], shown
        assert all("ETA" in s and "loss" in s for s in steps)
        assert shown.index(steps[-1]) < len(shown) - 1 and shown[-1].startswith("✅")
        assert runtime.models.registry.active_name() == "v0001"
        assert [(e.action, e.version, e.by) for e in runtime.models.registry.history()] == [
            ("promote", "v0001", "Carol")
        ]

        # A run that does not improve is refused, with the figures; the pointer stays.
        monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "same")
        final = await retrain_as(fake_discord, CAROL)
        assert final["content"].startswith(f"{PROGRESS_TITLE}\n↩️ v0002 trained but not promoted")
        assert "held-out loss 2.0000 -> 2.0000" in final["content"]
        assert runtime.models.registry.active_name() == "v0001"

        # Status, then a rollback to before v0001 (the base model).
        status = await fake_discord.slash("admin", raw_options=sub("status", group="model"), user=CAROL)
        text, ephemeral = await answered(fake_discord, status)
        assert ephemeral and "Registry points at: v0001" in text
        assert "v0001 (" in text and "promoted" in text and "v0002 (" in text and "not promoted" in text
        assert "Last retrain: v0002 trained but not promoted" in text
        back = await fake_discord.slash("admin", raw_options=sub("rollback", group="model"), user=CAROL)
        text, ephemeral = await answered(fake_discord, back)
        assert ephemeral and text.startswith("Rolled back to the base model.")
        assert runtime.models.registry.active_name() is None
        again = await fake_discord.slash(
            "admin", raw_options=sub("rollback", group="model", version="v0001"), user=CAROL
        )
        text, _ = await answered(fake_discord, again)
        assert text.startswith("Rolled back to v0001.") and runtime.models.registry.active_name() == "v0001"
        wrong = await fake_discord.slash(
            "admin", raw_options=sub("rollback", group="model", version="v0009"), user=CAROL
        )
        text, _ = await answered(fake_discord, wrong)
        assert text.startswith("Refused: no adapter version 'v0009'")
        assert [(e.action, e.version, e.previous) for e in runtime.models.registry.history()][1:] == [
            ("rollback", None, "v0001"),
            ("rollback", "v0001", None),
        ]


async def test_admin_tune_learns_from_the_character_and_refuses_an_out_of_character_one(
    fake_discord, tmp_path, monkeypatch
):
    async with runtime_with(str(tmp_path / "data")) as runtime, running_bot(runtime, fake_discord) as bot:
        fast_progress(bot, monkeypatch)  # nothing logged: a tune learns from the card and its dialogue files
        monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
        final = await retrain_as(fake_discord, CAROL, command="tune")
        content = final["content"]
        assert content.startswith(f"{TUNE_TITLE}\n✅ v0001 is live — promoted: "), content
        assert all(figure in content for figure in GATE_FIGURES), content
        shown = [edit["content"].split("\n", 1)[1] for edit in final["edits"]]
        assert shown[0] == "building the dataset…" and shown[1].startswith("learning from "), shown
        learning = shown[1]
        assert "dialogue-file lines" in learning and "from the card" in learning, learning
        assert "0 from the log" in learning, learning
        assert f"Learnt from {learning.removeprefix('learning from ').removesuffix('…')}." in content
        steps = [line.split(" ·")[0] for line in shown if line.startswith("step ")]
        assert steps == ["step 1/3", "step 2/3", "step 3/3"], shown
        assert runtime.models.registry.active_name() == "v0001"
        assert [(e.action, e.version, e.by) for e in runtime.models.registry.history()] == [
            ("promote", "v0001", "Carol")
        ]

        # Better on the held-out dialogue but less in character: kept out, and the reply says why.
        monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "out_of_character")
        final = await retrain_as(fake_discord, CAROL, command="tune")
        content = final["content"]
        assert content.startswith(f"{TUNE_TITLE}\n↩️ v0002 trained but not promoted — kept the serving model")
        assert "the character is less itself: persona score 80% -> 40%" in content
        assert "held-out loss 2.0000 -> 1.5000" in content and "Learnt from " in content
        assert runtime.models.registry.active_name() == "v0001"


async def test_non_admins_are_refused_clearly(fake_discord, tmp_path):
    async with (
        runtime_with(str(tmp_path / "data"), consent="all") as runtime,
        running_bot(runtime, fake_discord),
    ):
        await log_exchanges(runtime, ADA)
        for user in (ADA, BOB):  # a member, a moderator (Manage Messages): neither has Manage Server
            for options in (
                sub("tune"), sub("retrain"), sub("status", group="model"), sub("rollback", group="model")
            ):  # fmt: skip
                inter = await fake_discord.slash("admin", raw_options=options, user=user)
                text, ephemeral = await answered(fake_discord, inter)
                assert ephemeral and text.startswith("You need the Manage Server permission"), text
        assert not runtime.models.running and runtime.models.last_result is None
        assert not [m for m in fake_discord.sent if m["kind"] == "channel"]  # no progress message
        assert runtime.models.registry.versions() == []


async def test_privacy_consent_export_and_forget(fake_discord, tmp_path):
    data = str(tmp_path / "data")
    async with runtime_with(data) as runtime, running_bot(runtime, fake_discord):
        await log_exchanges(runtime, ADA, conversations=2, turns=1)
        await log_exchanges(runtime, BOB, conversations=1, turns=1)

        def consent(choice, user=ADA):
            return fake_discord.slash("privacy", raw_options=sub("consent", choice=choice), user=user)

        (command,) = [c for cmds in fake_discord.commands.values() for c in cmds if c["name"] == "privacy"]
        (consent_command,) = [o for o in command["options"] if o["name"] == "consent"]
        (history_option,) = [o for o in consent_command["options"] if o["name"] == "include_history"]
        assert history_option["type"] == 5 and not history_option.get(
            "required"
        )  # a boolean, False unless given
        assert "before" in history_option["description"]

        async def learnt():
            dataset = await runtime.models.build_dataset()
            return json.dumps(dataset.train + dataset.eval)

        # On: only what Ada writes from now on counts; her two earlier messages stay out, and she is told how to
        # include them.
        text, ephemeral = await answered(fake_discord, await consent("on"))
        assert ephemeral and text.startswith("Thank you! From now on your messages may be used to teach me.")
        assert "Your earlier messages stay out; use `/privacy consent choice:on include_history:True`" in text
        assert db_rows(data, "SELECT platform, user_id, training, include_history FROM consent") == [
            ("discord", ADA["id"], 1, 0)
        ]
        assert await runtime.privacy.may_train("discord", ADA["id"])
        assert "Ada asks" not in await learnt()
        # include_history:True adds them.
        with_history = [{"name": "consent", "type": 1, "options": [
            {"name": "choice", "type": 3, "value": "on"}, {"name": "include_history", "type": 5, "value": True},
        ]}]  # fmt: skip
        text, _ = await answered(
            fake_discord, await fake_discord.slash("privacy", raw_options=with_history, user=ADA)
        )
        assert text.startswith("Thank you! Your messages may be used to teach me, earlier ones included.")
        assert db_rows(data, "SELECT include_history FROM consent WHERE user_id = ?", (ADA["id"],)) == [(1,)]
        assert "Ada asks 0.0" in await learnt() and "Ada asks 1.0" in await learnt()
        text, _ = await answered(fake_discord, await consent("off"))
        assert text.startswith(
            "Done: your messages will not be used to teach me any more, earlier ones included"
        )
        assert "Ada asks" not in await learnt()
        assert db_rows(data, "SELECT training FROM consent WHERE user_id = ?", (ADA["id"],)) == [(0,)]
        text, _ = await answered(fake_discord, await consent("status"))
        assert text == "Training consent here is opt-in; you said off, so your messages are not used."

        # Export: a JSON file of Ada's rows only, sent to her alone.
        export = await fake_discord.slash("privacy", raw_options=sub("export"), user=ADA)
        (req,) = await fake_discord.wait_for_request("POST", rf"/webhooks/{APP_ID}/{export.token}")
        assert req.json["flags"] & EPHEMERAL and "2 logged message(s)" in req.json["content"]
        (file,) = req.files
        assert file.filename == f"familiar-data-{ADA['id']}.json"
        exported = json.loads(file.data.decode("utf-8"))
        assert exported["user_id"] == ADA["id"] and exported["training_consent"]["choice"] is False
        assert exported["training_consent"]["include_history"] is False
        assert exported["training_consent"]["messages_used"] == "none"
        assert [m["content"][:12] for m in exported["messages"]] == ["Ada asks 0.0", "Ada asks 1.0"]

        # Forget: Ada's rows go, Bob's stay; her consent is withdrawn.
        forget = await fake_discord.slash("privacy", raw_options=sub("forget"), user=ADA)
        text, ephemeral = await answered(fake_discord, forget)
        assert ephemeral and text.startswith("Forgotten: deleted 2 logged message(s)")
        assert db_rows(data, "SELECT count(*) FROM messages WHERE author_id = ?", (ADA["id"],)) == [(0,)]
        assert db_rows(data, "SELECT count(*) FROM messages WHERE author_id = ?", (BOB["id"],)) == [(1,)]
        assert not await runtime.privacy.may_train("discord", ADA["id"])
        empty = await fake_discord.slash("privacy", raw_options=sub("export"), user=ADA)
        (req,) = await fake_discord.wait_for_request("POST", rf"/webhooks/{APP_ID}/{empty.token}")
        assert json.loads(req.files[0].data)["messages"] == []
