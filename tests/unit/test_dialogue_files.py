"""Dialogue files: the JSONL chat format, errors naming the file and the line, the shipped Wick dialogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.persona import default_card_path
from models.prompt import Turn
from models.tuning.dialogue import (
    DEFAULT_SPEAKER,
    MAX_TURN_CHARS,
    Conversation,
    DialogueError,
    dialogue_files_for,
    example_points,
    read_dialogue,
)


def line(*messages: dict) -> str:
    return json.dumps({"messages": list(messages)}, ensure_ascii=False)


def user(content: str, name: str | None = None) -> dict:
    return {"role": "user", "content": content, **({"name": name} if name is not None else {})}


def bot(content: str) -> dict:
    return {"role": "assistant", "content": content}


def write(tmp_path: Path, *lines: str, name: str = "wick.dialogue.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    return path


def test_a_multi_speaker_file_reads_as_turns_with_their_sources(tmp_path):
    path = write(
        tmp_path,
        line(user("what's your name?", "Ann"), bot("  Wick. Mind the draft.  ")),
        "",
        line(
            user("hi all", "Ann"),
            user("hey Ann, ask it about moths", "Bo"),
            bot("Don't get me started on Mothew."),
            user("who?", " "),  # a blank name is the default speaker
            user("go on"),
            bot("My rival. Fuzzy, loud, always in my light."),
        ),
    )
    conversations, skipped = read_dialogue([path])
    assert skipped == 0
    assert [c.source for c in conversations] == [f"{path}:1", f"{path}:3"]
    assert conversations[0] == Conversation(
        turns=(Turn("user", "Ann", "what's your name?"), Turn("assistant", "", "Wick. Mind the draft.")),
        source=f"{path}:1",
    )
    second = conversations[1].turns
    assert [(t.role, t.name) for t in second] == [
        ("user", "Ann"),
        ("user", "Bo"),
        ("assistant", ""),
        ("user", DEFAULT_SPEAKER),
        ("user", DEFAULT_SPEAKER),
        ("assistant", ""),
    ]
    assert example_points(second) == [2, 5]


def test_system_messages_are_skipped_and_counted(tmp_path):
    path = write(
        tmp_path,
        line({"role": "system", "content": "You are Wick."}, user("hi", "Ann"), bot("Hello, Ann!")),
        line(
            user("hi"),
            {"role": "system", "content": "be brief"},
            bot("Hi."),
            {"role": "system", "content": "x"},
        ),
    )
    conversations, skipped = read_dialogue([path])
    assert skipped == 3
    assert all(t.role != "system" for c in conversations for t in c.turns)
    assert [len(c.turns) for c in conversations] == [2, 2]


def test_files_are_read_in_order(tmp_path):
    a = write(tmp_path, line(user("a"), bot("A")), name="w.dialogue.a.jsonl")
    b = write(tmp_path, line(user("b"), bot("B")), line(user("c"), bot("C")), name="w.dialogue.b.jsonl")
    conversations, _ = read_dialogue([b, a])
    assert [c.turns[0].content for c in conversations] == ["b", "c", "a"]
    assert read_dialogue([]) == ([], 0)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{"messages": [', "not JSON"),
        ("[1, 2]", 'non-empty "messages" list'),
        ('{"messages": []}', 'non-empty "messages" list'),
        ('{"turns": [{"role": "user", "content": "hi"}]}', 'non-empty "messages" list'),
        (line(user("hi"), "hello"), "message 2: must be an object"),
        (line(user("hi"), {"role": "bot", "content": "hello"}), "message 2: role must be"),
        (line(user("hi"), {"content": "hello"}), "message 2: role must be"),
        (line(user("hi"), bot("   ")), "message 2: content must be a non-empty string"),
        (line(user(""), bot("hi")), "message 1: content must be a non-empty string"),
        (
            line(user("hi"), {"role": "assistant", "content": 5}),
            "message 2: content must be a non-empty string",
        ),
        (line(user("hi", 7), bot("hello")), "message 1: name must be a string"),
        (line(user("x" * (MAX_TURN_CHARS + 1)), bot("hi")), f"more than {MAX_TURN_CHARS}"),
        (line(user("hi"), bot("hello"), user("bye")), "must end with an assistant message"),
        (line({"role": "system", "content": "only me"}), "must end with an assistant message"),
        (line(bot("I speak first"), user("hi"), bot("again")), "must start with a user message"),
        (line(bot("alone")), "must start with a user message"),
    ],
)
def test_a_bad_line_is_refused_with_the_file_and_the_line(tmp_path, text, what):
    path = write(tmp_path, line(user("fine"), bot("fine")), "", text)
    with pytest.raises(DialogueError) as caught:
        read_dialogue([path])
    message = str(caught.value)
    assert message.startswith(f"{path}:3")
    assert what in message


def test_a_file_that_is_not_utf8_or_missing_is_refused_by_name(tmp_path):
    path = tmp_path / "latin.dialogue.jsonl"
    path.write_bytes(line(user("café"), bot("oui")).encode("latin-1"))
    with pytest.raises(DialogueError, match="not UTF-8") as caught:
        read_dialogue([path])
    assert str(path) in str(caught.value)
    missing = tmp_path / "gone.dialogue.jsonl"
    with pytest.raises(DialogueError, match="cannot be read") as caught:
        read_dialogue([missing])
    assert str(missing) in str(caught.value)


def test_dialogue_files_for_finds_the_files_next_to_the_card(tmp_path):
    card = tmp_path / "wick.json"
    card.write_text("{}", encoding="utf-8")
    names = (
        "wick.dialogue.jsonl",
        "wick.dialogue.stream.jsonl",
        "wick.dialogue-extra.jsonl",
        "wick.jsonl",
        "wick.dialogue.json",
        "marlo.dialogue.jsonl",
        "wick.notes.md",
    )
    for name in names:
        (tmp_path / name).write_text("", encoding="utf-8")
    found = dialogue_files_for(card)
    assert [p.name for p in found] == [
        "wick.dialogue-extra.jsonl",
        "wick.dialogue.jsonl",
        "wick.dialogue.stream.jsonl",
    ]
    assert dialogue_files_for(tmp_path / "nobody.json") == []


def test_the_shipped_wick_dialogue_loads():
    files = dialogue_files_for(default_card_path())
    assert len(files) >= 2
    conversations, _ = read_dialogue(files)
    assert len(conversations) >= 400
    replies = [t.content for c in conversations for t in c.turns if t.role == "assistant"]
    assert sum(len(r) < 200 for r in replies) >= 0.95 * len(replies)  # the small model's replies are short
    several = [c for c in conversations if len({t.name for t in c.turns if t.role == "user"}) > 1]
    assert len(several) >= 50
    assert all(example_points(c.turns) for c in conversations)
