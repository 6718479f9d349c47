"""What a tune learns from: consent on teachings, the character's files (refused by name), the checks."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bot.config import EXAMPLE_CONFIG, load_config
from cogs.admin.tuning_data import character_data, persona_payload, taught_replies
from cogs.common.prompting import prompt_budget
from cogs.teach.service import ContextTurn, Teaching
from models.persona import default_card_path, load_card
from models.persona.checks import ChecksError, PersonaCheck, checks_path_for, derive_checks, load_checks
from models.prompt import PromptBudget, Turn
from models.tuning.builder import TaughtReply
from models.tuning.dialogue import DialogueError, dialogue_files_for
from models.tuning.persona_eval import check_prompts


def turn(role: str, who: str, content: str) -> ContextTurn:
    return ContextTurn(
        role=role, author_id=who if role == "user" else "familiar", name=who.title(), content=content
    )


def teaching(
    *context: ContextTurn, taught: str = "A lamp? I'm a flame.", created_at: float = 500.0
) -> Teaching:
    return Teaching(
        id=1,
        platform="discord",
        conversation_id="discord:1",
        context=context,
        original="Yes, a lamp.",
        taught=taught,
        teacher_id="m1",
        teacher_name="Mo",
        created_at=created_at,
    )


def allow_all_but(*refused: str):
    calls = []

    def allowed(platform: str, user_id: str, created_at: float) -> bool:
        calls.append((platform, user_id, created_at))
        return user_id not in refused

    return allowed, calls


# ---------------------------------------------------------------------------------------------------- consent
def test_a_teaching_with_consenting_speakers_keeps_its_whole_context():
    allowed, calls = allow_all_but()
    taught = taught_replies(
        [
            teaching(
                turn("user", "ann", "hi"),
                turn("assistant", "wick", "Hello, Ann!"),
                turn("user", "ann", "lamp?"),
            )
        ],
        allowed,
    )
    assert taught == [
        TaughtReply(
            context=(
                Turn("user", "Ann", "hi"),
                Turn("assistant", "", "Hello, Ann!"),
                Turn("user", "Ann", "lamp?"),
            ),
            reply="A lamp? I'm a flame.",
        )
    ]
    assert set(calls) == {("discord", "ann", 500.0)}  # consent at the time of the teaching


def test_a_non_consenting_earlier_speaker_is_dropped_from_the_context():
    allowed, _ = allow_all_but("bob")
    (taught,) = taught_replies(
        [teaching(turn("user", "bob", "my phone number is 555"), turn("user", "ann", "are you a lamp?"))],
        allowed,
    )
    assert taught.context == (Turn("user", "Ann", "are you a lamp?"),)
    assert all("555" not in t.content for t in taught.context)


def test_a_teaching_whose_answered_viewer_did_not_consent_is_left_out():
    allowed, _ = allow_all_but("ann")
    ctx = (
        turn("user", "bob", "hi"),
        turn("assistant", "wick", "Hi, Bob."),
        turn("user", "ann", "are you a lamp?"),
    )
    assert taught_replies([teaching(*ctx)], allowed) == []
    consenting = teaching(turn("user", "bob", "are you a lamp?"), taught="A flame, Bob.")
    assert [t.reply for t in taught_replies([teaching(*ctx), consenting], allowed)] == ["A flame, Bob."]


def test_a_teaching_without_a_user_turn_is_left_out():
    allowed, _ = allow_all_but()
    assert taught_replies([teaching()], allowed) == []
    assert taught_replies([teaching(turn("assistant", "wick", "*flares*"))], allowed) == []


# ---------------------------------------------------------------------------------------------------- files
@pytest.fixture
def config(tmp_path):
    base = load_config(EXAMPLE_CONFIG)
    return dataclasses.replace(base, bot=dataclasses.replace(base.bot, data_dir=str(tmp_path / "data")))


def with_training(config, **changes):
    return dataclasses.replace(config, training=dataclasses.replace(config.training, **changes))


@pytest.fixture(scope="module")
def card():
    return load_card(default_card_path())


def test_character_data_reads_the_cards_files(config, card):
    data = character_data(config, card)
    assert list(data.dialogue_files) == dialogue_files_for(default_card_path())
    assert len(data.dialogue) >= 400
    assert data.card_derived and all(c.source.startswith("card:") for c in data.card_derived)
    assert data.checks_file == checks_path_for(default_card_path())
    hand = load_checks(data.checks_file)
    assert list(data.checks) == [*hand, *derive_checks(card)]
    assert character_data(with_training(config, learn_from_card=False), card).card_derived == ()


def test_named_dialogue_files_are_added_once(config, card, tmp_path):
    extra = tmp_path / "more.jsonl"
    hello = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    extra.write_text(json.dumps({"messages": hello}) + "\n", encoding="utf-8")
    data = character_data(with_training(config, dialogue_files=(str(extra), str(extra))), card)
    assert list(data.dialogue_files) == [*dialogue_files_for(default_card_path()), extra]
    assert data.dialogue[-1].source == f"{extra}:1"


def test_a_broken_dialogue_file_in_the_config_is_refused_by_name(config, card, tmp_path):
    broken = tmp_path / "broken.dialogue.jsonl"
    good = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hey."}]}
    )
    broken.write_text(good + "\n" + '{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(DialogueError) as caught:
        character_data(with_training(config, dialogue_files=(str(broken),)), card)
    assert str(caught.value).startswith(f"{broken}:2")


def test_a_broken_checks_file_in_the_config_is_refused_by_name(config, card, tmp_path):
    broken = tmp_path / "mine.persona_checks.json"
    broken.write_text('{"checks": [{"question": "who?", "expect": [[]]}]}', encoding="utf-8")
    with pytest.raises(ChecksError) as caught:
        character_data(with_training(config, persona_checks=str(broken)), card)
    assert str(caught.value).startswith(f"{broken}: check 1")


# ---------------------------------------------------------------------------------------------------- checks
def test_persona_payload_gives_each_check_the_served_messages(config, card):
    checks = (
        PersonaCheck(question="Who are you?", expect=(("wick",),), forbid=("zoe",), about="name"),
        *derive_checks(card)[:3],
    )
    payload = persona_payload(config, card, checks)
    prompts = check_prompts(card, checks, budget=prompt_budget(config.prompt))
    assert len(payload) == len(checks)
    for item, check, messages in zip(payload, checks, prompts, strict=True):
        assert item == {**dataclasses.asdict(check), "messages": messages}
        assert item["messages"][0]["role"] == "system"
        assert item["messages"][0]["content"].startswith("You are Wick.")
        assert item["messages"][-1]["role"] == "user"
        assert item["messages"][-1]["content"].endswith(f": {check.question}")
    assert payload[0]["expect"] == (("wick",),) and payload[0]["forbid"] == ("zoe",)
    json.dumps(payload)  # the worker gets it as JSON


def test_persona_payload_follows_the_prompt_config(config, card):
    small = dataclasses.replace(config, prompt=dataclasses.replace(config.prompt, example_tokens=0))
    check = PersonaCheck(question="Who are you?", expect=(("wick",),))
    (item,) = persona_payload(small, card, (check,))
    assert "Examples of how Wick talks" not in item["messages"][0]["content"]
    (full,) = persona_payload(config, card, (check,))
    assert "Examples of how Wick talks" in full["messages"][0]["content"]
    assert prompt_budget(small.prompt) == PromptBudget(
        total_tokens=config.prompt.context_tokens,
        reserve_for_reply=config.prompt.reply_reserve_tokens,
        examples_max_tokens=0,
        persona_user=config.prompt.persona_user,
    )
