"""The tune dataset: examples rendered as served, the held-out split, the weights, the log's part."""

from __future__ import annotations

import json

import pytest

from models.dataset import Dataset, DatasetStats, approx_tokens
from models.persona import default_card_path, load_card
from models.prompt import PromptBudget, Turn, build_messages
from models.tuning.builder import (
    DEFAULT_BUDGET,
    LIKED_WEIGHT,
    MAX_CONTEXT_TURNS,
    TEACHING_WEIGHT,
    TaughtReply,
    build_tune_dataset,
    conversation_examples,
    is_held_out,
)
from models.tuning.dialogue import Conversation


@pytest.fixture(scope="module")
def card():
    return load_card(default_card_path())


def u(name: str, content: str) -> Turn:
    return Turn(role="user", name=name, content=content)


def a(content: str) -> Turn:
    return Turn(role="assistant", name="", content=content)


def conversation(i: int, *, source: str = "test") -> Conversation:
    return Conversation(
        turns=(u("Ann", f"question number {i}?"), a(f"Answer number {i}.")), source=f"{source}:{i}"
    )


def key(example) -> str:
    return json.dumps(example, sort_keys=True, ensure_ascii=False)


# ------------------------------------------------------------------------------------------------ rendering
def test_each_example_is_the_served_prompt_plus_the_reply(card):
    turns = [u("Ann", "hi Wick"), a("Hello, Ann!"), u("Bo", "what's in the lantern?"), a("Me. Hi, Bo.")]
    first, second = conversation_examples(card, turns)
    assert first["messages"] == [
        *build_messages(card, turns[:1], user_name="Ann", count_tokens=approx_tokens, budget=DEFAULT_BUDGET),
        {"role": "assistant", "content": "Hello, Ann!"},
    ]
    served = build_messages(
        card, turns[:3], user_name="Bo", count_tokens=approx_tokens, budget=DEFAULT_BUDGET
    )
    assert second["messages"] == [*served, {"role": "assistant", "content": "Me. Hi, Bo."}]
    system = second["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are Wick.")
    assert "You are a living flame, not an AI." in system["content"]
    users = [m["content"] for m in second["messages"] if m["role"] == "user"]
    assert users == ["Ann: hi Wick", "Bo: what's in the lantern?"]
    assert second["messages"][-1] == {"role": "assistant", "content": "Me. Hi, Bo."}


def test_the_budget_and_token_counter_are_the_ones_given(card):
    turns = [u("Ann", "hi"), a("Hello!")]
    budget = PromptBudget(total_tokens=4096, examples_max_tokens=0, persona_user="")
    (example,) = conversation_examples(card, turns, count_tokens=len, budget=budget)
    served = build_messages(card, turns[:1], user_name="Ann", count_tokens=len, budget=budget)
    assert example["messages"] == [*served, {"role": "assistant", "content": "Hello!"}]
    assert "Examples of how Wick talks" not in example["messages"][0]["content"]


def test_one_example_per_character_line_that_answers_a_user_turn(card):
    turns = [
        a("*flares*"),
        u("Ann", "hi"),
        a("Hello!"),
        a("...and welcome."),
        u("Bo", "yo"),
        u("Cy", "hey"),
        a("Hi both."),
    ]
    examples = conversation_examples(card, turns)
    assert [e["messages"][-1]["content"] for e in examples] == ["Hello!", "Hi both."]
    assert examples[1]["messages"][-2] == {"role": "user", "content": "Cy: hey"}
    assert conversation_examples(card, [u("Ann", "hi")]) == []


def test_the_context_is_at_most_the_last_turns(card):
    turns = []
    for i in range(MAX_CONTEXT_TURNS):
        turns += [u("Ann", f"line {i}"), a(f"reply {i}")]
    last = conversation_examples(card, turns)[-1]["messages"]
    chat = [m for m in last[:-1] if m["role"] != "system"]
    assert len(chat) == MAX_CONTEXT_TURNS
    assert chat[-1]["content"] == f"Ann: line {MAX_CONTEXT_TURNS - 1}"
    assert all("line 0" not in m["content"] for m in chat)


# ------------------------------------------------------------------------------------------------- held out
def test_the_held_out_split_is_deterministic_and_disjoint(card):
    dialogue = [conversation(i) for i in range(80)]
    first = build_tune_dataset(card, dialogue=dialogue, pack=1)
    again = build_tune_dataset(card, dialogue=list(dialogue), pack=1)
    assert (first.train, first.eval_dialogue) == (again.train, again.eval_dialogue)
    held = [c for c in dialogue if is_held_out(c)]
    assert 0 < len(held) < 30
    assert [e["messages"][-1]["content"] for e in first.eval_dialogue] == [c.turns[-1].content for c in held]
    assert not {key(e) for e in first.train} & {key(e) for e in first.eval_dialogue}
    assert len(first.train) + len(first.eval_dialogue) == 80 == first.sources["dialogue"]
    assert first.held_out == first.eval_dialogue and first.eval_log == []
    # The choice is the conversation's text, not its place or its source.
    moved = [Conversation(c.turns, "elsewhere") for c in reversed(dialogue)]
    assert {key(e) for e in build_tune_dataset(card, dialogue=moved, pack=1).eval_dialogue} == {
        key(e) for e in first.eval_dialogue
    }


def test_with_too_few_conversations_for_the_fraction_the_last_is_held_out(card):
    kept = [c for c in (conversation(i) for i in range(40)) if not is_held_out(c)][:3]
    built = build_tune_dataset(card, dialogue=kept, pack=1)
    assert [e["messages"][-1]["content"] for e in built.eval_dialogue] == [kept[-1].turns[-1].content]
    assert [e["messages"][-1]["content"] for e in built.train] == [c.turns[-1].content for c in kept[:-1]]
    single = build_tune_dataset(card, dialogue=kept[:1], pack=1)
    assert single.eval_dialogue == [] and len(single.train) == 1


def test_card_derived_examples_are_trained_on_beside_dialogue_files(card):
    dialogue = [conversation(i) for i in range(20)]
    derived = [
        Conversation((u("Sam", "Who are you?"), a("I'm Wick.")), "card:identity"),
        Conversation((u("Mo", "Hi!"), a("Oh, Mo!")), "card:greeting 1"),
    ]
    built = build_tune_dataset(card, dialogue=dialogue, card_derived=derived, pack=1)
    assert built.sources["card"] == 2
    replies = [e["messages"][-1]["content"] for e in built.train]
    assert replies.count("I'm Wick.") == 1 and replies.count("Oh, Mo!") == 1
    assert all(e["messages"][-1]["content"] not in ("I'm Wick.", "Oh, Mo!") for e in built.eval_dialogue)


# ---------------------------------------------------------------------------------------------------- weights
def test_teachings_are_repeated_and_only_the_taught_reply_is_a_target(card):
    taught = TaughtReply(
        context=(u("Ann", "are you a lamp?"), a("Yes."), u("Ann", "really?")), reply="A lamp? I'm a flame."
    )
    built = build_tune_dataset(card, teachings=[taught])
    assert built.sources["teachings"] == 1
    assert len(built.train) == TEACHING_WEIGHT
    (example,) = {key(e) for e in built.train}
    messages = json.loads(example)["messages"]
    assert messages[-1] == {"role": "assistant", "content": "A lamp? I'm a flame."}
    assert messages[-2] == {"role": "user", "content": "Ann: really?"}
    assert {"role": "assistant", "content": "Yes."} in messages  # context, never a target of its own


def log_example(text: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are Wick."},
            {"role": "user", "content": f"Ann: {text}"},
            {"role": "assistant", "content": f"re: {text}"},
        ]
    }


def test_the_log_part_liked_examples_repeated_and_its_eval_preferred(card):
    liked, plain, held = log_example("liked"), log_example("plain"), log_example("held")
    stats = DatasetStats(rows=6, replies=3, examples=3)
    log = Dataset(train=[liked, plain], eval=[held], stats=stats, liked=[liked])
    dialogue = [conversation(i) for i in range(30)]
    built = build_tune_dataset(card, dialogue=dialogue, log=log, liked=log.liked, pack=1)
    train = [key(e) for e in built.train]
    assert train.count(key(liked)) == LIKED_WEIGHT
    assert train.count(key(plain)) == 1
    assert key(held) not in train
    assert built.eval_log == [held]
    assert built.eval_dialogue  # still built, but the log's held-out set is the one the gate needs improved
    assert built.held_out == [held]
    assert built.log_stats is stats
    assert built.sources == {"dialogue": 30, "card": 0, "teachings": 0, "log": 3, "liked": 1}
    dataset = built.as_dataset()
    assert dataset.eval == [held] and dataset.train == built.train and dataset.stats is stats
    assert built.as_dataset("eval_dialogue").eval == built.eval_dialogue


def test_summary_counts_each_source(card):
    taught = TaughtReply(context=(u("Ann", "hi"),), reply="Hello, Ann.")
    log = Dataset(train=[log_example("a")], eval=[log_example("b")], stats=DatasetStats(), liked=[])
    dialogue = [conversation(i) for i in range(30)]
    derived = [Conversation((u("Sam", "Who are you?"), a("I'm Wick.")), "card:identity")]
    built = build_tune_dataset(
        card, dialogue=dialogue, card_derived=derived, teachings=[taught], log=log, pack=1
    )
    held = len(built.eval_dialogue)
    assert built.summary() == (
        f"30 dialogue-file lines, 1 from the card, 1 teachings, 2 from the log (0 rated 👍); "
        f"held out: {held} dialogue, 1 log"
    )
    assert len(built.train) == (30 - held) + 1 + TEACHING_WEIGHT + 1
    empty = build_tune_dataset(card)
    assert empty.train == [] and empty.held_out == [] and empty.log_stats is None
    assert empty.summary().startswith("0 dialogue-file lines, 0 from the card, 0 teachings, 0 from the log")


def test_write_part_writes_jsonl(card, tmp_path):
    built = build_tune_dataset(card, dialogue=[conversation(i) for i in range(12)], pack=1)
    built.write_part("train", tmp_path / "train.jsonl")
    lines = (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == built.train
    built.write_part("eval_log", tmp_path / "eval.jsonl")
    assert (tmp_path / "eval.jsonl").read_text(encoding="utf-8") == ""


# -------------------------------------------------------------------------------------------------- packing
def test_packed_examples_learn_every_line_once_under_one_system_turn(card):
    dialogue = [conversation(i) for i in range(40)]
    built = build_tune_dataset(card, dialogue=dialogue)  # packed by default
    learnt = [m["content"] for e in built.train for m in e["messages"] if m.get("train")]
    held = {e["messages"][-1]["content"] for e in built.eval_dialogue}
    expected = {c.turns[-1].content for c in dialogue} - held
    assert sorted(learnt) == sorted(expected)  # each trained line once, none of the held-out ones
    assert len(built.train) < len(expected)  # several conversations share an example
    for example in built.train:
        messages = example["messages"]
        assert messages[0]["role"] == "system" and sum(
            m["role"] == "system" and m is messages[0] for m in messages
        )
        assert 1 <= sum(bool(m.get("train")) for m in messages) <= 4
        assert messages[-1]["role"] == "assistant" and messages[-1]["train"]
        assert all(m.get("train") for m in messages if m["role"] == "assistant")


def test_packing_is_deterministic_and_pack_one_is_one_example_per_line(card):
    dialogue = [conversation(i) for i in range(30)]
    assert (
        build_tune_dataset(card, dialogue=dialogue).train == build_tune_dataset(card, dialogue=dialogue).train
    )
    single = build_tune_dataset(card, dialogue=dialogue, pack=1)
    assert all(not any(m.get("train") for m in e["messages"]) for e in single.train)
