"""The ballot: exact tallies, changed votes, ties drawn with a recorded seed, majorities."""

import random

import pytest

from cogs.story.voting import Ballot, Resolution, majority_reached


def test_500_voters_exact_tally_and_changes_replace():
    ballot = Ballot(4)
    rng = random.Random(7)
    final: dict[tuple[str, str], int] = {}
    for i in range(500):
        voter = ("twitch", f"u{i}")
        for _ in range(rng.randint(1, 3)):  # some change their minds
            option = rng.randint(1, 4)
            ballot.cast(voter, option)
            final[voter] = option
    counts = ballot.counts()
    assert sum(counts.values()) == 500 == ballot.total
    for option in range(1, 5):
        assert counts[option] == sum(1 for v in final.values() if v == option)


def test_changed_vote_returns_previous():
    ballot = Ballot(3)
    assert ballot.cast(("x", "1"), 2) is None
    assert ballot.cast(("x", "1"), 3) == 2
    assert ballot.counts() == {1: 0, 2: 0, 3: 1}


def test_out_of_range_is_refused():
    with pytest.raises(ValueError):
        Ballot(3).cast(("x", "1"), 4)


def test_clear_winner_and_tie_with_seed():
    ballot = Ballot(3)
    for i, option in enumerate([1, 1, 2]):
        ballot.cast(("x", str(i)), option)
    decision = ballot.decide()
    assert decision is not None and decision.option == 1 and decision.resolution is Resolution.VOTES
    ballot.cast(("x", "3"), 2)
    tie = ballot.decide(rng_seed=12345)
    assert tie is not None and tie.resolution is Resolution.TIE and tie.seed == 12345 and tie.tied == (1, 2)
    # The seed reproduces the draw.
    assert all(ballot.decide(rng_seed=12345).option == tie.option for _ in range(5))
    seeds = {ballot.decide().seed for _ in range(5)}
    assert None not in seeds


def test_no_votes_gives_no_decision_and_draw_records_seed():
    ballot = Ballot(4)
    assert ballot.decide() is None
    drawn = ballot.draw(rng_seed=3)
    assert drawn.resolution is Resolution.RANDOM and drawn.seed == 3 and 1 <= drawn.option <= 4


@pytest.mark.parametrize(
    ("voted", "active", "fraction", "expected"),
    [
        (1, 1, 0.5, True),
        (1, 2, 0.5, False),
        (2, 2, 0.5, True),
        (2, 3, 0.5, True),
        (2, 4, 0.5, False),
        (3, 4, 0.5, True),
        (5, 5, 0.0, False),
        (0, 0, 0.5, False),
        (2, 3, 0.7, False),
        (3, 3, 0.7, True),
    ],
)
def test_majority(voted, active, fraction, expected):
    assert majority_reached(voted, active, fraction) is expected
