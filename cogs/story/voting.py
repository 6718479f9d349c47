"""The ballot of one turn: one vote per person (a changed vote replaces it), an exact tally, the deciding rules.

Pure and synchronous, so a tally can never be interleaved with another vote: the service updates the ballot and
only then awaits the disk.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

Voter = tuple[str, str]  # (platform, user_id)


class Resolution(StrEnum):
    VOTES = "votes"  # one option had the most votes
    TIE = "tie"  # several had the most: drawn at random, the seed recorded
    RANDOM = "random"  # nobody voted: drawn at random (config no_votes = "random")
    MODERATOR = "moderator"  # a moderator picked an option or wrote the action in


@dataclass(frozen=True)
class Decision:
    option: int  # 1-based ballot position
    resolution: Resolution
    counts: dict[int, int]
    seed: int | None = None  # the seed of the draw, for TIE and RANDOM
    tied: tuple[int, ...] = ()


class Ballot:
    def __init__(self, options: int, votes: dict[Voter, int] | None = None) -> None:
        self.options = options
        self._votes: dict[Voter, int] = dict(votes or {})

    def cast(self, voter: Voter, option: int) -> int | None:
        """Record `voter`'s vote for `option`; return their previous choice (None on a first vote)."""
        if not 1 <= option <= self.options:
            raise ValueError(f"option {option} is not on the ballot (1..{self.options})")
        previous = self._votes.get(voter)
        self._votes[voter] = option
        return previous

    def rekey(self, old: Voter, new: Voter) -> None:
        """`old`'s vote counts as `new`'s from now on (a forgotten person's key changed); one vote either way."""
        option = self._votes.pop(old, None)
        if option is not None:
            self._votes[new] = option

    def __contains__(self, voter: object) -> bool:
        return voter in self._votes

    def add_option(self) -> int:
        self.options += 1
        return self.options

    @property
    def voters(self) -> frozenset[Voter]:
        return frozenset(self._votes)

    @property
    def total(self) -> int:
        return len(self._votes)

    def counts(self) -> dict[int, int]:
        """Votes per option, every option present (zero included)."""
        tally = Counter(self._votes.values())
        return {option: tally.get(option, 0) for option in range(1, self.options + 1)}

    def decide(self, rng_seed: int | None = None) -> Decision | None:
        """The winning option; ties drawn with a seed (made here when not given). None when nobody voted."""
        counts = self.counts()
        best, leaders = _leaders(counts)
        if best == 0:
            return None
        if len(leaders) == 1:
            return Decision(leaders[0], Resolution.VOTES, counts)
        seed = rng_seed if rng_seed is not None else random.SystemRandom().randrange(2**31)
        return Decision(random.Random(seed).choice(leaders), Resolution.TIE, counts, seed=seed, tied=leaders)

    def decided(self, option: int, resolution: Resolution, seed: int | None) -> Decision:
        """A decision stored earlier, rebuilt on the votes it was decided on (those of this ballot)."""
        counts = self.counts()
        tied = _leaders(counts)[1] if resolution is Resolution.TIE else ()
        return Decision(option, resolution, counts, seed, tied)

    def draw(self, rng_seed: int | None = None) -> Decision:
        """A random option for a turn nobody voted on, with the seed recorded."""
        seed = rng_seed if rng_seed is not None else random.SystemRandom().randrange(2**31)
        option = random.Random(seed).randint(1, self.options)
        return Decision(option, Resolution.RANDOM, self.counts(), seed=seed)


def _leaders(counts: dict[int, int]) -> tuple[int, tuple[int, ...]]:
    """The most votes any option has, and the options that have that many."""
    best = max(counts.values(), default=0)
    return best, tuple(option for option, n in counts.items() if n == best)


def majority_reached(votes_from_active: int, active: int, fraction: float) -> bool:
    """True when more than `fraction` of the `active` participants have voted (fraction 0 disables early close)."""
    if fraction <= 0 or active <= 0:
        return False
    needed = math.floor(active * fraction) + 1  # strictly more than the fraction
    return votes_from_active >= min(needed, active)
