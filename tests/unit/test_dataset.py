"""The dataset rules: who may be learnt from, what is left out, scrubbing, dedupe and the split."""

from __future__ import annotations

import itertools
import json

import pytest

from models.dataset import DatasetLimits, build_dataset, is_eval_conversation
from models.persona import Card
from models.scrub import scrub

CARD = Card(name="Wick", description="A candle spirit.")
_ids = itertools.count(1)


def row(
    conv,
    role,
    author,
    content,
    *,
    platform="discord",
    pid=None,
    reply_to=None,
    rating=None,
    name=None,
    t=None,
):
    i = next(_ids)
    return {
        "id": i,
        "platform": platform,
        "conversation_id": conv,
        "platform_message_id": pid,
        "author_id": author,
        "author_name": name or author.title(),
        "role": role,
        "content": content,
        "reply_to_platform_id": reply_to,
        "created_at": float(t if t is not None else i),
        "rating": rating,
    }


def exchange(conv, author, question, answer, **kw):
    q = f"q{next(_ids)}"
    return [
        row(conv, "user", author, question, pid=q),
        row(conv, "assistant", "familiar", answer, pid=f"a{next(_ids)}", reply_to=q, name="Wick", **kw),
    ]


def allowed_only(*people):
    return lambda platform, user, created_at: user in people


def texts(dataset):
    return [m["content"] for e in (*dataset.train, *dataset.eval) for m in e["messages"]]


def test_examples_have_system_context_and_reply():
    rows = exchange("c1", "ann", "hello wick", "Hello Ann, nice glow today!")
    ds = build_dataset(rows, card=CARD, allowed=allowed_only("ann"), limits=DatasetLimits(eval_fraction=0.01))
    (example,) = ds.train + ds.eval
    roles = [m["role"] for m in example["messages"]]
    assert roles[0] == "system" and "Wick" in example["messages"][0]["content"]
    assert roles[-2:] == ["user", "assistant"]
    assert example["messages"][-2]["content"] == "Ann: hello wick"
    assert example["messages"][-1]["content"] == "Hello Ann, nice glow today!"


def test_non_consenting_user_excluded_as_context_and_target():
    rows = [
        *exchange("c1", "ann", "ann asks something", "answer to ann"),
        *exchange("c1", "bob", "bob secret words", "answer to bob"),
        *exchange("c1", "ann", "ann again", "second answer to ann"),
    ]
    ds = build_dataset(rows, card=CARD, allowed=allowed_only("ann"), limits=DatasetLimits(eval_fraction=0.01))
    all_text = " ".join(texts(ds))
    assert "bob secret words" not in all_text
    assert "answer to bob" not in all_text  # the reply to bob is neither a target nor context
    assert [e["messages"][-1]["content"] for e in ds.train + ds.eval] == [
        "answer to ann",
        "second answer to ann",
    ]
    assert ds.stats.excluded_no_consent == 1


def test_forgotten_and_deleted_messages_leave_no_trace():
    # "Forget" deletes the rows: what remains is a reply whose question is gone from the log.
    rows = exchange("c1", "ann", "question that was deleted", "reply to a deleted message")
    rows = [r for r in rows if r["role"] == "assistant"]
    ds = build_dataset(
        rows, card=CARD, allowed=lambda p, u, t: True, limits=DatasetLimits(eval_fraction=0.01)
    )
    assert ds.size == 0
    # A user message deleted while later ones stay: the reply that answered it goes too.
    a = exchange("c2", "ann", "kept question", "kept answer")
    b = exchange("c2", "ann", "deleted question", "answer to deleted")
    ds = build_dataset(
        [*a, b[1]], card=CARD, allowed=lambda p, u, t: True, limits=DatasetLimits(eval_fraction=0.01)
    )
    assert [e["messages"][-1]["content"] for e in ds.train + ds.eval] == ["kept answer"]
    assert ds.stats.excluded_deleted == 1


def test_downvoted_replies_excluded_upvoted_kept():
    rows = [
        *exchange("c1", "ann", "one", "a bad reply", rating=-1),
        *exchange("c1", "ann", "two", "a good reply", rating=1),
    ]
    ds = build_dataset(
        rows, card=CARD, allowed=lambda p, u, t: True, limits=DatasetLimits(eval_fraction=0.01)
    )
    assert "a bad reply" not in " ".join(texts(ds))
    assert [e["messages"][-1]["content"] for e in ds.train + ds.eval] == ["a good reply"]


def test_duplicates_removed():
    rows = [*exchange("c1", "ann", "hi", "Hello!"), *exchange("c2", "ann", "HI ", "hello!")]
    ds = build_dataset(
        rows, card=CARD, allowed=lambda p, u, t: True, limits=DatasetLimits(eval_fraction=0.01)
    )
    assert ds.size == 1 and ds.stats.duplicates == 1


def test_reset_marker_cuts_context_and_long_replies_dropped():
    rows = [
        *exchange("c1", "ann", "before reset", "old answer"),
        row("c1", "system", "familiar", "[conversation reset]"),
        *exchange("c1", "ann", "after reset", "x" * 2000),
        *exchange("c1", "ann", "short", "fine answer"),
    ]
    ds = build_dataset(
        rows, card=CARD, allowed=lambda p, u, t: True, limits=DatasetLimits(eval_fraction=0.01)
    )
    last = (ds.train + ds.eval)[-1]["messages"]
    assert all("before reset" not in m["content"] for m in last)
    assert ds.stats.excluded_length == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+x@example.co.uk now", "mail me at [email] now"),
        ("call +1 (555) 123-4567 today", "call [phone] today"),
        ("see https://example.com/a?b=1 and www.foo.org", "see [link] and [link]"),
        ("join discord.gg/abc123 please", "join [invite] please"),
        ("token sk-abcdefghijklmnop1234 here", "token [secret] here"),
        ("MTA2NzY5ODk0NzQ3ODQ1NjQ1Ng.GhT3xY.abcdefghijklmnopqrstuvwxyz1234", "[secret]"),
        ("hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "hash [secret]"),
        ("hi <@123456789> and <@!987654321>", "hi @Ann and @someone"),
        ("the year 2024 and 42 cats", "the year 2024 and 42 cats"),
    ],
)
def test_scrub(text, expected):
    assert scrub(text, {"123456789": "Ann"}) == expected


def test_scrub_applies_in_dataset_with_consenting_names_only():
    rows = [
        row(
            "c1", "user", "bob", "I am bob"
        ),  # bob does not consent: his name must not leak through a mention
        *exchange("c1", "ann", "ask <@bob> or mail a@b.io", "sure, <@ann>!"),
    ]
    rows[0]["author_id"] = "111111"
    rows[1]["author_id"] = "222222"
    rows[1]["content"] = "ask <@111111> or mail a@b.io"
    rows[2]["content"] = "sure, <@222222>!"
    ds = build_dataset(
        rows, card=CARD, allowed=allowed_only("222222"), limits=DatasetLimits(eval_fraction=0.01)
    )
    msgs = (ds.train + ds.eval)[0]["messages"]
    assert msgs[-2]["content"] == "Ann: ask @someone or mail [email]"
    assert msgs[-1]["content"] == "sure, @Ann!"


def test_split_is_deterministic_and_by_conversation():
    rows = []
    for c in range(40):
        for k in range(3):
            rows += exchange(f"conv-{c}", "ann", f"question {c}-{k}", f"answer {c}-{k}")
    limits = DatasetLimits(eval_fraction=0.2, quality=None)  # templated: the quality step would drop most
    a = build_dataset(rows, card=CARD, allowed=lambda p, u, t: True, limits=limits)
    b = build_dataset(list(reversed(rows)), card=CARD, allowed=lambda p, u, t: True, limits=limits)
    assert a.lines("train") == b.lines("train") and a.lines("eval") == b.lines("eval")
    assert a.sha256 == b.sha256
    assert a.eval and a.train

    def convs(examples):
        return {e["messages"][-1]["content"].split()[1].split("-")[0] for e in examples}

    assert not convs(a.train) & convs(a.eval)  # no conversation on both sides
    for c in convs(a.eval):
        assert is_eval_conversation(f"conv-{c}", 0.2)


def test_small_corpus_still_gets_one_eval_conversation(tmp_path):
    rows = [
        *exchange("a", "ann", "q1", "r1"),
        *exchange("b", "ann", "q2", "r2"),
        *exchange("c", "ann", "q3", "r3"),
    ]
    limits = DatasetLimits(eval_fraction=0.01, quality=None)  # "q1", "q2", "q3": one prompt to it
    ds = build_dataset(rows, card=CARD, allowed=lambda p, u, t: True, limits=limits)
    assert len(ds.eval) == 1 and len(ds.train) == 2
    out = tmp_path / "all.jsonl"
    ds.write(out)
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all("messages" in json.loads(line) for line in lines)
