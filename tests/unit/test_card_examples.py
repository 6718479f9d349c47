"""Training conversations from a card alone: first person, greetings, example blocks, identity, lore."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.persona import Card, Lorebook, LoreEntry, default_card_path, load_card, split_examples
from models.prompt import Turn
from models.tuning.card_examples import (
    GREETINGS,
    IDENTITY_QUESTIONS,
    LORE_QUESTIONS,
    PERSONALITY_QUESTIONS,
    VIEWERS,
    card_conversations,
    first_person,
)

MARLO = Path(__file__).resolve().parent.parent / "data" / "cards" / "marlo.json"


# ---------------------------------------------------------------------------------------------- first person
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Wick is made of wax. He fears storms; rain nearly put him out.",
            "I am made of wax. I fear storms; rain nearly put me out.",
        ),
        (
            "He watches every stream and remembers the regulars.",
            "I watch every stream and remember the regulars.",
        ),
        ("Wick carries a torch and watches the door.", "I carry a torch and watch the door."),
        ("He misses nothing and fixes everything.", "I miss nothing and fix everything."),
        ("He has a dent. He doesn't mind.", "I have a dent. I don't mind."),
        ("Wick isn't a fan of rain.", "I am not a fan of rain."),
        ("She always shares her sardines.", "I always share my sardines."),
        ("He polishes it himself and keeps it warm.", "I polish it myself and keep it warm."),
        ("His lantern is brass and his glow is gold.", "My lantern is brass and my glow is gold."),
        ("The lantern is Wick's home.", "The lantern is my home."),
        ("Talk of melting makes him laugh nervously.", "Talk of melting makes me laugh nervously."),
        ("", ""),
    ],
)
def test_first_person_agrees_subject_and_verb(text, expected):
    assert first_person(text, "Wick") == expected


def test_a_text_naming_someone_else_keeps_their_pronouns():
    assert first_person("Mothew circles the lantern. Wick calls him a rival but likes him.", "Wick") == (
        "Mothew circles the lantern. I call him a rival but like him."
    )
    assert first_person("Mothew is a moth. He circles the lantern.", "Wick") == (
        "Mothew is a moth. He circles the lantern."
    )
    # Someone else's verbs keep their -s even after the character's name was changed.
    assert first_person(
        "Gertrude, Marlo's sister, is a seagull too; she lives in the harbour and visits to steal his"
        " sardines.",
        "Marlo",
    ).startswith("Gertrude, my sister, is a seagull too; she lives in the harbour and visits")


# ---------------------------------------------------------------------------------------------- conversations
@pytest.fixture(params=["wick", "marlo"], scope="module")
def card(request):
    return load_card(default_card_path() if request.param == "wick" else MARLO)


def by_source(conversations, prefix):
    return [c for c in conversations if c.source.startswith(prefix)]


def test_every_conversation_is_a_viewer_then_the_character(card):
    conversations = card_conversations(card)
    assert conversations
    for c in conversations:
        assert c.turns[0].role == "user" and c.turns[-1].role == "assistant", c.source
        assert all(t.content and t.content == t.content.strip() for t in c.turns)
        assert all("{{" not in t.content and "<BOT>" not in t.content for t in c.turns)
        assert all(t.name for t in c.turns if t.role == "user")
        assert all(t.name == "" for t in c.turns if t.role == "assistant")


def test_greetings_are_answered_with_the_cards_greetings_macros_filled(card):
    greetings = by_source(card_conversations(card), "card:greeting ")
    assert len(greetings) == 1 + len(card.alternate_greetings)
    for index, c in enumerate(greetings):
        viewer, reply = c.turns
        assert c.source == f"card:greeting {index + 1}"
        assert viewer.name in VIEWERS and viewer.content == GREETINGS[index % len(GREETINGS)]
        assert reply.content == card.greeting(viewer.name, index)
    first_viewer, first_reply = greetings[0].turns
    assert first_viewer.name in first_reply.content  # "{{user}}" is the viewer who said hello


def test_example_blocks_become_conversations(card):
    examples = by_source(card_conversations(card), "card:example ")
    assert len(examples) == len(split_examples(card.mes_example))
    user, reply = examples[0].turns
    assert user.name in VIEWERS
    if card.name == "Wick":
        assert user.content == "Are you a real fire?"
        assert reply.content == "Real enough to toast a marshmallow, polite enough not to."
    else:
        assert user.content == "Are you really a seagull?"
        assert reply.content == "Feathers, beak, terrible manners. What do you think?"


def test_identity_answers_give_the_name_in_the_first_person(card):
    identity = by_source(card_conversations(card), "card:identity")
    assert [c.turns[0].content for c in identity] == list(IDENTITY_QUESTIONS)
    for c in identity:
        answer = c.turns[-1].content
        assert answer.startswith(f"I'm {card.name}. I am ")
        assert f"{card.name} is" not in answer
    if card.name == "Wick":
        assert "I have watched every stream and remember the regulars." in answer
    else:
        assert "I live on the deck" in answer


def test_each_lorebook_fact_is_told_when_asked(card):
    conversations = card_conversations(card)
    for entry in card.lorebook.entries:
        told = by_source(conversations, f"card:lore {entry.name}")
        assert len(told) == len(LORE_QUESTIONS), entry.name
        answers = {c.turns[-1].content for c in told}
        assert len(answers) == 1
        (answer,) = answers
        assert f"{card.name} " not in answer and "{{" not in answer
        keys = {k.casefold() for k in entry.keys}
        assert all(any(k in c.turns[0].content.casefold() for k in keys) for c in told)
    lore = {c.source: c.turns[-1].content for c in by_source(conversations, "card:lore ")}
    if card.name == "Wick":
        assert (
            lore["card:lore the lantern"]
            == "The lantern is my home: dented brass, with a glass door I shut when I sulk."
        )
        assert lore["card:lore storm"] == "I fear storms: rain through a window once nearly put me out."
    else:
        assert lore["card:lore cats"].startswith("I am afraid of cats")


def test_personality_is_listed_in_the_first_person(card):
    personality = by_source(card_conversations(card), "card:personality")
    assert [c.turns[0].content for c in personality] == list(PERSONALITY_QUESTIONS)
    assert all(c.turns[-1].content.startswith("I'm ") for c in personality)


def test_conversations_are_deterministic(card):
    assert card_conversations(card) == card_conversations(card)


def test_a_card_with_only_a_name_yields_identity_examples():
    conversations = card_conversations(Card(name="Pip"))
    assert [c.source for c in conversations] == ["card:identity"] * len(IDENTITY_QUESTIONS)
    assert all(c.turns[-1] == Turn("assistant", "", "I'm Pip.") for c in conversations)


def test_example_blocks_keep_continuations_other_speakers_and_end_with_the_character():
    card = Card(
        name="Pip",
        mes_example=(
            "<START>\n{{user}}: hi\n{{char}}: Hello\nand welcome\nBo: me too?\n{{char}}: You too, Bo."
            "\n{{user}}: bye"
            "\n<START>\n{{char}}: I talk first\n{{user}}: ok"
            "\n<START>\nno speakers here at all"
        ),
    )
    (example,) = [c for c in card_conversations(card) if c.source.startswith("card:example")]
    assert example.source == "card:example 1"
    viewer = example.turns[0].name
    assert viewer in VIEWERS
    assert example.turns == (
        Turn("user", viewer, "hi"),
        Turn("assistant", "", "Hello\nand welcome"),
        Turn("user", "Bo", "me too?"),
        Turn("assistant", "", "You too, Bo."),
    )


def test_disabled_and_regex_lore_entries_are_not_taught():
    book = Lorebook(
        entries=(
            LoreEntry(keys=("moon",), content="{{char}} loves the moon.", name="moon"),
            LoreEntry(keys=("sun",), content="{{char}} hides from the sun.", enabled=False, name="sun"),
            LoreEntry(keys=("st.rs",), content="{{char}} counts stars.", use_regex=True, name="stars"),
            LoreEntry(keys=(), content="{{char}} has no key.", name="keyless"),
        )
    )
    conversations = card_conversations(Card(name="Pip", lorebook=book))
    lore = by_source(conversations, "card:lore ")
    assert {c.source for c in lore} == {"card:lore moon"}
    assert {c.turns[-1].content for c in lore} == {"I love the moon."}
    assert [c.turns[0].content for c in lore] == [
        "Tell me about the moon.",
        "What's the deal with the moon?",
        "The moon?",
    ]
