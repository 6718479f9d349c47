"""Tallies turned into results: counts, percentages, the winner or a tie, and their text renderings.

A single-choice poll's percentages are shares of all votes (they add up to 100); a multiple-choice poll's are shares
of the people who voted (each person may pick several options, so they can add up to more).
"""

from __future__ import annotations

from dataclasses import dataclass

from cogs.polls.model import Poll, PollStatus

BAR_WIDTH = 12  # characters in a text bar
TWITCH_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Results:
    poll: Poll
    counts: tuple[int, ...]  # per option, in option order
    voters: int  # distinct (platform, user) pairs that voted
    by_platform: tuple[tuple[str, int], ...] = ()  # voters per platform, for cross-platform polls

    @property
    def total_votes(self) -> int:
        return sum(self.counts)

    @property
    def percentages(self) -> tuple[float, ...]:
        base = self.voters if self.poll.multi else self.total_votes
        if base == 0:
            return tuple(0.0 for _ in self.counts)
        return tuple(100.0 * c / base for c in self.counts)

    @property
    def winners(self) -> tuple[int, ...]:
        """1-based positions of the options with the most votes; empty when nobody voted."""
        if self.total_votes == 0:
            return ()
        top = max(self.counts)
        return tuple(i for i, c in enumerate(self.counts, 1) if c == top)

    @property
    def is_tie(self) -> bool:
        return len(self.winners) > 1

    @property
    def final(self) -> bool:
        return not self.poll.is_open

    def outcome_line(self) -> str:
        """One sentence: who won, a tie, or no votes (or that the poll was cancelled)."""
        if self.poll.status is PollStatus.CANCELLED:
            return "The poll was cancelled."
        winners = self.winners
        verb_won, verb_lead = "wins", "leads"
        if not winners:
            return "No votes yet." if not self.final else "Nobody voted."
        pct = self.percentages[winners[0] - 1]
        votes = self.counts[winners[0] - 1]
        if len(winners) > 1:
            names = " and ".join(f"“{self.poll.options[i - 1]}”" for i in winners)
            state = "tie" if self.final else "are tied"
            return f"{names} {state} with {_votes(votes)} each ({pct:.0f}%)."
        verb = verb_won if self.final else verb_lead
        return f"“{self.poll.options[winners[0] - 1]}” {verb} with {_votes(votes)} ({pct:.0f}%)."

    def lines(self) -> list[str]:
        """A text table for consoles and code blocks: one line per option with a bar."""
        poll = self.poll
        width = max(len(o) for o in poll.options)
        top = max(self.counts) if self.counts else 0
        out = []
        for i, (label, count, pct) in enumerate(
            zip(poll.options, self.counts, self.percentages, strict=True), 1
        ):
            filled = round(BAR_WIDTH * count / top) if top else 0
            bar = "█" * filled + "·" * (BAR_WIDTH - filled)
            mark = " ←" if i in self.winners and self.final else ""
            out.append(f"{i:>2}. {label:<{width}}  {bar} {count:>5} ({pct:5.1f}%){mark}")
        return out

    def summary(self) -> str:
        """Header, table and outcome, as lines of text."""
        state = {
            PollStatus.OPEN: "live",
            PollStatus.CLOSED: "final",
            PollStatus.CANCELLED: "cancelled",
        }[self.poll.status]
        kind = "multiple choice, " if self.poll.multi else ""
        head = f"Poll #{self.poll.id} ({kind}{state}, {_people(self.voters)}): {self.poll.question}"
        return "\n".join([head, *self.lines(), self.outcome_line()])

    def compact(self, limit: int = TWITCH_MESSAGE_CHARS) -> str:
        """One chat line (Twitch): every option with count and percentage, then the outcome, cut to `limit`."""
        parts = [
            f"{i}) {label}: {count} ({pct:.0f}%)"
            for i, (label, count, pct) in enumerate(
                zip(self.poll.options, self.counts, self.percentages, strict=True), 1
            )
        ]
        prefix = "Final" if self.final else "Live"
        text = f"{prefix} results for “{self.poll.question}” — {' · '.join(parts)} — {self.outcome_line()}"
        if len(text) <= limit:
            return text
        # Too long (long question): drop the question first, then cut.
        text = f"{prefix} results #{self.poll.id} — {' · '.join(parts)} — {self.outcome_line()}"
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _votes(n: int) -> str:
    return f"{n} vote" if n == 1 else f"{n} votes"


def _people(n: int) -> str:
    return f"{n} voter" if n == 1 else f"{n} voters"
