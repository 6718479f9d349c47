"""Discord adapter logic without a connection: safe text, rights, conversation ids, errors, config."""

from __future__ import annotations

from types import SimpleNamespace

import discord
import pytest
from discord import app_commands

from bot.config import ConfigError, config_from_dict
from bot.platforms.discord import send
from bot.platforms.discord.client import GENERIC_ERROR, STALE_COMMAND, build_intents, describe_error
from bot.platforms.discord.rights import MissingRights, actor_from
from cogs.chat.discord_cog import conversation_of, feedback_buttons


def test_compose_splits_at_sentences_and_keeps_the_limit():
    text = " ".join(f"Sentence {i} ends here." for i in range(300))
    chunks = send.compose(text)
    assert len(chunks) > 1 and all(len(c) <= send.MESSAGE_LIMIT for c in chunks)
    assert all(c.endswith(".") for c in chunks)


def test_compose_puts_the_note_first_and_caps_the_number_of_messages():
    assert send.compose("Hi.", "note") == ["-# note\nHi."]
    assert send.compose("", "only a note") == ["-# only a note"]
    assert send.compose("   ") == []
    assert len(send.compose("word. " * 10_000)) == send.MAX_CHUNKS


def test_mass_mentions_are_defanged():
    out = send.compose("Hey @everyone and @HERE, look")
    assert "@everyone" not in out[0] and "@HERE" not in out[0]
    assert out[0].replace("\u200b", "") == "Hey @everyone and @HERE, look"
    assert send.defang("mail me at a@here.com") == "mail me at a@here.com".replace("@here", "@\u200bhere")


def test_embed_respects_discord_limits():
    e = send.embed(title="t" * 300, description="d" * 5000, fields=[(f"f{i}", "v" * 2000) for i in range(40)])
    assert len(e.title) <= 256 and len(e.description) <= 4096
    assert len(e.fields) <= 25 and all(len(f.value) <= 1024 for f in e.fields)
    assert len(e) <= 6000


def test_no_mentions_allowed():
    assert send.NO_MENTIONS.to_dict() == {"parse": []}


def _member(uid=1, **perms):
    return SimpleNamespace(id=uid, display_name="Ada", guild_permissions=discord.Permissions(**perms))


def test_rights_from_permissions_and_admin_ids():
    plain = actor_from(_member())
    assert (plain.is_admin, plain.is_moderator) == (False, False)
    mod = actor_from(_member(manage_messages=True))
    assert (mod.is_admin, mod.is_moderator) == (False, True)
    admin = actor_from(_member(manage_guild=True))
    assert (admin.is_admin, admin.is_moderator) == (True, True)
    listed = actor_from(
        SimpleNamespace(id=42, display_name="Owner"), admin_ids=(42,)
    )  # a DM user: no guild perms
    assert listed.is_admin and listed.is_moderator and listed.platform == "discord" and listed.user_id == "42"
    in_channel = actor_from(_member(manage_guild=True), permissions=discord.Permissions.none())
    assert not in_channel.is_admin


def test_conversation_ids():
    assert conversation_of(SimpleNamespace(id=5), guild_id=None) == ("discord:dm:5", "5", None)
    assert conversation_of(SimpleNamespace(id=7), guild_id=1) == ("discord:7", "7", None)
    thread = discord.Thread.__new__(discord.Thread)
    thread.id, thread.parent_id = 9, 7
    assert conversation_of(thread, guild_id=1) == ("discord:thread:9", "7", "9")


def test_intents():
    intents = build_intents(message_content=False)
    assert intents.guilds and intents.guild_messages and intents.dm_messages and intents.guild_reactions
    assert not intents.message_content and not intents.members and not intents.presences
    assert build_intents(message_content=True).message_content


async def test_feedback_buttons_are_a_finished_template():
    view = feedback_buttons()
    assert view.is_finished()  # so discord.py does not keep one view per message in memory
    assert [c.custom_id for c in view.children] == [
        "familiar:chat:rate:up",
        "familiar:chat:rate:down",
        "familiar:chat:regenerate",
    ]


def _interaction():
    return SimpleNamespace(
        command=SimpleNamespace(qualified_name="chat"),
        guild_id=1,
        channel_id=2,
        user=SimpleNamespace(id=3),
        data={"name": "chat"},
    )


def test_errors_become_clear_messages(caplog):
    assert "Manage Server" in describe_error(_interaction(), MissingRights("Manage Server"))
    assert describe_error(_interaction(), app_commands.CommandNotFound("x", [])) == STALE_COMMAND
    boom = app_commands.CommandInvokeError(SimpleNamespace(name="chat"), RuntimeError("boom"))
    assert describe_error(_interaction(), boom) == GENERIC_ERROR
    assert "boom" in caplog.text and "user=3" in caplog.text


def test_discord_config_validation():
    config = config_from_dict({"discord": {"enabled": True, "guild_ids": [123], "admin_ids": [7]}})
    assert config.discord.guild_ids == (123,) and config.discord.token_env == "DISCORD_TOKEN"
    with pytest.raises(ConfigError, match=r"discord\.token_env"):
        config_from_dict({"discord": {"token_env": " "}})
    with pytest.raises(ConfigError, match="both"):
        config_from_dict({"discord": {"allowed_channels": [1], "denied_channels": [1]}})
    with pytest.raises(ConfigError, match=r"discord\.guild_ids"):
        config_from_dict({"discord": {"guild_ids": ["abc"]}})
