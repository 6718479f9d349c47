"""Persona cards: V1/V2/V3 JSON parsing, quirks from the wild, refusals, macros and example splitting."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from models.persona import (
    Card,
    CardError,
    Lorebook,
    apply_macros,
    default_card_path,
    load_card,
    parse_card,
    split_examples,
)


def v2(**data: Any) -> dict[str, Any]:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Ember", **data}}


def v3(**data: Any) -> dict[str, Any]:
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Ember", **data}}


def write_json(tmp_path: pathlib.Path, obj: object, name: str = "card.json") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# --- the three shapes -------------------------------------------------------------------------------------------


def test_v2_card_fields_are_read() -> None:
    card = parse_card(
        v2(
            description="A fox of embers.",
            personality="sly",
            scenario="A campfire.",
            first_mes="Hi {{user}}",
            mes_example="<START>\n{{user}}: hi\n{{char}}: hey",
            creator_notes="for humans",
            system_prompt="{{original}} Be sly.",
            post_history_instructions="[Stay sly.]",
            alternate_greetings=["Yo", "Hey"],
            tags=["fox", "fire"],
            creator="ana",
            character_version="2.1",
            extensions={"anything": 1},
        )
    )
    assert card.spec == "chara_card_v2"
    assert card.name == "Ember"
    assert card.description == "A fox of embers."
    assert card.personality == "sly"
    assert card.scenario == "A campfire."
    assert card.creator_notes == "for humans"
    assert card.system_prompt == "{{original}} Be sly."
    assert card.post_history_instructions == "[Stay sly.]"
    assert card.alternate_greetings == ("Yo", "Hey")
    assert card.tags == ("fox", "fire")
    assert (card.creator, card.character_version) == ("ana", "2.1")
    assert card.lorebook is None
    assert card.source == "<dict>"


def test_v3_card_with_nickname_uses_it_for_char() -> None:
    card = parse_card(v3(nickname="Em", first_mes="I am {{char}}, {{user}}."))
    assert card.spec == "chara_card_v3"
    assert card.nickname == "Em"
    assert card.char_name == "Em"
    assert card.greeting("Bo") == "I am Em, Bo."


def test_v2_ignores_nickname_field() -> None:
    assert parse_card(v2(nickname="Em")).char_name == "Ember"


def test_v1_flat_card() -> None:
    card = parse_card({"name": "Old", "description": "d", "personality": "p", "first_mes": "hello <USER>"})
    assert card.spec == "chara_card_v1"
    assert (card.name, card.description, card.personality) == ("Old", "d", "p")
    assert card.greeting("Zed") == "hello Zed"


def test_v2_body_without_spec_is_read_as_v2() -> None:
    card = parse_card({"data": {"name": "Nested", "description": "inside data"}})
    assert card.spec == "chara_card_v2"
    assert card.description == "inside data"


def test_v3_lorebook_entries() -> None:
    card = parse_card(
        v3(
            character_book={
                "scan_depth": 2,
                "token_budget": 50,
                "recursive_scanning": True,
                "entries": [
                    {"keys": ["fox"], "content": "Foxes.", "use_regex": True, "priority": 3, "name": "f"},
                    {"keys": ["sea"], "content": "Sea.", "position": "after_char", "constant": True},
                ],
            }
        )
    )
    book = card.lorebook
    assert isinstance(book, Lorebook)
    assert (book.scan_depth, book.token_budget, book.recursive_scanning) == (2, 50, True)
    first, second = book.entries
    assert first.use_regex and first.priority == 3 and first.name == "f"
    assert first.position == "before_char"
    assert second.position == "after_char" and second.constant


# --- quirks accepted --------------------------------------------------------------------------------------------


def test_character_book_null_is_no_lorebook() -> None:
    assert parse_card(v2(character_book=None)).lorebook is None


def test_lorebook_without_usable_entries_is_none() -> None:
    book = {"entries": [{"keys": ["a"], "content": "  "}, "junk"]}
    assert parse_card(v2(character_book=book)).lorebook is None


def test_alternate_greetings_as_single_string() -> None:
    card = parse_card(v2(alternate_greetings="Just one, {{user}}"))
    assert card.alternate_greetings == ("Just one, {{user}}",)


def test_missing_optional_fields_are_empty() -> None:
    card = parse_card(v2())
    assert card.description == card.first_mes == card.mes_example == card.system_prompt == ""
    assert card.alternate_greetings == card.tags == ()


def test_null_text_fields_are_empty() -> None:
    assert parse_card(v2(description=None, scenario=None)).description == ""


def test_non_string_tags_are_kept_as_text_and_nulls_dropped() -> None:
    assert parse_card(v2(tags=["a", 3, None, 1.5, {"x": 1}, " "])).tags == ("a", "3", "1.5")


def test_tags_as_comma_separated_string() -> None:
    assert parse_card(v2(tags="cozy, fox ,")).tags == ("cozy", "fox")


def test_extra_unknown_fields_are_ignored() -> None:
    obj = v2(weird=[1, 2], extensions={"x": {"y": 1}})
    obj["also_weird"] = True
    assert parse_card(obj).name == "Ember"


def test_lore_keys_as_comma_separated_string() -> None:
    card = parse_card(v2(character_book={"entries": [{"keys": "fox, ember ,", "content": "c"}]}))
    assert card.lorebook is not None
    assert card.lorebook.entries[0].keys == ("fox", "ember")


def test_lore_entry_defaults_and_sloppy_values() -> None:
    entry_json = {"keys": ["a"], "content": "c", "enabled": "false", "insertion_order": "7", "priority": None}
    card = parse_card(v2(character_book={"scan_depth": "bad", "entries": [entry_json]}))
    assert card.lorebook is not None
    assert card.lorebook.scan_depth == 4
    entry = card.lorebook.entries[0]
    assert entry.enabled is False
    assert entry.insertion_order == 7
    assert entry.priority == 10
    assert (entry.selective, entry.constant, entry.case_sensitive, entry.use_regex) == (False,) * 4


def test_windows_line_endings_are_normalized() -> None:
    assert parse_card(v2(description="a\r\nb")).description == "a\nb"


def test_name_alone_is_a_usable_minimal_persona() -> None:
    card = parse_card({"name": "Solo"})
    assert card.greeting("Ana") == "Hello, Ana. I'm Solo."
    assert card.summary() == "Solo"


def test_name_is_stripped() -> None:
    assert parse_card(v2(name="  Ember  ")).name == "Ember"


# --- refusals ---------------------------------------------------------------------------------------------------


def test_refuses_json_that_is_not_an_object(tmp_path: pathlib.Path) -> None:
    path = write_json(tmp_path, ["not", "a", "card"])
    with pytest.raises(CardError, match=r"persona card .*card\.json: JSON is not an object \(got a list\)"):
        load_card(path)


def test_refuses_text_that_is_not_json(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("{name: nope", encoding="utf-8")
    with pytest.raises(CardError, match=r"card\.json: not valid JSON \(.* at line 1 column 2\)"):
        load_card(path)


def test_refuses_binary_that_is_neither(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "card.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CardError, match=r"not JSON"):
        load_card(path)


def test_refuses_empty_name(tmp_path: pathlib.Path) -> None:
    path = write_json(tmp_path, v2(name="   "))
    with pytest.raises(CardError, match=r"persona card .*card\.json: 'data\.name' is empty"):
        load_card(path)


def test_refuses_missing_name() -> None:
    with pytest.raises(CardError, match=r"persona card <dict>: 'name' is missing"):
        parse_card({"description": "nameless"})


def test_refuses_unknown_spec() -> None:
    with pytest.raises(CardError, match=r"unsupported spec 'foo'"):
        parse_card({"spec": "foo", "data": {"name": "x"}})


def test_refuses_v2_without_data() -> None:
    with pytest.raises(CardError, match=r"'data' is missing or not an object"):
        parse_card({"spec": "chara_card_v2", "name": "flat"})


def test_refuses_text_field_that_is_a_container() -> None:
    with pytest.raises(CardError, match=r"'data\.description' must be text, not an object"):
        parse_card(v2(description={"a": 1}))


def test_refuses_character_book_that_is_not_an_object() -> None:
    with pytest.raises(CardError, match=r"character_book is not an object"):
        parse_card(v2(character_book=[1, 2]))


def test_refuses_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(CardError, match=r"nope\.json: cannot read file"):
        load_card(tmp_path / "nope.json")


def test_card_error_is_a_value_error() -> None:
    assert issubclass(CardError, ValueError)


# --- greetings and summary --------------------------------------------------------------------------------------


def test_greeting_index_walks_first_mes_then_alternates_and_wraps() -> None:
    card = parse_card(v2(first_mes="one {{user}}", alternate_greetings=["two", "three {{char}}"]))
    assert [card.greeting("Bo", i) for i in range(4)] == ["one Bo", "two", "three Ember", "one Bo"]


def test_greeting_without_first_mes_uses_alternates() -> None:
    assert parse_card(v2(alternate_greetings=["alt"])).greeting("Bo") == "alt"


def test_summary_shows_name_tags_creator_and_excerpt_but_not_notes() -> None:
    card = parse_card(
        v2(
            description="{{char}} is " + "very " * 200 + "long.",
            tags=["a", "b"],
            creator="ana",
            character_version="3",
            creator_notes="SECRET NOTES",
        )
    )
    text = card.summary()
    assert text.startswith("Ember v3\nby ana\ntags: a, b\nEmber is very")
    assert text.endswith("…")
    assert len(text) < 400
    assert "SECRET" not in text


# --- macros -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["{{char}} meets {{user}}", "{{CHAR}} meets {{User}}", "<BOT> meets <USER>", "<bot> meets <user>"],
)
def test_macros_are_case_insensitive_in_both_spellings(text: str) -> None:
    assert apply_macros(text, char="Wick", user="Ana") == "Wick meets Ana"


def test_macros_tolerate_inner_spaces() -> None:
    assert apply_macros("{{ char }}", char="Wick", user="Ana") == "Wick"


def test_original_macro_is_expanded_with_its_own_macros() -> None:
    out = apply_macros("{{original}} Extra.", char="Wick", user="Ana", original="You are {{char}}.")
    assert out == "You are Wick. Extra."


def test_original_macro_without_original_is_removed() -> None:
    assert apply_macros("[{{original}}]", char="W", user="A") == "[]"


def test_macro_values_are_not_expanded_again() -> None:
    assert apply_macros("hi {{user}}", char="Wick", user="{{char}}") == "hi {{char}}"


def test_unknown_macros_are_left_alone() -> None:
    assert apply_macros("{{random}} {{char}}", char="W", user="A") == "{{random}} W"


# --- example dialogue -------------------------------------------------------------------------------------------


def test_split_examples_on_start_markers() -> None:
    text = "<START>\nA: 1\nB: 2\n<start>\n\nA: 3\n< START >\n<START>"
    assert split_examples(text) == ["A: 1\nB: 2", "A: 3"]


def test_split_examples_without_markers_is_one_block() -> None:
    assert split_examples("A: hi\nB: ho") == ["A: hi\nB: ho"]


def test_split_examples_of_empty_text() -> None:
    assert split_examples("  ") == []


# --- the bundled default ----------------------------------------------------------------------------------------


def test_default_card_loads_and_is_complete() -> None:
    card = load_card(default_card_path())
    assert isinstance(card, Card)
    assert card.name and card.description and card.personality and card.scenario and card.first_mes
    assert len(card.alternate_greetings) >= 2
    assert len(split_examples(card.mes_example)) >= 2
    assert "{{original}}" in card.system_prompt
    assert card.post_history_instructions
    assert card.lorebook is not None
    assert 3 <= len(card.lorebook.entries) <= 5
    assert any(entry.constant for entry in card.lorebook.entries)
    assert card.source == str(default_card_path())
