"""The poll rules, without a database: every bad input gets a clear refusal, good input is normalized."""

import pytest

from cogs.polls.model import (
    MAX_DURATION_S,
    InvalidPoll,
    Poll,
    UnknownOption,
    check_duration,
    format_duration,
    make_draft,
    parse_duration,
    resolve_choice,
    validate_options,
    validate_question,
)
from cogs.polls.results import Results
from cogs.polls.syntax import PollSyntaxError, parse_create


def poll(options=("pizza", "tacos", "sushi"), *, multi=False):
    return Poll(
        id=7,
        question="Dinner?",
        options=tuple(options),
        multi=multi,
        creator_platform="console",
        creator_id="local",
        creator_name="you",
        created_at=0.0,
        closes_at=60.0,
    )


# ----------------------------------------------------------------------------------------------- options
def test_one_option_is_refused():
    with pytest.raises(InvalidPoll, match="at least 2 options; got 1"):
        validate_options(["only"])


def test_eleven_options_are_refused():
    with pytest.raises(InvalidPoll, match="at most 10 options; got 11"):
        validate_options([f"o{i}" for i in range(11)])


def test_ten_options_are_fine():
    assert len(validate_options([f"o{i}" for i in range(10)])) == 10


@pytest.mark.parametrize(
    "options",
    [["Yes", "yes"], ["yes", " yes "], ["Ｙｅｓ", "yes"], ["a  b", "a b"], ["Straße", "STRASSE"]],
)
def test_duplicate_options_are_refused(options):
    with pytest.raises(InvalidPoll, match="Options 1 and 2 are the same"):
        validate_options(options)


def test_empty_option_is_refused():
    with pytest.raises(InvalidPoll, match="An option is empty"):
        validate_options(["a", "  ", "b"])


def test_long_option_is_refused_and_counted_in_characters():
    with pytest.raises(InvalidPoll, match="Option 2 is 56 characters long; the limit is 55"):
        validate_options(["ok", "x" * 56])
    assert validate_options(["ok", "é" * 55])[1] == "é" * 55  # 55 characters, 110 bytes: fine


def test_unicode_options_are_kept_and_invisible_characters_dropped():
    assert validate_options(["🍕 pizza", "寿司", "ta\u200bcos\n"]) == ("🍕 pizza", "寿司", "tacos")


# ----------------------------------------------------------------------------------------------- question
@pytest.mark.parametrize("question", ["", "   ", "\u200b\u200b", "\n\t"])
def test_empty_question_is_refused(question):
    with pytest.raises(InvalidPoll, match="The question is empty"):
        validate_question(question)


def test_long_question_is_refused():
    with pytest.raises(InvalidPoll, match="301 characters long; the limit is 300"):
        validate_question("q" * 301)
    assert validate_question("ü" * 300) == "ü" * 300


def test_question_whitespace_is_collapsed():
    assert validate_question("  What\n do   we\tplay? ") == "What do we play?"


# ----------------------------------------------------------------------------------------------- durations
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("2m", 120),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1d", 86400),
        ("45", 45),
        ("2 minutes", 120),
        ("1 hour, 5 minutes", 3900),
        ("1.5h", 5400),
        ("7d", MAX_DURATION_S),
        ("1w", MAX_DURATION_S),
        (30, 30),
    ],
)
def test_durations_parse(text, seconds):
    assert check_duration(parse_duration(text)) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5", "-5m", 0, -3])
def test_zero_and_negative_durations_are_refused(text):
    with pytest.raises(InvalidPoll, match=r"must be positive|Not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["soon", "later", "", "5 parsecs", "2m soon", "m", "1h30", "∞"])
def test_words_are_not_durations(text):
    with pytest.raises(InvalidPoll, match=r"Not a duration|Unknown time unit|duration is missing"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["10y", "10 years", "8d", "604801"])
def test_too_long_is_refused(text):
    with pytest.raises(InvalidPoll, match="at most 7d"):
        check_duration(parse_duration(text))


@pytest.mark.parametrize("text", ["14s", "1", "10"])
def test_too_short_is_refused(text):
    with pytest.raises(InvalidPoll, match="at least 15s"):
        check_duration(parse_duration(text))


def test_make_draft_checks_everything():
    draft = make_draft(" Dinner? ", ["pizza", "tacos"], "2m", multi=True)
    assert (draft.question, draft.options, draft.duration_s, draft.multi) == (
        "Dinner?",
        ("pizza", "tacos"),
        120,
        True,
    )
    with pytest.raises(InvalidPoll, match="at least 15s"):
        make_draft("Q", ["a", "b"], "1s")
    assert make_draft("Q", ["a", "b"], "1s", min_duration_s=0.5).duration_s == 1


def test_format_duration():
    assert format_duration(5400) == "1h 30m"
    assert format_duration(7 * 86400) == "7d"
    assert format_duration(15) == "15s"


# ----------------------------------------------------------------------------------------------- choices
@pytest.mark.parametrize(
    ("choice", "option"), [(2, 2), ("2", 2), ("#3", 3), ("TACOS", 2), (" sushi ", 3), ("pi", 1)]
)
def test_choices_resolve(choice, option):
    assert resolve_choice(poll(), choice) == option


@pytest.mark.parametrize("choice", [0, 4, -1, "4", "burgers", "x" * 500, ""])
def test_missing_option_is_refused(choice):
    with pytest.raises(UnknownOption):
        resolve_choice(poll(), choice)


def test_ambiguous_prefix_is_refused_and_exact_text_wins():
    p = poll(("option a", "option b", "option"))
    assert resolve_choice(p, "option a") == 1
    assert resolve_choice(p, "Option") == 3
    with pytest.raises(UnknownOption, match="could mean"):
        resolve_choice(poll(("option a", "option b")), "opt")


def test_a_numeric_option_label_wins_over_its_position():
    assert resolve_choice(poll(("10", "2", "3")), "2") == 2
    assert resolve_choice(poll(("1990", "2000")), "2000") == 2


# ----------------------------------------------------------------------------------------------- results
def test_results_winner_tie_and_percentages():
    r = Results(poll=poll(), counts=(3, 1, 0), voters=4)
    assert r.winners == (1,) and not r.is_tie
    assert r.percentages == (75.0, 25.0, 0.0)
    assert "“pizza” leads with 3 votes (75%)" in r.outcome_line()
    tie = Results(poll=poll(), counts=(2, 2, 0), voters=4)
    assert tie.winners == (1, 2) and tie.is_tie
    assert "are tied" in tie.outcome_line()
    empty = Results(poll=poll(), counts=(0, 0, 0), voters=0)
    assert empty.winners == () and empty.percentages == (0.0, 0.0, 0.0)


def test_multi_choice_percentages_are_shares_of_voters():
    r = Results(poll=poll(multi=True), counts=(2, 2, 1), voters=2)
    assert r.percentages == (100.0, 100.0, 50.0)


def test_compact_results_fit_a_twitch_line():
    long_poll = Poll(
        id=1,
        question="q" * 300,
        options=tuple(f"{i}" * 55 for i in range(10)),
        multi=False,
        creator_platform="twitch",
        creator_id="1",
        creator_name="mod",
        created_at=0,
        closes_at=1,
    )
    text = Results(poll=long_poll, counts=tuple(range(10)), voters=45).compact()
    assert len(text) <= 500


# ----------------------------------------------------------------------------------------------- command syntax
def test_create_syntax():
    spec = parse_create("Pizza or tacos? | pizza | tacos | 2m")
    assert (spec.question, spec.options, spec.duration, spec.multi) == (
        "Pizza or tacos?",
        ["pizza", "tacos"],
        "2m",
        False,
    )
    spec = parse_create("Toppings? ; cheese ; ham ; olives ; 1h30m multi")
    assert spec.options == ["cheese", "ham", "olives"] and spec.duration == "1h30m" and spec.multi


@pytest.mark.parametrize("text", ["", "Just a question?"])
def test_create_syntax_needs_question_options_and_duration(text):
    with pytest.raises(PollSyntaxError, match="Write"):
        parse_create(text)
