"""Teaching the character: rights, validation, the context captured from the log, forget/export, the dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import config_from_dict
from bot.dashboard import Pages, Sources
from bot.store import ConversationLog, MessageRecord, Store
from cogs.chat.service import RESET_MARKER
from cogs.common.actor import Actor
from cogs.privacy.service import PrivacyService
from cogs.teach.privacy import TEACHINGS_HOOK
from cogs.teach.service import (
    CONTEXT_TURNS,
    MAX_TAUGHT_CHARS,
    ContextTurn,
    TeachService,
    TeachStatus,
    clean_taught,
    load_teachings,
)
from tests.privacy_support import table_cells

CONVERSATION = "discord:100"
MOD = Actor(platform="discord", user_id="m1", name="Mo", is_moderator=True)
ADMIN = Actor(platform="discord", user_id="a1", name="Al", is_admin=True)
VIEWER = Actor(platform="discord", user_id="u1", name="Ann")
THANKS = "Thanks — Wick will learn that reply at the next tune."


@pytest.fixture
async def store(tmp_path):
    async with await Store.open(tmp_path / "db.sqlite") as opened:
        yield opened


@pytest.fixture
def teach(store):
    return TeachService(store=store, character="Wick", clock=lambda: 1_000.0)


async def say(
    store: Store,
    who: str,
    content: str,
    at: float,
    *,
    role: str = "user",
    message_id: str | None = None,
    conversation: str = CONVERSATION,
    platform: str = "discord",
    parts: tuple[str, ...] = (),
) -> None:
    author_id, author_name = ("familiar", "Wick") if role in ("assistant", "system") else (who, who.title())
    rec = MessageRecord(
        platform=platform,  # type: ignore[arg-type]
        channel_id="100",
        conversation_id=conversation,
        author_id=author_id,
        author_name=author_name,
        role=role,  # type: ignore[arg-type]
        content=content,
        platform_message_id=message_id,
        created_at=at,
    )
    await ConversationLog(store).log(rec, parts=parts)
    await store.flush()


async def chat(store: Store) -> None:
    """Ann and Bob talk with Wick; the reply to correct is the last one ("r2")."""
    await say(store, "u1", "hi Wick", 10.0, message_id="q1")
    await say(store, "", "Hello Ann!", 11.0, role="assistant", message_id="r1")
    await say(store, "u2", "what is your favourite colour?", 12.0, message_id="q2")
    await say(store, "", "Blue, like the sea of Ohio.", 13.0, role="assistant", message_id="r2")


# -- validation and rights ----------------------------------------------------------------------------------------


async def test_only_moderators_and_admins_may_teach(store, teach):
    await chat(store)
    refused = await teach.teach(VIEWER, "Blue, like wax.", conversation_id=CONVERSATION)
    assert refused.status is TeachStatus.NOT_ALLOWED and refused.message == "Only moderators can teach Wick."
    assert await load_teachings(store) == []
    by_admin = await teach.teach(ADMIN, "Blue, like candle wax.", conversation_id=CONVERSATION)
    assert by_admin.ok and by_admin.message == THANKS


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("", TeachStatus.EMPTY),
        ("   \n\t ", TeachStatus.EMPTY),
        ("\x00\x07\u200b\u2060", TeachStatus.EMPTY),
        ("x" * (MAX_TAUGHT_CHARS + 1), TeachStatus.TOO_LONG),
        ("x" * MAX_TAUGHT_CHARS, TeachStatus.TAUGHT),
        ("  Blue,\r\n  like   the sea of Ohio.  ", TeachStatus.SAME),  # only whitespace differs
    ],
)
async def test_validation(store, teach, text, status):
    await chat(store)
    result = await teach.teach(MOD, text, conversation_id=CONVERSATION)
    assert result.status is status, result
    assert len(await load_teachings(store)) == (1 if status is TeachStatus.TAUGHT else 0)


async def test_too_long_says_how_long(store, teach):
    await chat(store)
    result = await teach.teach(MOD, "y" * 1200, conversation_id=CONVERSATION)
    assert "1200 characters" in result.message and str(MAX_TAUGHT_CHARS) in result.message


def test_control_characters_are_stripped_and_newlines_kept():
    assert clean_taught(" Flame\x00 on\x1b, my\u200b friend!\r\nSecond line.\x7f ") == (
        "Flame on, my friend!\nSecond line."
    )


async def test_stored_reply_is_cleaned(store, teach):
    await chat(store)
    await teach.teach(MOD, "\x07Blue,\x00 like candle wax.\u200b", conversation_id=CONVERSATION)
    (teaching,) = await load_teachings(store)
    assert teaching.taught == "Blue, like candle wax."


async def test_no_reply_yet_and_messages_that_are_not_replies(store, teach):
    await say(store, "u1", "anyone here?", 1.0, message_id="q0")
    nothing = await teach.teach(MOD, "Yes!", conversation_id=CONVERSATION)
    assert nothing.status is TeachStatus.NO_REPLY and nothing.message == "Wick has not replied here yet."
    for message_id in ("q0", "nope"):
        result = await teach.teach(MOD, "Yes!", reply_message_id=message_id)
        assert result.status is TeachStatus.NO_REPLY and "not one of Wick's chat replies" in result.message
    # A Twitch moderator cannot correct a Discord reply by its id.
    await chat(store)
    twitch_mod = Actor(platform="twitch", user_id="m1", name="Mo", is_moderator=True)
    other = await teach.teach(twitch_mod, "Blue.", reply_message_id="r2")
    assert other.status is TeachStatus.NO_REPLY
    assert await teach.reply_text("discord", "r2") == "Blue, like the sea of Ohio."
    assert await teach.reply_text("discord", "q2") is None
    with pytest.raises(ValueError):
        await teach.teach(MOD, "Blue.")


# -- what is stored --------------------------------------------------------------------------------------------------


async def test_the_context_is_the_turns_before_the_reply(store, teach):
    await say(store, "u9", "before the reset", 1.0)
    await say(store, "", RESET_MARKER, 2.0, role="system")
    for i in range(10):
        await say(store, f"u{i % 3}", f"question {i}", 10.0 + 2 * i)
        await say(store, "", f"answer {i}", 11.0 + 2 * i, role="assistant", message_id=f"r{i}")
    await say(store, "", "a narrator line", 11.5, role="narrator")
    await say(store, "u1", "after the reply", 100.0)  # the conversation went on: not context

    result = await teach.teach(MOD, "A better answer 4.", reply_message_id="r4")
    assert result.ok
    (teaching,) = await load_teachings(store)
    assert teaching.original == "answer 4" and teaching.taught == "A better answer 4."
    assert (teaching.platform, teaching.conversation_id) == ("discord", CONVERSATION)
    assert (teaching.teacher_id, teaching.teacher_name, teaching.created_at) == ("m1", "Mo", 1_000.0)
    assert len(teaching.context) == CONTEXT_TURNS
    assert teaching.context[-1] == ContextTurn("user", "u1", "U1", "question 4")
    assert teaching.context[0] == ContextTurn("assistant", "familiar", "Wick", "answer 0")
    assert all("narrator" not in t.content and "reset" not in t.content for t in teaching.context)
    assert teaching.people == {("discord", "u0"), ("discord", "u1"), ("discord", "u2"), ("discord", "m1")}

    # A reset just before a reply leaves it without context; nothing from before the reset is copied.
    await say(store, "", RESET_MARKER, 200.0, role="system")
    await say(store, "u1", "fresh start", 201.0)
    await say(store, "", "Who are you?", 202.0, role="assistant", message_id="r-new")
    await teach.teach(MOD, "Welcome back, Ann!", conversation_id=CONVERSATION)
    latest = (await load_teachings(store))[-1]
    assert [t.content for t in latest.context] == ["fresh start"]


async def test_a_split_reply_is_found_through_any_part_and_a_new_teaching_replaces_the_old(store, teach):
    await say(store, "u1", "tell me a long story", 1.0, message_id="q")
    await say(store, "", "Part one. Part two.", 2.0, role="assistant", message_id="p2", parts=("p1", "p2"))
    first = await teach.teach(MOD, "A short story.", reply_message_id="p1")
    assert first.ok and not first.replaced
    second = await teach.teach(ADMIN, "A shorter story.", reply_message_id="p2")
    assert second.ok and second.replaced and "replaces the earlier correction" in second.message
    (teaching,) = await load_teachings(store)
    assert (teaching.taught, teaching.teacher_name) == ("A shorter story.", "Al")
    assert await store.fetchval("SELECT count(*) FROM teaching_people") == 1


async def test_a_teaching_outlives_its_log_rows(store, teach):
    await chat(store)
    await teach.teach(MOD, "Blue, like candle wax.", reply_message_id="r2")
    await ConversationLog(store).delete_platform_message("discord", "r2")
    (teaching,) = await load_teachings(store)
    assert teaching.reply_row_id is None and teaching.original == "Blue, like the sea of Ohio."


# -- privacy ---------------------------------------------------------------------------------------------------------


def privacy_service(store: Store, tmp_path: Path) -> PrivacyService:
    config = config_from_dict({"bot": {"data_dir": str(tmp_path)}})
    privacy = PrivacyService(store=store, config=config.privacy)
    privacy.register_hook(TEACHINGS_HOOK)
    return privacy


async def test_forget_deletes_teachings_of_a_speaker_or_the_teacher(store, teach, tmp_path):
    privacy = privacy_service(store, tmp_path)
    await chat(store)
    await teach.teach(MOD, "Blue, like candle wax.", reply_message_id="r2")
    await teach.teach(MOD, "Hello, Ann! Mind the flame.", reply_message_id="r1")  # context: Ann only
    await say(store, "u3", "hello?", 20.0, conversation="discord:200")
    await say(store, "", "Hi.", 21.0, role="assistant", conversation="discord:200")
    other_mod = Actor(platform="discord", user_id="m2", name="Max", is_moderator=True)
    await teach.teach(other_mod, "Hi there, friend.", conversation_id="discord:200")

    await privacy.forget("twitch", "u2")  # same id, another platform: nobody here
    assert len(await load_teachings(store)) == 3
    report = await privacy.forget("discord", "u2")  # Bob speaks in the first teaching's context only
    assert report.anonymised["teachings"] == 1 and "1 teachings" in report.summary()
    assert [t.taught for t in await load_teachings(store)] == [
        "Hello, Ann! Mind the flame.",
        "Hi there, friend.",
    ]
    await privacy.forget("discord", "m1")  # the teacher
    assert [t.teacher_id for t in await load_teachings(store)] == ["m2"]
    await privacy.forget("discord", "u3")
    assert await load_teachings(store) == []
    assert await store.fetchval("SELECT count(*) FROM teaching_people") == 0
    for who in ("u2", "Bob", "m1", "Mo", "u3"):
        assert not [c for c in table_cells(store.path, ["teachings", "teaching_people"]) if who in c]


async def test_export_lists_the_persons_teachings_with_their_own_words_only(store, teach, tmp_path):
    privacy = privacy_service(store, tmp_path)
    await chat(store)
    await teach.teach(MOD, "Blue, like candle wax.", reply_message_id="r2")

    bob = (await privacy.export("discord", "u2"))["teachings"]
    assert bob == [
        {
            "id": 1,
            "conversation_id": CONVERSATION,
            "created_at": 1_000.0,
            "taught_by_you": False,
            "your_messages_in_its_context": ["what is your favourite colour?"],
            "original_reply": "Blue, like the sea of Ohio.",
            "taught_reply": "Blue, like candle wax.",
        }
    ]
    assert "hi Wick" not in json.dumps(bob)  # Ann's words are not Bob's to take
    (mod,) = (await privacy.export("discord", "m1"))["teachings"]
    assert mod["taught_by_you"] and mod["teacher_name"] == "Mo" and mod["your_messages_in_its_context"] == []
    assert "teachings" not in await privacy.export("discord", "nobody")


# -- the dashboard ---------------------------------------------------------------------------------------------------


async def test_dashboard_lists_teachings_newest_first_escaped(store, teach, tmp_path):
    config = config_from_dict({"bot": {"data_dir": str(tmp_path)}, "dashboard": {"enabled": True}})
    pages = Pages(Sources(config=config, store=store, character="Wick"))
    assert 'id="no-teachings"' in await pages.models()
    await chat(store)
    evil = Actor(platform="discord", user_id="m3", name="<script>alert(1)</script>", is_moderator=True)
    await teach.teach(MOD, "Hello, Ann! <b>Mind</b> the flame.", reply_message_id="r1")
    await teach.teach(evil, "Blue, like candle wax.", reply_message_id="r2")

    view = await pages.data.models()
    assert [(t.teacher_name, t.original, t.taught) for t in view.teachings] == [
        ("<script>alert(1)</script>", "Blue, like the sea of Ohio.", "Blue, like candle wax."),
        ("Mo", "Hello Ann!", "Hello, Ann! <b>Mind</b> the flame."),
    ]
    for html in (await pages.models(), await pages.report(7)):
        assert 'id="teachings"' in html and "Blue, like candle wax." in html
        assert "<script>" not in html and "<b>Mind" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_discord_menu_is_named_after_the_character_when_it_fits():
    from cogs.teach.discord_cog import MENU_FALLBACK, MENU_NAME_MAX, menu_name

    assert menu_name("Wick") == "Teach Wick"
    assert menu_name("  Old   Wick ") == "Teach Old Wick"
    assert menu_name("") == menu_name("x" * MENU_NAME_MAX) == MENU_FALLBACK
    assert len(menu_name("x" * (MENU_NAME_MAX - len("Teach ")))) == MENU_NAME_MAX
