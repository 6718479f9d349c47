"""The data-quality step (models/quality.py): the message classifier on a labelled list, the across-example rules
(copy-paste spam, one person's flood), the dataset builder's counts, and a retrain refused before training when the
log is mostly junk."""

from __future__ import annotations

import itertools
import json
import random
import string

import pytest

from bot.store import ConversationLog, MessageRecord, Store
from cogs.admin.service import ModelService
from cogs.common.actor import Actor
from cogs.privacy.service import PrivacyService
from models.dataset import DatasetLimits, build_dataset
from models.persona import Card
from models.quality import (
    GIBBERISH,
    NO_WORDS,
    OVER_SHARE,
    REPEATED,
    Candidate,
    QualityLimits,
    classify,
    describe,
    held,
    normalise,
    select,
)
from tests.retrain_support import SwapRecorder, chat_exchange, fake_loader, retrain_config

# Ordinary chat: short, slangy, emoji, Twitch emotes, numbers, many languages and scripts. None may be dropped.
# (Known limit, not listed: a sentence without a single vowel, like the Czech tongue twister "Strč prst skrz
# krk", reads as consonant soup.)
ORDINARY = [
    "lol", "gg", "hi wick!", "what's up?", "ok 👍", "¿Cómo estás?", "今日はいい天気", "brb", "smh", "tbh idk",
    "lmao 😂😂😂", "gg wp", "gl hf", "ty!", "np", "omg yes", "nooooooo", "hahaha", "jajajaja", "kkkkkkk", "xD",
    ":P hi", "idk ¯\\_(ツ)_/¯", "^_^ thanks", "good morning everyone", "Wick, what's your favourite colour?",
    "can you tell me a story about dragons?", "I'm sooo tired today", "rip", "PogChamp that was insane", "KEKW",
    "monkaS", "thx m8", "c u l8r", "wanna play later?", "Bonjour, ça va ?", "Guten Morgen! Wie geht's?",
    "Das ist ja schnell", "Ich habe Angstschweiß", "Привет, как дела?", "Ciao, come stai?", "Olá, tudo bem?",
    "Hej! Hur mår du?", "Cześć, jak się masz?", "Jak se máš?", "Merhaba, nasılsın?", "Xin chào, bạn khỏe không?",
    "안녕하세요", "你好，你今天怎么样？", "नमस्ते, आप कैसे हैं?", "مرحبا، كيف حالك؟", "السَّلَامُ عَلَيْكُمْ",
    "שלום, מה שלומך?", "Γεια σου, τι κάνεις;", "สวัสดีครับ", "ありがとう！", "ㅋㅋㅋㅋㅋ", "555555 ขำมาก",
    "ngl that's kinda sus", "fr fr no cap", "bruh", "sheesh 🔥🔥", "ur so qt", "hmmmm", "pls help",
    "nvm figured it out", "wtf was that", "lmfao", "kthxbye", "meet at 5pm?", "12:30 ok?", "I got 3rd place!!!",
    "ps5 or pc?", "1v1 me", "that's a 10/10 meme", "r2d2 is the best droid", "❤️ love you wick",
    "good night 🌙", "wait... what?!", "no!!!!!!!!!!!!!!!!", "Can you recommend a book? I loved [link]",
    "@Ann you there?", "strengths and weaknesses", "rhythm game anyone?", "twelfths", "Schmetterling", "Tschüss!",
    "psst", "grrr", "ok ok ok", "AAAAAAH", "w", "F", "ptdr", "👨‍👩‍👧 family day!", "𝓗𝓮𝓵𝓵𝓸 𝔀𝓲𝓬𝓴", "ｈｅｌｌｏ",
    "f*ck yeah", "c++ or rust?", "It costs $15 per month", "Room 101 is on the 2nd floor", "KEKW KEKW KEKW",
    "Hey Wick, long time no see! How have you been? I missed our chats.",
    "My cat just knocked my coffee over the keyboard, great start to the day",
    "Je pense que c'est une excellente idée, on devrait essayer demain.",
    "Мне очень нравится эта игра, особенно музыка.", "我觉得这个游戏很好玩，推荐给大家。",
]  # fmt: skip

_rng = random.Random(2024)  # junk drawn at random, the same every run


def _random(alphabet: str, lengths: tuple[int, int]) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(_rng.randint(*lengths)))


NO_WORD_JUNK = [
    "???", "!!!!!!", "...", "👍", "😂😂😂😂", "🔥🔥🔥🔥🔥", "12345", "2024", "100%", "<3", ":)", ":-(",
    "(╯°□°)╯︵ ┻━┻", "\u200b\u200b\u200b", "⣿⣿⣿⣿⣿⣿", "╔══╗", "$$$$", "#@!%&*", "+1", "[link]", "---", "♥♥♥",
    "111111111111111",
]  # fmt: skip
GIBBERISH_JUNK = [
    # keyboard mashing
    "asdkjh qwpeoi zxmcnv", "asdfghjkl", "asdfasdfasdf", "qwertyuiop", "jkljkljkl", "sdfsdfsdf", "ajsdhfkajshdf",
    "fjdksla;fjdksla", "zxcvbnm", "lkjhgfdsa", "poiuytrewq", "qwpoeiruty", "dkfjgh dkfjgh", "bnmbnmbnm",
    "wqrtpsdfg", "ghjghjghj", "mnbvcxz", "qazwsxedc", "wsxedcrfv", "sdkfj sldkfj sldkfj", "rtyrtyrty",
    # runs of one character, repeats
    "aaaaaaaaaaaaaaaaaaaa", "zzzzzzzzzzzzzzzzzzz", "hhhhhhhhhhhhhhhhhh", "asdasdasdasdasdasdasdasdasd",
    "abababababababababababab", "spam spam spam spam spam spam spam spam spam", "LUL LUL LUL LUL LUL LUL LUL LUL",
    # random characters
    "x9$kq!!z", "k3j9q2x7", "Zq8@Lm2!vX", "a!b@c#d$", "hJkLqWe", "xkcd zqwv",
    # odd Unicode: "zalgo", hidden characters, a direction override, scripts mixed inside a word
    "Z̷̢̛̘͇̫̀͂a̸̛̰͖̠̓l̴̝̈́g̵̨͎̈́o̶̡̟̿", "h\u200be\u200bl\u200bl\u200bo", "\u202eolleh", "ꝏᚠꙮЖ",
    *(_random(string.ascii_letters + string.digits + string.punctuation, (6, 14)) for _ in range(25)),
    *(_random(string.ascii_lowercase, (6, 14)) for _ in range(15)),
    *(" ".join(_random(string.ascii_lowercase, (4, 8)) for _ in range(3)) for _ in range(10)),
]  # fmt: skip
JUNK = NO_WORD_JUNK + GIBBERISH_JUNK


def test_no_ordinary_message_is_dropped_and_nearly_all_junk_is():
    assert len(ORDINARY) >= 60 and len(JUNK) >= 60
    assert [(text, classify(text)) for text in ORDINARY if classify(text)] == []
    assert [text for text in NO_WORD_JUNK if classify(text) != NO_WORDS] == []
    caught = [text for text in JUNK if classify(text)]
    missed = [text for text in JUNK if not classify(text)]
    print(
        f"ordinary kept {len(ORDINARY)}/{len(ORDINARY)}; junk dropped {len(caught)}/{len(JUNK)}; missed {missed}"
    )
    assert len(caught) >= 0.9 * len(JUNK), missed
    assert all(classify(text) == GIBBERISH for text in GIBBERISH_JUNK if text in caught)


def test_normalise_collapses_case_punctuation_digits_and_stretching():
    assert normalise("FREE nitro!!! at [link] 1234") == normalise("free   Nitro at [link] - 98") != ""
    assert normalise("soooo good") == normalise("Sooooooo GOOD!")
    assert normalise("hi") != normalise("hello")


def test_describe_names_reasons_with_a_count():
    assert describe({NO_WORDS: 3, GIBBERISH: 0, REPEATED: 2, OVER_SHARE: 1}) == (
        "3 with no words, 2 repeated spam, 1 over one person's share"
    )
    assert describe({}) == ""


def test_held_is_a_truthy_held_key_when_there_is_one():
    assert held({"held": 1}) and not held({"held": 0}) and not held({"rating": None})


# ------------------------------------------------------------------------------------------- across examples
def spelt(n: int) -> str:
    """136 -> "one three six": a number that stays in the text the quality step compares (it drops digits)."""
    return " ".join(("zero one two three four five six seven eight nine".split())[int(d)] for d in str(n))


def candidates(people: dict[str, int], *, per_conversation: int = 3) -> list[Candidate]:
    """`people[name]` ordinary, all-different examples each, `per_conversation` to a conversation."""
    out, n = [], itertools.count()
    for name, count in people.items():
        for k in range(count):
            i = next(n)
            question, answer = chat_exchange(i % 72)
            out.append(Candidate(person=("discord", name), conversation=f"{name}:{k // per_conversation}",
                                 prompt=f"{question} Question {spelt(i)}.", reply=f"{answer} Answer {spelt(i)}."))  # fmt: skip
    return out


def test_copy_paste_spam_keeps_two_per_message_from_different_people():
    spam = [Candidate(("twitch", f"u{i % 4}"), f"c{i}", f"FREE NITRO at [link] code {i}!!", f"Reply number {w}")
            for i, w in zip(range(12), ("one two three four five six seven eight nine ten eleven twelve").split(),
                            strict=True)]  # fmt: skip
    kept, dropped = select(spam, QualityLimits())
    assert len(kept) == 2 and dropped == {REPEATED: 10}
    assert spam[kept[0]].person != spam[kept[1]].person
    # The same reply to many different messages: two kept.
    canned = [Candidate(("twitch", f"u{i}"), f"c{i}", chat_exchange(i)[0], "I'm not sure what you mean!")
              for i in range(6)]  # fmt: skip
    kept, dropped = select(canned, QualityLimits())
    assert len(kept) == 2 and dropped == {REPEATED: 4}


def test_one_persons_flood_is_capped_to_a_varied_sample():
    crowd = candidates({f"p{i}": 5 for i in range(20)} | {"flooder": 60})
    kept, dropped = select(crowd, QualityLimits(max_share_per_person=0.2))
    flooder = [crowd[i] for i in kept if crowd[i].person == ("discord", "flooder")]
    # The largest cap within 20% of what stays: c <= 0.2 * (100 + c), so 25.
    assert len(flooder) == 25 and dropped == {OVER_SHARE: 35} and len(kept) == 125
    assert len({c.conversation for c in flooder}) == 20  # every one of the flooder's conversations is sampled
    assert select(crowd, QualityLimits(max_share_per_person=0.2)) == (kept, dropped)  # deterministic
    assert select(crowd, QualityLimits(max_share_per_person=1.0))[1] == {}


def test_few_people_still_keep_a_few_examples_each():
    kept, dropped = select(candidates({"a": 30, "b": 3}), QualityLimits(max_share_per_person=0.2))
    assert dropped == {OVER_SHARE: 25} and len(kept) == 8  # 5 of a's, all 3 of b's
    kept, dropped = select(candidates({"alone": 100}), QualityLimits(max_share_per_person=0.2))
    assert len(kept) == 5 and dropped == {OVER_SHARE: 95}


# ------------------------------------------------------------------------------------------- the dataset builder
_ids = itertools.count(1)


def exchange(conversation, person, question, answer, **reply):
    """A user message and the character's reply, as log rows."""
    i, j = next(_ids), next(_ids)
    base = {
        "platform": "discord",
        "conversation_id": conversation,
        "reply_to_platform_id": None,
        "rating": None,
    }
    return [
        {**base, "id": i, "platform_message_id": f"m{i}", "author_id": person, "author_name": person.title(),
         "role": "user", "content": question, "created_at": float(i)},
        {**base, "id": j, "platform_message_id": f"m{j}", "author_id": "familiar", "author_name": "Wick",
         "role": "assistant", "content": answer, "created_at": float(j), **reply},
    ]  # fmt: skip


def good_log(people: int = 12) -> list[dict]:
    """Ordinary, varied chat: each person a few exchanges with the character, in two conversations."""
    rows, n = [], itertools.count()
    for p in range(people):
        for k in range(3 + p % 4):
            i = next(n)
            rows += exchange(
                f"c{p}-{k % 2}", f"person{p}", ORDINARY[i % len(ORDINARY)], chat_exchange(i % 72)[1]
            )
    return rows


def garbage_log() -> list[dict]:
    """The incident: a couple of hundred junk lines from several consenting users, a little real chat between."""
    rows = []
    for i, junk in enumerate(JUNK * 2):
        rows += exchange(f"j{i % 30}", f"troll{i % 5}", junk, f"Hm? I am not sure what you mean, friend {i}.")
    for i in range(30):
        rows += exchange(
            f"j{i}", f"troll{i % 5}", "Click here for FREE NITRO [link] !!!", chat_exchange(i)[1]
        )
    for i in range(30):
        rows += exchange(f"g{i}", f"fan{i % 6}", chat_exchange(i)[0], chat_exchange(i + 30)[1])
    return rows


def dataset_of(rows, **quality):
    limits = DatasetLimits(eval_fraction=0.2, quality=QualityLimits(**quality))
    return build_dataset(rows, card=Card(name="Wick"), allowed=lambda p, u, t: True, limits=limits)


def test_good_log_loses_nothing():
    ds = dataset_of(good_log())
    assert ds.stats.candidates == ds.stats.examples == ds.size > 50
    assert sum(ds.stats.quality_dropped.values()) == 0


def test_garbage_log_is_mostly_dropped_with_reasons_counted():
    ds = dataset_of(garbage_log())
    s = ds.stats
    assert s.candidates > 200 and s.examples < 0.5 * s.candidates
    assert (
        s.dropped_no_words >= 2 * len(NO_WORD_JUNK) and s.dropped_gibberish > 100 and s.dropped_repeated >= 28
    )
    assert s.candidates - s.examples == sum(s.quality_dropped.values())
    texts = " ".join(m["content"] for e in ds.train + ds.eval for m in e["messages"])
    assert "asdkjh" not in texts and "x9$kq" not in texts and texts.count("FREE NITRO") <= 2


def test_held_replies_are_neither_targets_nor_context():
    rows = [
        *exchange("c1", "ann", "tell me a secret", "A reply the moderation step held", held=1),
        *exchange("c1", "ann", "and a story?", "Once upon a time, a candle.", held=0),
    ]
    ds = dataset_of(rows)
    assert ds.stats.excluded_held == 1 and ds.size == 1
    assert "held" not in " ".join(m["content"] for e in ds.train + ds.eval for m in e["messages"])


# ------------------------------------------------------------------------------------------- the retrain
ADMIN = Actor("console", "local", "Admin", is_admin=True)


async def log_rows(store: Store, rows: list[dict]) -> None:
    log = ConversationLog(store)
    for row in rows:
        await log.log(MessageRecord(platform="console", channel_id="l", conversation_id=row["conversation_id"],
                                    author_id=row["author_id"], author_name=row["author_name"], role=row["role"],
                                    content=row["content"]))  # fmt: skip
    await store.flush()


@pytest.fixture
async def retrain(tmp_path):
    """retrain(rows) -> the result of an admin's retrain on a log of those rows (fake training worker)."""
    config = retrain_config(tmp_path)
    async with await Store.open(config.database_path) as store:
        service = ModelService(config=config, store=store, privacy=PrivacyService(store=store, config=config.privacy),
                               card=Card(name="Wick"), backend=SwapRecorder(), loader=fake_loader)  # fmt: skip

        async def run(rows):
            await log_rows(store, rows)
            return service, await service.retrain(ADMIN)

        yield run


async def test_retrain_on_a_garbage_log_is_refused_naming_the_reasons(retrain):
    service, result = await retrain(garbage_log())
    assert result.status == "refused", result.message
    assert result.message.startswith(
        "Not training: "
    ) and "candidate examples were dropped by the data-quality" in (result.message)
    for reason in ("with no words", "gibberish", "repeated spam"):
        assert reason in result.message
    stats = result.metrics["dataset"]
    assert stats["dropped_gibberish"] > 100 and stats["candidates"] > 200
    assert f"{stats['candidates'] - stats['examples']} of {stats['candidates']}" in result.message
    assert service.registry.versions() == [] and not (service._config.data_dir / "training").exists()


async def test_retrain_on_one_persons_flood_alone_is_refused(retrain):
    rows = [row for i in range(60) for row in exchange(f"c{i // 3}", "flooder", *chat_exchange(i))]
    _, result = await retrain(rows)
    assert result.status == "refused" and "55 over one person's share" in result.message, result.message


async def test_retrain_on_a_flood_among_ordinary_chat_trains_on_the_capped_log(retrain, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINING_SCENARIO", "improve")
    rows = good_log(20)
    rows += [row for i in range(40) for row in exchange(f"f{i // 4}", "flooder", *chat_exchange(i + 20))]
    service, result = await retrain(rows)
    assert result.ok, result.message  # trained (whatever the gate said)
    (job_dir,) = (service._config.data_dir / "training").iterdir()
    stats = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))["dataset"]["stats"]
    assert (
        stats["dropped_over_share"] == 18 and stats["examples"] == stats["candidates"] - 18
    )  # c <= 0.2*(90+c)
