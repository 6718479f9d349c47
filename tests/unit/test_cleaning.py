"""Tests for reply cleaning and message splitting (pure functions, no model)."""

from __future__ import annotations

import random
import re

import pytest

from models.cleaning import FALLBACK_REPLIES, clean_reply, split_message, trim_to_limit


def squash(text: str) -> str:
    """Text without any whitespace, to compare content across split points."""
    return re.sub(r"\s+", "", text)


# ------------------------------------------------------------------------------------------------ clean_reply


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello there!", "Hello there!"),
        ("<|im_start|>assistant\nHello there!", "Hello there!"),
        ("assistant\nHello there!", "Hello there!"),
        ("Hello there!<|im_end|>", "Hello there!"),
        ("Hello there!<|im_end|>\n<|im_start|>user\nAnd you?", "Hello there!"),
        ("Hello there!<|endoftext|>garbage after the end", "Hello there!"),
        ("Hello there!\n<|im_start|>user\nhi", "Hello there!"),
        ("<|im_end|>\nHello there!", "Hello there!"),
        ("Hello!</s>more", "Hello!"),
    ],
)
def test_role_tokens_are_removed(raw: str, expected: str) -> None:
    assert clean_reply(raw, char_name="Mira") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "Mira: Hello there!",
        "mira: Hello there!",
        "**Mira:** Hello there!",
        "Mira : Hello there!",
        "  Mira: Hello there!",
        "[Mira]: Hello there!",
    ],
)
def test_leading_own_name_is_dropped(raw: str) -> None:
    assert clean_reply(raw, char_name="Mira") == "Hello there!"


def test_own_name_inside_text_is_kept() -> None:
    assert clean_reply("Call me Mira: everyone does.", char_name="Mira") == "Call me Mira: everyone does."


@pytest.mark.parametrize(
    "tail",
    [
        "User: what about you?",
        "user: what about you?",
        "You: what about you?",
        "Human: what about you?",
        "### Instruction: be nice",
        "Bob: what about you?",
        "bob: what about you?",
        "**Bob:** what about you?",
        "@Bob: what about you?",
        "Dark Knight 99: what about you?",
        "Mira: and another thing",
        "Assistant: more",
        "{{user}}: hi",
    ],
)
def test_invented_turns_are_cut(tail: str) -> None:
    raw = f"I love tea. It warms the soul!\n{tail}\nMira: sure"
    cleaned = clean_reply(raw, char_name="Mira", other_names=["Bob", "Dark Knight 99"])
    assert cleaned == "I love tea. It warms the soul!"


def test_other_name_mid_line_is_not_a_turn() -> None:
    raw = "Tell Bob: the tea is ready."
    assert clean_reply(raw, char_name="Mira", other_names=["Bob"]) == raw


def test_names_with_regex_characters_are_literal() -> None:
    raw = "Sure thing!\nx.y*z: nope"
    assert clean_reply(raw, char_name="Mira", other_names=["x.y*z"]) == "Sure thing!"
    assert clean_reply("Sure thing!\nxayyz: still mine.", char_name="Mira", other_names=["x.y*z"]) == (
        "Sure thing!\nxayyz: still mine."
    )


def test_reply_that_is_only_another_turn_is_empty() -> None:
    assert clean_reply("User: hello?", char_name="Mira") == ""
    assert clean_reply("\n\nBob: hi", char_name="Mira", other_names=["Bob"]) == ""


@pytest.mark.parametrize(
    "raw", ["", "   ", "\n\n", "<|im_end|>", "<|im_start|>assistant\n", "...", "Mira:", "* *"]
)
def test_nothing_usable_gives_empty_string(raw: str) -> None:
    assert clean_reply(raw, char_name="Mira") == ""


def test_whitespace_is_collapsed() -> None:
    raw = "  Hello   there,\tfriend!  \n\n\n\n  How are   you?  "
    assert clean_reply(raw, char_name="Mira") == "Hello there, friend!\n\nHow are you?"


def test_dangling_sentence_is_dropped_when_a_complete_one_exists() -> None:
    assert clean_reply("I love tea. Especially when the rain", char_name="Mira") == "I love tea."
    assert clean_reply('She said "hi!" and then we', char_name="Mira") == 'She said "hi!"'


def test_dangling_sentence_kept_when_nothing_complete_precedes() -> None:
    assert clean_reply("hey there friend", char_name="Mira") == "hey there friend"


def test_dangling_drop_can_be_disabled() -> None:
    assert (
        clean_reply("I love tea. See you soon", char_name="Mira", drop_dangling=False)
        == "I love tea. See you soon"
    )


@pytest.mark.parametrize(
    "ending", ["Bye!", "Bye?", "Bye…", "*waves*", "(laughs)", "Bye! 🦊", '"Bye."', "Bye~"]
)
def test_complete_endings_are_kept(ending: str) -> None:
    raw = f"Lovely day. {ending}"
    assert clean_reply(raw, char_name="Mira") == raw


def test_unicode_text_survives() -> None:
    raw = "Ça va très bien, merci ! 日本語も話せます。🦊✨\nユーザー: こんにちは"
    cleaned = clean_reply(raw, char_name="Mira", other_names=["ユーザー"])
    assert cleaned == "Ça va très bien, merci ! 日本語も話せます。🦊✨"


def test_crlf_is_normalised() -> None:
    assert clean_reply("Hi!\r\nUser: hey", char_name="Mira") == "Hi!"


def test_empty_char_name_is_harmless() -> None:
    assert clean_reply("Hello!", char_name="") == "Hello!"


def test_fallback_replies_are_short_and_neutral() -> None:
    assert len(FALLBACK_REPLIES) >= 3
    for reply in FALLBACK_REPLIES:
        assert 0 < len(reply) <= 100
        assert "{" not in reply
        assert clean_reply(reply, char_name="Mira") == reply


# --------------------------------------------------------------------------------------------- trim_to_limit


def test_short_text_is_unchanged() -> None:
    assert trim_to_limit("Hello there.", 100) == "Hello there."
    assert trim_to_limit("Hello there.", 12) == "Hello there."


def test_trim_cuts_at_sentence_boundary() -> None:
    text = "First sentence here. Second sentence is here. Third one is long and goes on."
    assert trim_to_limit(text, 50) == "First sentence here. Second sentence is here."


def test_trim_sentence_boundary_exactly_at_limit() -> None:
    text = "Hello there. General Kenobi."
    assert trim_to_limit(text, len("Hello there.")) == "Hello there."


def test_trim_does_not_count_a_period_inside_a_word_as_boundary() -> None:
    text = "Visit example.com for more information about everything"
    result = trim_to_limit(text, 20)
    assert result.endswith("…")
    assert len(result) <= 20
    assert "example.com" not in result or result == "Visit example.com…"


def test_trim_falls_back_to_word_boundary_with_ellipsis() -> None:
    text = "one two three four five six seven eight nine ten"
    result = trim_to_limit(text, 20)
    assert result == "one two three four…"
    assert len(result) <= 20


def test_trim_hard_cuts_a_single_huge_word() -> None:
    result = trim_to_limit("a" * 50, 10)
    assert result == "a" * 9 + "…"


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 13, 40, 99])
def test_trim_never_exceeds_limit(limit: int) -> None:
    rng = random.Random(limit)
    words = ["tea", "fox", "Hello.", "why?", "🦊", "日本語", "a", "supercalifragilistic", "\n\n", "yes!"]
    for _ in range(50):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        assert len(trim_to_limit(text, limit)) <= limit


def test_trim_rejects_nonpositive_limit() -> None:
    with pytest.raises(ValueError):
        trim_to_limit("text", 0)


# --------------------------------------------------------------------------------------------- split_message


def test_split_short_text_is_one_chunk() -> None:
    assert split_message("Hello.", 2000) == ["Hello."]


def test_split_empty_text_is_no_chunks() -> None:
    assert split_message("", 2000) == []
    assert split_message("   \n ", 2000) == []


def test_split_prefers_paragraphs() -> None:
    first = "First paragraph. " * 5
    second = "Second paragraph. " * 5
    chunks = split_message(f"{first.strip()}\n\n{second.strip()}", 100)
    assert chunks == [first.strip(), second.strip()]


def test_split_falls_back_to_sentences_then_words() -> None:
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota kappa lambda mu nu xi omicron."
    chunks = split_message(text, 40)
    assert chunks[0] == "Alpha beta gamma. Delta epsilon zeta."
    assert all(len(c) <= 40 for c in chunks)
    assert squash("".join(chunks)) == squash(text)


def test_split_hard_cuts_unbroken_text() -> None:
    chunks = split_message("x" * 45, 10)
    assert chunks == ["x" * 10] * 4 + ["x" * 5]


@pytest.mark.parametrize("limit", [1, 7, 20, 64, 500, 2000])
def test_split_never_exceeds_limit_and_loses_no_text(limit: int) -> None:
    rng = random.Random(limit)
    pieces = [
        "Hello there.",
        "How are you?",
        "🦊🦊",
        "日本語のテキスト。",
        "word",
        "\n",
        "\n\n",
        "x" * 30,
        "Wait…",
    ]
    for _ in range(30):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 200)))
        chunks = split_message(text, limit)
        assert all(0 < len(c) <= limit for c in chunks)
        assert all(c == c.strip() for c in chunks)
        assert squash("".join(chunks)) == squash(text)


def test_split_discord_sized_reply() -> None:
    text = ("This is a sentence of moderate length that repeats. " * 100).strip()
    chunks = split_message(text, 2000)
    assert len(chunks) == 3
    assert all(c.endswith(".") for c in chunks)
    assert squash("".join(chunks)) == squash(text)


def test_split_rejects_nonpositive_limit() -> None:
    with pytest.raises(ValueError):
        split_message("text", 0)
