"""Lorebook activation: keys, selective entries, constants, case, scan depth, budget, regex and recursion."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from models.persona import Lorebook, LoreEntry, active_lore


def words(text: str) -> int:
    return len(text.split())


def entry(keys: tuple[str, ...] | str, content: str = "", **options: Any) -> LoreEntry:
    keys = (keys,) if isinstance(keys, str) else keys
    return LoreEntry(keys=keys, content=content or f"lore about {keys[0]}", **options)


def active(book: Lorebook, *texts: str) -> list[str]:
    return [e.content for e in active_lore(book, list(texts), words)]


def test_key_in_recent_text_activates_entry() -> None:
    book = Lorebook(entries=(entry("dragon"), entry("castle")))
    assert active(book, "I saw a dragon today") == ["lore about dragon"]


def test_no_key_no_lore() -> None:
    assert active(Lorebook(entries=(entry("dragon"),)), "nothing here") == []


def test_keys_match_whole_words_only() -> None:
    book = Lorebook(entries=(entry("cat"),))
    assert active(book, "concatenate the categories") == []
    assert active(book, "my cat, Tom") == ["lore about cat"]


def test_key_with_punctuation_edges_matches() -> None:
    assert active(Lorebook(entries=(entry("C++"),)), "I write C++ daily") == ["lore about C++"]


def test_multi_word_key() -> None:
    assert active(Lorebook(entries=(entry("red moon"),)), "the Red Moon rises") == ["lore about red moon"]


def test_case_insensitive_by_default_and_sensitive_on_request() -> None:
    loose = entry("Mothew")
    strict = entry("Mothew", "strict", case_sensitive=True)
    book = Lorebook(entries=(loose, strict))
    assert active(book, "mothew is back") == ["lore about Mothew"]
    assert active(book, "Mothew is back") == ["lore about Mothew", "strict"]


def test_selective_entry_needs_a_secondary_key() -> None:
    book = Lorebook(entries=(entry("storm", secondary_keys=("window", "outside"), selective=True),))
    assert active(book, "a storm is coming") == []
    assert active(book, "a storm is coming", "look outside") == ["lore about storm"]


def test_secondary_keys_without_selective_are_ignored() -> None:
    book = Lorebook(entries=(entry("storm", secondary_keys=("window",)),))
    assert active(book, "a storm") == ["lore about storm"]


def test_selective_without_secondary_keys_acts_on_primary_alone() -> None:
    assert active(Lorebook(entries=(entry("storm", selective=True),)), "storm") == ["lore about storm"]


def test_constant_entry_is_always_active() -> None:
    book = Lorebook(entries=(entry("never-said", "always here", constant=True),))
    assert active(book) == ["always here"]


def test_disabled_entry_never_activates() -> None:
    book = Lorebook(
        entries=(entry("dragon", enabled=False), entry("x", "const", constant=True, enabled=False))
    )
    assert active(book, "dragon") == []


def test_scan_depth_limits_how_far_back_keys_count() -> None:
    book = Lorebook(entries=(entry("dragon"),), scan_depth=2)
    assert active(book, "dragon", "one", "two") == []
    assert active(book, "zero", "dragon", "two") == ["lore about dragon"]


def test_scan_depth_zero_leaves_only_constants() -> None:
    book = Lorebook(entries=(entry("dragon"), entry("c", "constant", constant=True)), scan_depth=0)
    assert active(book, "dragon") == ["constant"]


def test_token_budget_keeps_highest_priority_first() -> None:
    low = entry("a", "low priority five words here", priority=1, insertion_order=1)
    high = entry("a", "high priority five words here", priority=50, insertion_order=2)
    book = Lorebook(entries=(low, high), token_budget=6)
    assert active(book, "a") == ["high priority five words here"]


def test_entries_that_do_not_fit_are_skipped_but_smaller_ones_still_fit() -> None:
    big = entry("a", "one two three four five six seven", priority=50)
    small = entry("a", "tiny", priority=1)
    assert active(Lorebook(entries=(big, small), token_budget=5), "a") == ["tiny"]


def test_result_is_ordered_by_insertion_order() -> None:
    first = entry("a", "first", insertion_order=1, priority=1)
    second = entry("a", "second", insertion_order=2, priority=99)
    assert active(Lorebook(entries=(second, first)), "a") == ["first", "second"]


def test_regex_keys() -> None:
    book = Lorebook(entries=(entry(r"drag(on|ons)\b", "regex hit", use_regex=True),))
    assert active(book, "two dragons") == ["regex hit"]
    assert active(book, "dragnet") == []


def test_regex_in_slash_form_with_flags() -> None:
    book = Lorebook(entries=(entry("/^wick$/i", "slash hit", use_regex=True, case_sensitive=True),))
    assert active(book, "WICK") == ["slash hit"]


def test_regex_honours_case_sensitivity() -> None:
    book = Lorebook(entries=(entry("Wick", "hit", use_regex=True, case_sensitive=True),))
    assert active(book, "wick") == []
    assert active(book, "Wick") == ["hit"]


def test_plain_keys_are_not_regexes() -> None:
    assert active(Lorebook(entries=(entry("a.c"),)), "abc") == []


def test_bad_regex_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    book = Lorebook(entries=(entry(("(unclosed", "fine"), "content", use_regex=True), entry("other")))
    with caplog.at_level(logging.WARNING):
        assert active(book, "fine and other") == ["content", "lore about other"]
    assert "(unclosed" in caplog.text


def test_recursive_scanning_lets_lore_trigger_lore() -> None:
    chain = (entry("king", "The king owns a sword."), entry("sword", "The sword is cursed."))
    assert active(Lorebook(entries=chain), "the king") == ["The king owns a sword."]
    assert active(Lorebook(entries=chain, recursive_scanning=True), "the king") == [
        "The king owns a sword.",
        "The sword is cursed.",
    ]


def test_recursion_from_constant_entries() -> None:
    book = Lorebook(
        entries=(entry("x", "A lantern glows.", constant=True), entry("lantern", "Lantern lore.")),
        recursive_scanning=True,
    )
    assert active(book) == ["A lantern glows.", "Lantern lore."]


def test_recursion_is_bounded() -> None:
    # A chain longer than the pass limit: k0 -> k1 -> ... each entry's content names the next key.
    chain = tuple(entry(f"k{i}", f"leads to k{i + 1}", insertion_order=i) for i in range(10))
    got = active(Lorebook(entries=chain, recursive_scanning=True), "k0")
    assert got[0] == "leads to k1"
    assert 1 < len(got) < 10


def test_recursive_cycle_terminates() -> None:
    book = Lorebook(entries=(entry("a", "see b"), entry("b", "see a")), recursive_scanning=True)
    assert active(book, "a") == ["see b", "see a"]
