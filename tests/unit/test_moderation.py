"""The moderation core: rules (leetspeak, accents, separators, no Scunthorpe), the classifier threshold (a fake
scorer), live additions, config validation and the cleaning of people's text."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.config import EXAMPLE_CONFIG, ConfigError, config_from_dict, load_config
from models.moderation import Moderator, SafetySettings, Verdict, clean_people_text
from models.moderation import classifier as classifier_module
from models.moderation.terms import load_default_terms

LABELLED = Path(__file__).resolve().parent.parent / "data" / "safety" / "labelled.jsonl"


class FakeScorer:
    """A classifier that returns a set score and counts its calls."""

    name = "fake"
    version = "1"

    def __init__(self, score: float = 0.0, *, fail: bool = False) -> None:
        self.value = score
        self.fail = fail
        self.calls = 0

    def score(self, text: str) -> float:
        self.calls += 1
        if self.fail:
            raise RuntimeError("model file damaged")
        return self.value


def rules_only(*terms: str, patterns: tuple[str, ...] = (), default: bool = True) -> Moderator:
    settings = SafetySettings(blocked_terms=terms, blocked_patterns=patterns, use_default_list=default)
    return Moderator(settings, scorer=None)


# ------------------------------------------------------------------------------------------------------ rules


@pytest.mark.parametrize(
    "text",
    [
        "you absolute muppet",
        "MUPPET!",
        "Muppets everywhere",  # plural
        "mùppét",  # accents
        "Ｍｕｐｐｅｔ",  # full width
        "mupp3t",  # leetspeak
        "muuuuppet",  # repeated letters
        "m.u.p.p.e.t",  # separators
        "m u p p e t",
        "m-u-p-p-e-t",
        "mup\u200bpet",  # zero-width space inside
        "xx_muppet_xx",
    ],
)
def test_owner_term_found_however_written(text):
    verdict = rules_only("muppet").check(text)
    assert verdict == Verdict(False, ("blocked term 'muppet' (owner's list)",), "rules")


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("shit", "sh1t happens"),
        ("shit", "$hit"),
        ("slut", "5lut"),
        ("ass", "what an @ss"),
        ("ass", "a$$"),
        ("bitch", "b1tch"),
        ("toast", "7oas7"),
        ("fuck", "fuuuuck"),
        ("fuck", "f.u.c.k you"),
        ("fuck", "f u c k  y o u"),
        ("kill yourself", "Kill Yourself"),
        ("kill yourself", "killyourself"),
        ("kill yourself", "k1ll y0urs3lf"),
    ],
)
def test_leetspeak_separators_and_phrases(term, text):
    assert not rules_only(term, default=False).check(text).allowed


@pytest.mark.parametrize(
    "text",
    [
        "I'm going to class after the stream.",
        "Let me assess the situation.",
        "Good morning from Scunthorpe!",
        "A cocktail sounds lovely.",
        "The cockpit was tiny; peacock feathers are pretty.",
        "Passing the exam, bass, grass and glasses.",
        "Matsushita made my old radio.",
        "He'll be fine, don't let him hear it.",  # he'll is not "hell"
        "You're killing it tonight!",
        "This boss is killing me.",
        "I'm dying of laughter.",
        "The wax drips and the flame dances.",
        "Niger is a country; a flame retardant; summa cum laude; rapeseed oil.",
    ],
)
def test_no_scunthorpe_problem(text):
    moderator = rules_only("ass", "cock", "cunt", "shit", "hell", "kill")
    assert moderator.check(text).allowed, moderator.check(text).reasons


def test_default_list_on_and_off():
    text = "you f4gg0t"
    held = rules_only().check(text)
    assert not held.allowed
    assert held.reasons == ("blocked term 'faggot' (default list: slur)",)
    assert rules_only(default=False).check(text).allowed


def test_every_default_term_is_held_plain_and_disguised():
    moderator = rules_only()
    for term in load_default_terms():
        for form in (term.text, term.text.upper(), " ".join(term.text.replace(" ", "")), term.text + "s"):
            assert not moderator.check(f"well, {form}, there.").allowed, (term, form)


def test_owner_pattern_searched_as_written_and_folded():
    moderator = rules_only(patterns=(r"free\s+v-?bucks",), default=False)
    assert moderator.check("get FREE vbucks here").reasons == (
        r"blocked pattern 'free\s+v-?bucks' (owner's list)",
    )
    assert not moderator.check("get frée v-bucks").allowed
    assert moderator.check("free time for bucks").allowed


def test_empty_text_and_disabled_settings_allow_everything():
    assert rules_only("muppet").check("   ").allowed
    off = Moderator(SafetySettings(enabled=False, blocked_terms=("muppet",)), scorer=FakeScorer(1.0))
    assert off.check("muppet").allowed
    assert off.describe() == [
        "Safety checks are off ([safety] enabled = false): nothing is checked before posting."
    ]


# ------------------------------------------------------------------------------------------------ classifier


def test_classifier_threshold():
    settings = SafetySettings(use_default_list=False, threshold=0.8)
    assert Moderator(settings, scorer=FakeScorer(0.79)).check("hello").allowed
    held = Moderator(settings, scorer=FakeScorer(0.91)).check("hello")
    assert held == Verdict(False, ("offensive-language classifier 0.91 >= 0.80 (fake)",), "classifier")
    assert not Moderator(settings, scorer=FakeScorer(0.8)).check("hello").allowed


def test_rules_hit_skips_the_classifier():
    scorer = FakeScorer(0.99)
    moderator = Moderator(SafetySettings(blocked_terms=("muppet",)), scorer=scorer)
    assert moderator.check("muppet").source == "rules"
    assert scorer.calls == 0


def test_classifier_gets_a_second_look_at_disguised_text():
    class Spotter(FakeScorer):
        def score(self, text: str) -> float:
            self.calls += 1
            return 1.0 if "loser" in text else 0.0

    moderator = Moderator(SafetySettings(use_default_list=False), scorer=Spotter())
    assert not moderator.check("you l0000ser").allowed  # read as "you loser"
    assert not moderator.check("l o s e r").allowed


def test_failing_classifier_is_logged_once_then_rules_only(caplog):
    scorer = FakeScorer(fail=True)
    moderator = Moderator(SafetySettings(blocked_terms=("muppet",)), scorer=scorer)
    with caplog.at_level(logging.ERROR, logger="models.moderation.moderator"):
        assert moderator.check("hello").allowed
        assert moderator.check("hello again").allowed
    assert scorer.calls == 1
    assert len(caplog.records) == 1
    assert not moderator.check("muppet").allowed


def test_missing_classifier_library_means_rules_only(monkeypatch, caplog):
    class Missing:
        def __init__(self) -> None:
            raise ModuleNotFoundError("No module named 'glin_profanity'")

    monkeypatch.setattr(classifier_module, "GlinProfanity", Missing)
    settings = SafetySettings(classifier="glin-profanity", blocked_terms=("muppet",))
    with caplog.at_level(logging.WARNING, logger="models.moderation.classifier"):
        moderator = Moderator(settings)
    assert moderator.scorer is None
    assert [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert not moderator.check("muppet").allowed
    assert moderator.check("hello").allowed
    assert "glin-profanity is unavailable; rules only (see the log)." in moderator.describe()[1]


def test_classifier_off_loads_nothing():
    moderator = Moderator(SafetySettings(classifier="off"))
    assert moderator.scorer is None
    assert moderator.describe()[1] == "Classifier: off (rules only)."


def test_alt_profanity_check_fast_path_matches_the_library():
    profanity_check = pytest.importorskip("profanity_check")
    from models.moderation.profanity_check_scorer import ProfanityCheck

    scorer = ProfanityCheck()
    texts = [json.loads(line)["text"] for line in LABELLED.read_text(encoding="utf-8").splitlines()][::10]
    expected = profanity_check.predict_prob(texts)
    assert scorer._fast
    assert [round(scorer.score(t), 9) for t in texts] == [round(float(p), 9) for p in expected]


def test_labelled_set_is_big_enough_and_well_formed():
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 150
    assert {row["label"] for row in rows} == {0, 1}
    assert all(row["text"].strip() and row["kind"] for row in rows)


# ----------------------------------------------------------------------------------------------- live terms


def test_add_blocked_is_live_and_validated():
    moderator = rules_only(default=False)
    assert moderator.check("the L4NT3RN glows").allowed
    moderator.add_blocked("  lantern ")
    assert moderator.check("the L4NT3RN glows").reasons == ("blocked term 'lantern' (added by a moderator)",)
    moderator.add_blocked("Lantern")  # already there: not added twice
    assert "1 added by moderators since start" in moderator.describe()[0]
    for bad in ("", "   ", "x", "!!", "y" * 65):
        with pytest.raises(ValueError):
            moderator.add_blocked(bad)


def test_describe_summarises_settings():
    settings = SafetySettings(
        blocked_terms=("a1", "b2"),
        blocked_patterns=("x+y",),
        deflection="*dims* Let's talk about something else.",
    )
    lines = Moderator(settings, scorer=FakeScorer()).describe()
    assert lines[0].startswith("Rules: 2 owner's terms, 1 patterns, the default list (")
    assert lines[1] == "Classifier: fake 1, holds at a score >= 0.80."
    assert 'Deflection: "*dims* Let\'s talk about something else."' in lines[2]
    assert lines[3] == "Twitch AutoMod check: off. Held texts kept: 200."


# --------------------------------------------------------------------------------------------------- config


def test_example_config_safety_section_is_the_defaults():
    assert load_config(EXAMPLE_CONFIG).safety == SafetySettings()


def test_safety_section_read():
    config = config_from_dict(
        {
            "safety": {
                "blocked_terms": ["muppet"],
                "blocked_patterns": [r"free\s+vbucks"],
                "classifier": "off",
                "threshold": 1,
                "on_flagged_input": "refuse",
            }
        }
    )
    assert config.safety.blocked_terms == ("muppet",)
    assert config.safety.threshold == 1.0
    assert config.safety.on_flagged_input == "refuse"


def test_bad_regex_names_key_and_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[safety]\nblocked_patterns = ["ok", "(unclosed"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "safety.blocked_patterns" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"threshold": 0}, "safety.threshold"),
        ({"threshold": 1.5}, "safety.threshold"),
        ({"threshold": -0.2}, "safety.threshold"),
        ({"classifier": "perspective"}, "safety.classifier"),
        ({"on_flagged_input": "ban"}, "safety.on_flagged_input"),
        ({"blocked_terms": ["x"]}, "safety.blocked_terms[0]"),
        ({"blocked_terms": ["ok", " "]}, "safety.blocked_terms[1]"),
        ({"blocked_patterns": ["a|"]}, "safety.blocked_patterns[0]"),  # matches empty text
        ({"held_keep": -1}, "safety.held_keep"),
        ({"deflection": "two\nlines"}, "safety.deflection"),
        ({"twitch_automod_check": "yes"}, "safety.twitch_automod_check"),
        ({"blockd_terms": []}, "safety.blockd_terms"),
    ],
)
def test_bad_safety_settings_refused(section, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")) as err:
        config_from_dict({"safety": section}, source="cfg.toml")
    assert "cfg.toml" in str(err.value)


# ------------------------------------------------------------------------------------------------ people text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pizza\u202e or tacos", "pizza or tacos"),  # right-to-left override
        ("\u2066left\u2069 \u200eright\u200f \u061carabic", "left right arabic"),  # isolates and marks
        ("zero\u200bwidth\u200c\u200d join\u2060er\ufeff", "zerowidth joiner"),
        ("nul\x00l and \x07bell", "null and bell"),
        ("tags\U000e0041\U000e007f here", "tags here"),
        ("many   spaces\n\tand\r\nlines\u2028here", "many spaces and lines here"),
        ("heart \u2764\ufe0f stays", "heart \u2764\ufe0f stays"),  # a selector after its character is kept
        ("\ufe0f lone selector \ufe0f", "lone selector"),
        ("soft\u00adhyphen and \u3164 filler", "softhyphen and filler"),
        ("cafe\u0301", "café"),  # NFC
    ],
)
def test_clean_people_text_removes_what_hides(text, expected):
    assert clean_people_text(text, 100) == expected


@pytest.mark.parametrize(
    "text", ["", "\x00", "\x00\x00 \u200b", "\u202e\u2066 \ufe0f", "\U000e0041", "  \n\t "]
)
def test_clean_people_text_nothing_visible(text):
    assert clean_people_text(text, 100) == ""


def test_clean_people_text_cuts_on_a_word_boundary():
    assert clean_people_text("one two three four", 12) == "one two"
    assert clean_people_text("one two three four", 13) == "one two three"
    assert clean_people_text("aa bb cc dd", 8) == "aa bb cc"
    assert clean_people_text("abcdefghijklmnop qr", 5) == "abcde"  # one long word: cut inside it
    assert clean_people_text("short", 5) == "short"
    assert len(clean_people_text("word " * 100, 55)) <= 55
    with pytest.raises(ValueError):
        clean_people_text("text", 0)
