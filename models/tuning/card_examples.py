"""Training conversations derived from a card alone, for an owner who has a card and no dialogue files.

What a card says becomes what the character says when asked (every line in the first person, the card's facts
kept word for word where possible):

1. greetings: a viewer says hello, the character answers with ``first_mes`` or an alternate greeting;
2. example dialogues: each ``<START>`` block of ``mes_example`` as a conversation;
3. identity: asked who it is, it gives its name and the description's first sentences in the first person;
4. each lorebook fact: asked about one of its keys, it tells the fact in the first person;
5. personality and scenario: asked what it is like, it lists its traits.

The questions are phrased unlike those of the derived persona checks (``models/persona/checks.py``), so a tune
learns the facts, not the questions it is measured with.
"""

from __future__ import annotations

import random
import re

from models.persona.card import Card, apply_macros, split_examples
from models.prompt import Turn
from models.tuning.dialogue import Conversation

VIEWERS = ("Sam", "Priya", "jules_k", "Mo", "Tess", "bytebandit", "Oli", "Rin")
GREETINGS = ("Hi!", "hello there", "hey, I'm new here", "Good evening!", "yo")
IDENTITY_QUESTIONS = ("Who are you?", "What's your name?", "Tell me about yourself.", "Introduce yourself!")
LORE_QUESTIONS = ("Tell me about {key}.", "What's the deal with {key}?", "{key}?")
PERSONALITY_QUESTIONS = ("What are you like?", "Describe your personality.")
SEED = 7  # which viewer asks what: fixed, so the dataset (and its hash) is the same on every run


def card_conversations(card: Card) -> list[Conversation]:
    """Every conversation the card itself supports; empty for a card that says nothing."""
    rng = random.Random(SEED)
    char = card.char_name

    def viewer() -> str:
        return rng.choice(VIEWERS)

    def fill(text: str, user: str) -> str:
        return apply_macros(text, char=char, user=user).strip()

    out: list[Conversation] = []

    def add(source: str, *turns: Turn) -> None:
        if all(t.content for t in turns):
            out.append(Conversation(turns=turns, source=f"card:{source}"))

    # 1. Greetings.
    for number, greeting in enumerate(g for g in (card.first_mes, *card.alternate_greetings) if g.strip()):
        name = viewer()
        add(f"greeting {number + 1}", Turn("user", name, GREETINGS[number % len(GREETINGS)]),
            Turn("assistant", "", fill(greeting, name)))  # fmt: skip
    # 2. Example dialogues.
    for number, block in enumerate(split_examples(card.mes_example), 1):
        name = viewer()
        turns = _example_turns(fill(block, name), char=char, user=name)
        if turns:
            add(f"example {number}", *turns)
    # 3. Identity.
    about = first_person(fill(card.description, "User"), char)
    intro = f"I'm {char}." + (f" {_first_sentences(about, 2)}" if about else "")
    for question in IDENTITY_QUESTIONS:
        add("identity", Turn("user", viewer(), question), Turn("assistant", "", intro))
    # 4. Lorebook facts.
    if card.lorebook is not None:
        for entry in card.lorebook.entries:
            if not (entry.enabled and entry.keys and entry.content.strip()) or entry.use_regex:
                continue
            fact = first_person(fill(entry.content, "User"), char)
            for question, key in zip(LORE_QUESTIONS, _cycle(_distinct_keys(entry.keys)), strict=False):
                phrase = key if key[:1].isupper() or key.endswith("ing") else f"the {key}"
                asked = question.format(key=phrase)
                add(f"lore {entry.name or entry.keys[0]}", Turn("user", viewer(), asked[0].upper() + asked[1:]),
                    Turn("assistant", "", fact))  # fmt: skip
    # 5. Personality.
    traits = first_person(fill(card.personality, "User"), char).rstrip(".")
    if traits:
        answer = f"I'm {traits}." if not traits.lower().startswith(("i ", "i'm")) else traits + "."
        for question in PERSONALITY_QUESTIONS:
            add("personality", Turn("user", viewer(), question), Turn("assistant", "", answer))
    return out


def _distinct_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """Keys without the inflections of another ("moths" and "raining" go when "moth" and "rain" are there)."""
    folded = [k.casefold() for k in keys]
    return tuple(
        k for k, f in zip(keys, folded, strict=True) if not any(o != f and f.startswith(o) for o in folded)
    )


def _cycle(keys: tuple[str, ...]) -> list[str]:
    return [keys[i % len(keys)] for i in range(len(LORE_QUESTIONS))]


_LINE = re.compile(r"^\s*([^:\n]{1,40}):\s*(.+)$")


def _example_turns(block: str, *, char: str, user: str) -> list[Turn]:
    """``User: ...`` / ``Char: ...`` lines as turns; a block that does not end with the character is cut there."""
    turns: list[Turn] = []
    for line in block.splitlines():
        match = _LINE.match(line)
        if not match:
            if turns and line.strip():  # a continuation line of the previous speaker
                last = turns[-1]
                turns[-1] = Turn(last.role, last.name, f"{last.content}\n{line.strip()}")
            continue
        speaker, text = match.group(1).strip(), match.group(2).strip()
        if speaker.casefold() == char.casefold():
            turns.append(Turn("assistant", "", text))
        else:
            turns.append(Turn("user", speaker if speaker.casefold() != "user" else user, text))
    while turns and turns[-1].role != "assistant":
        turns.pop()
    return turns if any(t.role == "user" for t in turns) and turns[0].role == "user" else []


def _first_sentences(text: str, count: int) -> str:
    sentences = re.findall(r"[^.!?]+[.!?]+", text)
    return " ".join(s.strip() for s in sentences[:count]) if sentences else text.strip()


# ---------------------------------------------------------------------------------------- third to first person
_VERBS = {"is": "am", "was": "was", "has": "have", "does": "do", "isn't": "am not", "doesn't": "don't",
          "hasn't": "haven't", "wasn't": "wasn't", "goes": "go"}  # fmt: skip
_SUBJECT = r"(?:he|she|they)"  # not "it": in "he keeps it warm" it is the object
# A verb after its subject, maybe behind an adverb ("he always shares"): group 1 the adverb, group 2 the verb.
_VERB = r"((?:always|never|often|also|still|sometimes|usually|just|only|rarely|really|even)\s+)?(\w+n't|\w+)"


def first_person(text: str, char: str) -> str:
    """A card's third-person text about ``char`` in the character's own voice (a careful best effort).

    ``Wick is made of wax. He fears storms; rain nearly put him out.`` ->
    ``I am made of wax. I fear storms; rain nearly put me out.`` A sentence about someone else ("Mothew is a moth.
    He circles the lantern.") keeps its pronouns, and "him"/"her"/"them" are only changed when the text names nobody
    else ("Wick calls him a rival" keeps its "him").
    """
    name = re.escape(char)
    sentences = re.findall(r"[^.!?]+[.!?]*\s*", text) or [text]
    others = any(_names_someone_else(sentence, char) for sentence in sentences)
    out = []
    about_other = False  # the previous sentence was about someone else: its "he" is not the character
    for sentence in sentences:
        opening = re.match(r"\s*([A-Za-z']+)", sentence)
        first = opening.group(1) if opening else ""
        opens_with_pronoun = first in ("He", "She", "They")
        starts_other = bool(first) and _is_name(first, char)
        about_other = starts_other or (opens_with_pronoun and about_other)
        s = re.sub(rf"\b{name}'s\b", "my", sentence)
        s = re.sub(rf"\b{name}\s+{_VERB}", _subject_verb, s)
        if not about_other:
            s = re.sub(rf"(?<![\w'])(?:{_SUBJECT}|He|She|They)\s+{_VERB}", _subject_verb, s)
            s = re.sub(r"\b(?:his|her|their)\b(?=\s+\w)", "my", s)
            s = re.sub(r"\b(?:His|Her|Their)\b(?=\s+\w)", "My", s)
            if not others:
                s = re.sub(r"\b(?:him|them)\b", "me", s)
                s = re.sub(r"\b(?:himself|herself|themselves)\b", "myself", s)
        if re.search(r"\bI \w", s) and not re.search(r"\bI \w", sentence):  # "I watch … and remembers"
            s = re.sub(
                r"(?<=\b(?:and|but) )([a-z]+[^s\W]s)(?= \w)", lambda m: _first_person_verb(m.group(1)), s
            )
        s = re.sub(rf"\b{name}\b", "me", s)
        out.append(s)
    return "".join(out).strip()


def _is_name(word: str, char: str) -> bool:
    return (
        word[:1].isupper()
        and word != char
        and word.casefold() not in _SENTENCE_OPENERS
        and word not in ("I", "He", "She", "They", "His", "Her", "Their", "My")
    )


def _names_someone_else(sentence: str, char: str) -> bool:
    """True when a capitalised word other than the character's name stands in the sentence (a name)."""
    sentence = sentence.strip()
    inside = re.findall(r"(?<=[\s,;:(])([A-Z][a-z]+)\b", sentence)
    first = re.match(r"([A-Z][a-z]+)\b", sentence)
    if first:
        inside.append(first.group(1))
    return any(_is_name(w, char) for w in inside)


# Capitalised only because they open a sentence: not names.
_SENTENCE_OPENERS = frozenset(
    "the a an this that these those it its he she they his her their there here when while if after before "
    "talk talking once every each some many most all no one".split()
)


def _subject_verb(match: re.Match[str]) -> str:
    adverb = match.group(1) or ""
    return f"I {adverb}{_first_person_verb(match.group(2))}"


def _first_person_verb(verb: str) -> str:
    lower = verb.lower()
    if lower in _VERBS:
        return _VERBS[lower]
    if lower.endswith("ies") and len(lower) > 4:
        return f"{verb[:-3]}y"
    if lower.endswith(("ches", "shes", "sses", "xes", "zes")):
        return verb[:-2]
    if lower.endswith("s") and not lower.endswith("ss") and len(lower) > 2:
        return verb[:-1]
    return verb
