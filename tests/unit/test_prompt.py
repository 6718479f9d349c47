"""Prompt assembly: layout, macros, author's note position, budget trimming, examples and lore."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from models.persona import Card, Lorebook, LoreEntry, default_card_path, load_card, parse_card
from models.prompt import (
    CUT_MARK,
    DEFAULT_SYSTEM_PROMPT,
    MESSAGE_OVERHEAD_TOKENS,
    PromptBudget,
    Turn,
    build_messages,
    prompt_tokens,
)


def words(text: str) -> int:
    return len(text.split())


def card(**data: Any) -> Card:
    fields = {
        "description": "DESC {{char}} glows.",
        "personality": "PERS witty",
        "scenario": "SCEN a lantern",
        "creator_notes": "CREATOR-NOTES-ONLY",
        "post_history_instructions": "NOTE stay {{char}} for {{user}}",
        "mes_example": "<START>\n{{user}}: EX1 hi\n{{char}}: hello\n<START>\n{{user}}: EX2 bye\n{{char}}: bye",
        **data,
    }
    return parse_card({"spec": "chara_card_v2", "data": {"name": "Wick", **fields}})


def user(text: str, name: str = "Ana") -> Turn:
    return Turn(role="user", name=name, content=text)


def bot(text: str) -> Turn:
    return Turn(role="assistant", name="Wick", content=text)


def build(c: Card, history: list[Turn], **kwargs: Any) -> list[dict[str, str]]:
    return build_messages(c, history, user_name="Ana", count_tokens=words, **kwargs)


def all_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


# --- layout -----------------------------------------------------------------------------------------------------


def test_system_message_order() -> None:
    lore = Lorebook(
        entries=(
            LoreEntry(keys=("x",), content="BEFORE-LORE", constant=True),
            LoreEntry(keys=("x",), content="AFTER-LORE", constant=True, position="after_char"),
        )
    )
    c = dataclasses.replace(card(), lorebook=lore, system_prompt="SYS {{original}} END")
    system = build(c, [user("hi")], extra_system="EXTRA narrate")[0]
    assert system["role"] == "system"
    text = system["content"]
    markers = [
        "SYS You are Wick.",
        "END",
        "BEFORE-LORE",
        "DESC",
        "PERS",
        "SCEN",
        "AFTER-LORE",
        "EXTRA",
        "EX1",
        "EX2",
    ]
    positions = [text.index(marker) for marker in markers]
    assert positions == sorted(positions)


def test_default_system_prompt_when_card_has_none() -> None:
    system = build(card(), [user("hi")])[0]["content"]
    expected = DEFAULT_SYSTEM_PROMPT.replace("{{char}}", "Wick").replace("{{user}}", "User")
    assert system.startswith(expected)


def test_only_one_system_message_before_history() -> None:
    messages = build(card(post_history_instructions=""), [user("a"), bot("b"), user("c")])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_user_turns_carry_names_and_assistant_turns_are_plain() -> None:
    messages = build(card(), [user("hello", "Ana"), bot("hi both"), user("me too", "Bo")])
    assert messages[1] == {"role": "user", "content": "Ana: hello"}
    assert messages[2] == {"role": "assistant", "content": "hi both"}
    assert messages[-1] == {"role": "user", "content": "Bo: me too"}


def test_blank_turns_are_skipped() -> None:
    messages = build(card(post_history_instructions=""), [user("  "), bot(""), user("real")])
    assert [m["content"] for m in messages[1:]] == ["Ana: real"]


def test_creator_notes_never_appear() -> None:
    messages = build(card(), [user("hi")])
    assert "CREATOR-NOTES-ONLY" not in all_text(messages)


def test_macros_applied_to_card_text_and_extra_system() -> None:
    text = all_text(
        build(
            card(),
            [user("hi")],
            extra_system="Tell {{user}} a story, <BOT>.",
            budget=PromptBudget(persona_user=""),
        )
    )
    assert "DESC Wick glows." in text
    assert "Ana: EX1 hi\nWick: hello" in text
    assert "Tell Ana a story, Wick." in text
    assert "{{" not in text and "<BOT>" not in text


def test_system_turn_is_the_same_for_every_speaker() -> None:
    """One persona for everyone: the engine reuses its computed state instead of prefilling it per speaker."""
    c = card(extra_system="")
    ana = build_messages(c, [user("hi")], user_name="Ana", count_tokens=words)
    bo = build_messages(c, [user("hi", name="Bo")], user_name="Bo", count_tokens=words)
    assert ana[0] == bo[0]
    assert "User: EX1 hi" in ana[0]["content"] and "Ana" not in ana[0]["content"]
    # The speaker's name still reaches the model: in their turn and in the author's note.
    assert ana[-2]["content"] == "NOTE stay Wick for Ana" and ana[-1]["content"] == "Ana: hi"


def test_persona_user_names_user_in_the_system_turn_or_the_speaker_when_empty() -> None:
    named = build(card(), [user("hi")], budget=PromptBudget(persona_user="Traveller"))
    assert "Traveller: EX1 hi" in named[0]["content"]
    own = build(card(), [user("hi")], budget=PromptBudget(persona_user=""))
    assert "Ana: EX1 hi" in own[0]["content"]


def test_history_text_is_used_as_typed() -> None:
    messages = build(card(), [user("what is {{char}}?")])
    assert messages[-1]["content"] == "Ana: what is {{char}}?"


def test_nickname_is_used_for_char() -> None:
    c = parse_card(
        {"spec": "chara_card_v3", "data": {"name": "Wickerly", "nickname": "Wick", "description": "{{char}}"}}
    )
    system = build(c, [user("hi")])[0]["content"]
    assert "You are Wick." in system and "Wickerly" not in system


# --- author's note ----------------------------------------------------------------------------------------------


def test_authors_note_sits_just_before_final_user_turn() -> None:
    messages = build(card(), [user("one"), bot("two"), user("three")])
    assert messages[-2] == {"role": "system", "content": "NOTE stay Wick for Ana"}
    assert messages[-1]["content"] == "Ana: three"
    assert sum(m["content"].startswith("NOTE") for m in messages) == 1


def test_authors_note_before_last_user_turn_even_when_bot_spoke_after() -> None:
    messages = build(card(), [user("one"), bot("two")])
    assert [m["role"] for m in messages] == ["system", "system", "user", "assistant"]
    assert messages[1]["content"].startswith("NOTE")


def test_authors_note_at_the_end_without_user_turns() -> None:
    messages = build(card(), [])
    assert [m["role"] for m in messages] == ["system", "system"]
    assert messages[-1]["content"].startswith("NOTE")


def test_authors_note_original_macro_is_empty() -> None:
    messages = build(card(post_history_instructions="{{original}}[stay]"), [user("x")])
    assert messages[-2]["content"] == "[stay]"


# --- budget -----------------------------------------------------------------------------------------------------


def test_history_trimmed_from_the_oldest_side() -> None:
    history = [
        user(f"message number {i} " + "word " * 20) if i % 2 == 0 else bot(f"reply {i} " + "w " * 20)
        for i in range(59)
    ]
    budget = PromptBudget(total_tokens=400, reserve_for_reply=50, examples_max_tokens=40)
    messages = build(card(), history, budget=budget)
    assert prompt_tokens(messages, words) <= 350
    kept = [m["content"] for m in messages if m["role"] != "system"]
    assert kept[-1].startswith("Ana: message number 58 ")
    assert 2 < len(kept) < len(history)
    # What survives is the newest contiguous stretch of the chat.
    rendered = [f"Ana: {t.content.strip()}" if t.role == "user" else t.content.strip() for t in history]
    assert kept == rendered[-len(kept) :]


def test_prompt_uses_the_budget_well() -> None:
    history = [user("word " * 10) for _ in range(100)]
    budget = PromptBudget(total_tokens=600, reserve_for_reply=100)
    used = prompt_tokens(build(card(), history, budget=budget), words)
    assert 500 - (10 + 1 + MESSAGE_OVERHEAD_TOKENS) < used <= 500


def test_latest_user_turn_kept_and_cut_when_alone_too_long() -> None:
    long_text = " ".join(f"w{i}" for i in range(2000))
    budget = PromptBudget(total_tokens=300, reserve_for_reply=50, examples_max_tokens=0)
    messages = build(card(), [user("older"), user(long_text)], budget=budget)
    last = messages[-1]["content"]
    assert last.startswith("Ana: w0 w1 ")
    assert last.endswith(CUT_MARK)
    assert prompt_tokens(messages, words) <= 250
    assert "older" not in all_text(messages)


def test_cut_keeps_at_least_one_word_when_nothing_fits() -> None:
    budget = PromptBudget(total_tokens=20, reserve_for_reply=0)
    messages = build(card(), [user("alpha beta gamma")], budget=budget)
    assert messages[-1]["content"] == "Ana: alpha" + CUT_MARK


def test_examples_stop_when_the_examples_budget_is_used() -> None:
    text = all_text(build(card(), [user("hi")], budget=PromptBudget(examples_max_tokens=14)))
    assert "EX1" in text and "EX2" not in text


def test_examples_absent_when_budget_is_zero() -> None:
    text = all_text(build(card(), [user("hi")], budget=PromptBudget(examples_max_tokens=0)))
    assert "EX1" not in text and "talks:" not in text


def test_examples_give_way_to_the_chat_in_a_tight_window() -> None:
    budget = PromptBudget(total_tokens=90, reserve_for_reply=10, examples_max_tokens=256)
    assert "EX1" not in all_text(build(card(), [user("hi")], budget=budget))


# --- lore -------------------------------------------------------------------------------------------------------


def lore_card(scan_depth: int = 2, token_budget: int = 256) -> Card:
    book = Lorebook(
        entries=(LoreEntry(keys=("moth",), content="MOTH-LORE about {{char}}"),),
        scan_depth=scan_depth,
        token_budget=token_budget,
    )
    return dataclasses.replace(card(), lorebook=book)


def test_lore_triggered_by_recent_history_with_macros() -> None:
    text = all_text(build(lore_card(), [user("a moth!")]))
    assert "MOTH-LORE about Wick" in text


def test_lore_scans_only_the_last_scan_depth_turns() -> None:
    history = [user("a moth!"), bot("eek"), user("anyway")]
    assert "MOTH-LORE" not in all_text(build(lore_card(scan_depth=2), history))
    assert "MOTH-LORE" in all_text(build(lore_card(scan_depth=3), history))


def test_lore_is_capped_to_a_share_of_the_window() -> None:
    big = LoreEntry(keys=("x",), content="lore " * 100, constant=True)
    c = dataclasses.replace(card(), lorebook=Lorebook(entries=(big,), token_budget=10_000))
    small_window = PromptBudget(total_tokens=300, reserve_for_reply=0)
    assert "lore lore" not in all_text(build(c, [user("hi")], budget=small_window))
    assert "lore lore" in all_text(build(c, [user("hi")], budget=PromptBudget(total_tokens=1000)))


# --- the bundled default ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_card() -> Card:
    return load_card(default_card_path())


def test_default_persona_is_small(default_card: Card) -> None:
    # Every lore entry triggered: the persona part of the prompt is what a 135M model must carry each turn.
    messages = build(default_card, [user("rain outside the window, a moth, the wax melts in the lantern")])
    persona = [m for m in messages if m["role"] == "system"]
    # Words, not tokens: English runs ~1.3 tokens a word, so 260 words stays under ~350 tokens.
    assert prompt_tokens(persona, words) <= 260


def test_default_card_fits_the_default_budget(default_card: Card) -> None:
    history = [
        user("tell me about the lantern " * 3) if i % 2 == 0 else bot("It is my home. " * 3)
        for i in range(199)
    ]
    messages = build(default_card, history)
    budget = PromptBudget()
    assert prompt_tokens(messages, words) <= budget.total_tokens - budget.reserve_for_reply
    assert messages[0]["content"].startswith("You are Wick.")
    assert messages[-2]["role"] == "system" and messages[-1]["role"] == "user"
    assert default_card.creator_notes not in all_text(messages)
