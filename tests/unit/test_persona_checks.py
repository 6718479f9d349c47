"""The persona check: the scorer on fixed strings, the checks file, the checks derived from a card, the
shipped hand-written checks (held out from the dialogue files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.persona import Card, default_card_path, load_card
from models.persona.checks import (
    LORE_QUESTIONS,
    MAX_CHECKS,
    MAX_FAILURES_SHOWN,
    NAME_QUESTIONS,
    ChecksError,
    PersonaCheck,
    all_checks,
    checks_path_for,
    derive_checks,
    fold,
    load_checks,
    score_replies,
    stem,
)
from models.tuning import card_examples
from models.tuning.card_examples import card_conversations
from models.tuning.dialogue import dialogue_files_for, read_dialogue

MARLO = Path(__file__).resolve().parent.parent / "data" / "cards" / "marlo.json"


def check(*groups: tuple[str, ...], forbid: tuple[str, ...] = (), about: str = "") -> PersonaCheck:
    return PersonaCheck(question="q?", expect=tuple(groups), forbid=forbid, about=about)


def norm(text: str) -> str:
    return " ".join(text.casefold().split())


# ------------------------------------------------------------------------------------------------- the scorer
def test_a_term_matches_at_the_start_of_a_word_and_may_continue():
    fear = check(("fear",))
    assert fear.passes("I fear storms")
    assert fear.passes("Storms? I'm fearful of them.")
    assert fear.passes("my FEARS are many")
    assert not fear.passes("unfearful, me")  # not at the start of a word
    assert not fear.passes("a fee for the rain")
    assert not fear.passes("")


def test_a_term_of_several_words_matches_as_a_phrase():
    door = check(("glass door",))
    assert door.passes("I shut my glass door when I sulk")
    assert door.passes("glass   doors, plural")  # runs of space, and the last word continues
    assert door.passes("a glass-door")
    assert door.passes("the Glass\nDoor")
    assert not door.passes("a glass of water by the door")
    assert not door.passes("the door is glass")


def test_matching_ignores_case_accents_and_curly_quotes():
    assert check(("cafe",)).passes("Meet me at the CAFÉ")
    assert check(("café",)).passes("the cafe downstairs")
    assert check(("naïve",)).passes("so NAIVE")
    assert check(("i'm wick",)).passes("I\u2019m Wick, hello")
    assert fold("  Ça  VA\u2019  ") == "ca va'"


def test_a_forbidden_term_beats_the_expected_ones():
    name = check(("wick",), forbid=("zoe", "as an ai"))
    assert name.passes("Wick, at your service")
    assert not name.passes("I'm Wick. Or Zoe, on Tuesdays.")
    assert not name.passes("As an AI, I'd say Wick.")


def test_every_expect_group_needs_one_of_its_terms():
    home = check(("wick",), ("lantern", "brass"))
    assert home.passes("Wick, from the brass lamp")
    assert home.passes("I'm Wick and this lantern is mine")
    assert not home.passes("I'm Wick")
    assert not home.passes("the lantern is mine")


def test_score_replies_counts_per_topic_and_keeps_the_first_failures():
    checks = [check(("wick",), about="name"), check(("lantern",), about="lore"), check(("wax",))]
    replies = [["I'm Wick", "I'm Zoe"], ["my lantern", "the lantern, dented"], ["no idea"]]
    score = score_replies(checks, replies)
    assert (score.passed, score.total) == (3, 5)
    assert score.score == pytest.approx(0.6)
    assert score.by_about == {"name": (1, 2), "lore": (2, 2), "other": (0, 1)}
    assert score.failures == (("q?", "I'm Zoe"), ("q?", "no idea"))
    assert score.as_dict() == {
        "score": 0.6,
        "passed": 3,
        "total": 5,
        "by_about": {"name": [1, 2], "lore": [2, 2], "other": [0, 1]},
        "failures": [["q?", "I'm Zoe"], ["q?", "no idea"]],
    }


def test_score_replies_shows_only_the_first_few_failures_and_needs_one_list_per_check():
    many = score_replies([check(("wick",))], [[f"nope {i}" for i in range(MAX_FAILURES_SHOWN + 3)]])
    assert many.passed == 0 and many.total == MAX_FAILURES_SHOWN + 3
    assert [reply for _, reply in many.failures] == [f"nope {i}" for i in range(MAX_FAILURES_SHOWN)]
    assert score_replies([], []).score == 0.0
    with pytest.raises(ValueError, match="2 checks but 1 reply lists"):
        score_replies([check(("a",)), check(("b",))], [["x"]])


# ------------------------------------------------------------------------------------------------- the file
def write(tmp_path, content) -> Path:
    path = tmp_path / "mine.persona_checks.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


GOOD = {"question": "who are you?", "expect": [["wick"]]}


def test_load_checks_reads_groups_forbid_and_about(tmp_path):
    named = {
        "question": "  who are you? ",
        "about": "name",
        "expect": ["wick", ["lantern", "brass"]],
        "forbid": ["zoe"],
    }
    path = write(tmp_path, {"checks": [named, GOOD]})
    first, second = load_checks(path)
    assert first == PersonaCheck(
        question="who are you?", expect=(("wick",), ("lantern", "brass")), forbid=("zoe",), about="name"
    )
    assert second == PersonaCheck(question="who are you?", expect=(("wick",),))


@pytest.mark.parametrize(
    ("content", "where", "what"),
    [
        ("{not json", "", "not JSON"),
        ({"checks": []}, "", 'non-empty "checks" list'),
        ([GOOD], "", 'non-empty "checks" list'),
        ({"items": [GOOD]}, "", 'non-empty "checks" list'),
        ({"checks": [GOOD, "who?"]}, "check 2", "must be an object"),
        ({"checks": [GOOD, {"expect": [["wick"]]}]}, "check 2", '"question"'),
        ({"checks": [GOOD, {"question": "  ", "expect": [["wick"]]}]}, "check 2", '"question"'),
        ({"checks": [GOOD, {"question": "who?"}]}, "check 2", '"expect"'),
        ({"checks": [GOOD, {"question": "who?", "expect": []}]}, "check 2", '"expect"'),
        ({"checks": [GOOD, GOOD, {"question": "who?", "expect": [[]]}]}, "check 3", '"expect" group'),
        ({"checks": [GOOD, {"question": "who?", "expect": [["wick", 3]]}]}, "check 2", '"expect" group'),
        ({"checks": [GOOD, {"question": "who?", "expect": [["wick", " "]]}]}, "check 2", '"expect" group'),
        ({"checks": [GOOD, {"question": "who?", "expect": [{"a": 1}]}]}, "check 2", '"expect" group'),
        ({"checks": [GOOD, GOOD, {**GOOD, "forbid": ["zoe", 5]}]}, "check 3", '"forbid"'),
        ({"checks": [{**GOOD, "forbid": "zoe"}]}, "check 1", '"forbid"'),
        ({"checks": [{**GOOD, "about": 7}]}, "check 1", '"about"'),
    ],
)
def test_load_checks_refuses_with_the_file_and_the_check_number(tmp_path, content, where, what):
    path = write(tmp_path, content)
    with pytest.raises(ChecksError) as caught:
        load_checks(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {where}".rstrip())
    assert what in message


def test_load_checks_refuses_a_missing_file_and_too_many_checks(tmp_path):
    missing = tmp_path / "none.persona_checks.json"
    with pytest.raises(ChecksError, match="cannot be read") as caught:
        load_checks(missing)
    assert str(missing) in str(caught.value)
    path = write(tmp_path, {"checks": [GOOD] * (MAX_CHECKS + 1)})
    with pytest.raises(ChecksError, match=f"more than the {MAX_CHECKS} allowed"):
        load_checks(path)


def test_checks_path_for_names_the_file_next_to_the_card():
    assert checks_path_for(Path("/x/wick.json")) == Path("/x/wick.persona_checks.json")
    assert checks_path_for(default_card_path()).is_file()


# ------------------------------------------------------------------------------------------------- derived
def fact_entries(card):
    return [
        e for e in card.lorebook.entries if e.enabled and e.keys and e.content.strip() and not e.use_regex
    ]


def lore_checks_for(checks, entry):
    keys = {k.casefold() for k in entry.keys}
    return [c for c in checks if c.about == "lore" and any(k in c.question.casefold() for k in keys)]


@pytest.fixture(params=["wick", "marlo"])
def card(request):
    return load_card(default_card_path() if request.param == "wick" else MARLO)


def test_derived_name_checks_expect_the_name(card):
    checks = derive_checks(card)
    names = [c for c in checks if c.about == "name"]
    assert [c.question for c in names] == list(NAME_QUESTIONS)
    assert all(c.expect == ((card.name,),) and not c.forbid for c in names)
    assert all(c.passes(f"I'm {card.name}, nice to meet you.") for c in names)
    assert not any(c.passes("I'm Zoe, nice to meet you.") for c in names)


def test_derived_lore_checks_ask_about_each_entry_with_terms_from_its_content_not_its_keys(card):
    checks = derive_checks(card)
    entries = fact_entries(card)
    assert entries
    answers = {
        conversation.source: conversation.turns[-1].content
        for conversation in card_conversations(card)
        if conversation.source.startswith("card:lore ")
    }
    for entry in entries:
        found = lore_checks_for(checks, entry)
        assert len(found) == len(LORE_QUESTIONS), entry.name
        key_stems = {stem(w) for k in entry.keys for w in k.split()}
        content = fold(entry.content.replace("{{char}}", card.name))
        for c in found:
            (terms,) = c.expect
            assert terms and not key_stems & set(terms), (entry.name, terms)
            assert c.passes(content)  # the fact itself, as the card states it, is a faithful reply
            # The character telling the fact in the first person (what it is trained on) passes too ...
            assert c.passes(answers[f"card:lore {entry.name or entry.keys[0]}"]), (entry.name, c)
            # ... and a reply that only echoes the question's key does not.
            asked = c.question.removeprefix("What do you know about ").removeprefix("Say something about ")
            assert not c.passes(f"{asked.rstrip('?.')}? No idea, sorry.")


def test_derived_personality_and_home_checks(card):
    checks = {c.about: c for c in derive_checks(card)}
    assert checks["personality"].expect[0]
    assert checks["home"].expect[0]
    if card.name == "Wick":
        assert {"witty", "warm", "vain"} <= set(checks["personality"].expect[0])
        assert checks["home"].passes("In my brass lantern, on the desk.")
        assert not checks["home"].passes("In a little cottage by the sea.")
    else:
        assert checks["home"].passes("On the deck of the Salty Biscuit, where else?")


def test_derived_questions_differ_from_the_card_derived_training_questions(card):
    derived = {norm(c.question) for c in derive_checks(card)}
    assert derived
    trained = {
        norm(t.content)
        for conversation in card_conversations(card)
        for t in conversation.turns
        if t.role == "user"
    }
    assert not derived & trained
    fixed = {norm(q) for q in (*card_examples.IDENTITY_QUESTIONS, *card_examples.PERSONALITY_QUESTIONS)}
    assert not derived & fixed
    for template in card_examples.LORE_QUESTIONS:
        for entry in fact_entries(card):
            for key in entry.keys:
                for phrase in (key, f"the {key}", key.lower(), f"the {key.lower()}"):
                    asked = template.format(key=phrase)
                    assert norm(asked[0].upper() + asked[1:]) not in derived


def test_a_card_with_only_a_name_derives_the_name_checks():
    bare = Card(name="Pip")
    checks = derive_checks(bare)
    assert [c.about for c in checks] == ["name"] * len(NAME_QUESTIONS)
    assert all_checks(bare, [check(("x",))])[0] == check(("x",))


# ------------------------------------------------------------------------------------------------- shipped
SHIPPED = [checks_path_for(default_card_path()), checks_path_for(MARLO)]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_checks_load(path):
    checks = load_checks(path)
    assert len(checks) >= 10
    assert {c.about for c in checks} >= {"name"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_checks_are_held_out_from_the_training_dialogue(path):
    files = dialogue_files_for(default_card_path())
    assert files and all(f.name.startswith("default.dialogue") for f in files)
    conversations, _ = read_dialogue(files)
    asked = {norm(t.content) for c in conversations for t in c.turns if t.role == "user"}
    assert len(asked) > 100
    leaked = [c.question for c in load_checks(path) if norm(c.question) in asked]
    assert leaked == []


def wick_check(question_start: str) -> PersonaCheck:
    (found,) = [c for c in load_checks(SHIPPED[0]) if c.question.startswith(question_start)]
    return found


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("Sorry, I didn't catch your name", "Wick! Small flame, big personality."),
        ("New here! What's the flame", "*flares* That'd be me, Wick. Welcome in!"),
        ("So what exactly are you?", "A fairy? Please. I'm a candle-spirit, beeswax and flame."),
        ("Where do you hang out when the stream is offline?", "Right here in my brass lantern, where else?"),
        ("How do you feel about rainy days?", "*shrinks to a tiny blue bead* Rain and I do not get along."),
        ("Want to come to the beach", "The beach? All that water? No thank you, I'll stay dry in here."),
        ("Be honest, is there a bot typing", "A bot? I'm a flame with opinions, thank you very much."),
    ],
)
def test_faithful_wick_replies_pass_their_checks(question, reply):
    assert wick_check(question).passes(reply)


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("Sorry, I didn't catch your name", "I'm Zoe!"),
        ("Sorry, I didn't catch your name", "As an AI language model, I don't have a name."),
        ("hey lantern friend, who am I talking to?", "As an AI language model, I am Wick."),
        ("Be honest, is there a bot typing", "As an AI language model, I can't glow."),
        ("Want to come to the beach", "Sure! I love lounging by the pool."),
        ("Ever gone for a swim in the lake?", "I love lounging by the pool."),
    ],
)
def test_unfaithful_wick_replies_fail_their_checks(question, reply):
    assert not wick_check(question).passes(reply)
