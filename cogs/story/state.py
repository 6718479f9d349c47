"""The story's state as the service keeps it in memory, and the frozen views and events it hands to platforms."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeGuard, get_args

from bot.store import Platform
from cogs.common.ballot_keys import FORGOTTEN_NAME, HASHED_PREFIX, anonymous_key, ballot_key
from cogs.story.voting import Ballot, Decision, Voter

OptionKind = Literal["choice", "do", "say"]
ActionKind = Literal["start", "choice", "do", "say"]
WriteInKind = Literal["do", "say"]  # an action of one's own: something to do, or words to say
TurnStatus = Literal["open", "paused", "closed", "undone"]


def is_write_in(word: str) -> TypeGuard[WriteInKind]:
    """Whether a command word names a write-in ("do" or "say")."""
    return word in get_args(WriteInKind)


class Person(NamedTuple):
    """Who did something to a game (decided a vote, ended the story); the platform is the game's."""

    user_id: str | None  # None on a row from before ids were stored (migration 0010)
    name: str


@dataclass
class Option:
    position: int
    kind: OptionKind
    label: str
    author_id: str | None = None
    author_name: str | None = None

    @property
    def action(self) -> str:
        """The option as the narrator's prompt reads it."""
        if self.kind == "say":
            who = self.author_name or FORGOTTEN_NAME
            return f'{who} says "{self.label}"'
        return self.label


@dataclass
class Turn:
    id: int
    number: int
    action_kind: ActionKind
    action: str
    narration: str
    options: list[Option]
    status: TurnStatus
    opened_at: float
    closes_at: float | None
    ballot: Ballot
    voter_names: dict[Voter, str] = field(default_factory=dict)
    writers: set[Voter] = field(default_factory=set)
    summary: str | None = None
    message_ref: str | None = None
    closing: bool = False  # decided, the next scene being written: no more votes
    # How the vote was decided; stored before the next scene is written, so a restart can still write that scene.
    decision: Decision | None = None
    decided_by: Person | None = None  # the moderator who decided, if one did
    posted: bool = False  # its platform confirmed it showed the scene; if not, the next start announces it
    # While the vote is open and someone was forgotten on it: the secret their ballot's hashed key is made with.
    secret: bytes | None = None

    def voter(self, platform: str, user_id: str) -> Voter:
        """Whom a vote of this person counts as: the hashed key they were forgotten under on this scene, if any."""
        if self.secret is not None:
            hashed = (platform, ballot_key(self.secret, platform, user_id))
            if hashed in self.ballot:
                return hashed
        return (platform, user_id)

    def wrote(self, platform: str, user_id: str) -> bool:
        """Whether this person has a write-in on this scene, also one kept under their hashed key since a forget."""
        keys = {user_id}
        if self.secret is not None:
            keys.add(ballot_key(self.secret, platform, user_id))
        return any(o.author_id in keys for o in self.options)

    def seal(self) -> None:
        """The scene's vote has ended: as on disk, hashed keys (votes, write-ins) become random tokens, the secret
        goes (not the same tokens as on disk, which are unknowable; they are linked to nothing either way)."""
        if self.secret is None:
            return
        self.secret = None
        for voter in [v for v in self.ballot.voters if v[1].startswith(HASHED_PREFIX)]:
            self.rekey(voter, (voter[0], anonymous_key()))
        for option in self.options:
            if option.author_id is not None and option.author_id.startswith(HASHED_PREFIX):
                option.author_id = anonymous_key()
        self.writers = {w for w in self.writers if not w[1].startswith(HASHED_PREFIX)}

    def rekey(self, old: Voter, new: Voter, name: str = FORGOTTEN_NAME) -> None:
        """`old`'s vote on the scene counts as `new`'s from now on: one vote either way."""
        self.ballot.rekey(old, new)
        self.voter_names.pop(old, None)
        if new in self.ballot:
            self.voter_names[new] = name

    @property
    def waiting_for_scene(self) -> bool:
        """Decided, but the scene that follows is not stored yet (a stop or a crash came in between)."""
        return self.decision is not None and self.status in ("open", "paused")

    @property
    def participants(self) -> set[Voter]:
        return set(self.ballot.voters) | self.writers


@dataclass
class Game:
    id: int
    platform: Platform
    channel_id: str
    guild_id: str | None
    premise: str
    narrator: str
    started_by: Voter
    started_by_name: str
    turns: list[Turn]  # live turns (not undone), oldest first
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def current(self) -> Turn:
        return self.turns[-1]

    @property
    def key(self) -> tuple[str, str]:
        return (self.platform, self.channel_id)


# ----------------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class OptionView:
    position: int
    kind: OptionKind
    label: str
    author_name: str | None = None


@dataclass(frozen=True)
class TurnView:
    game_id: int
    turn_id: int
    number: int
    narrator: str
    narration: str
    options: tuple[OptionView, ...]
    counts: dict[int, int]
    status: str
    closes_at: float | None
    message_ref: str | None
    action: str

    @property
    def total_votes(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class DecisionView:
    option: int
    label: str
    resolution: str
    counts: dict[int, int]
    seed: int | None = None
    tied: tuple[int, ...] = ()
    by: str | None = None  # the moderator, when one decided


@dataclass(frozen=True)
class StatusView:
    premise: str
    narrator: str
    recap: str
    turn: TurnView
    seconds_left: float | None
    scenes: int


# ----------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class StoryEvent:
    platform: str
    channel_id: str
    game_id: int


@dataclass(frozen=True)
class SceneOpened(StoryEvent):
    """A scene to post: the opening, the next one after a decision, or one shown again after undo/retry."""

    turn: TurnView
    cause: Literal["start", "decided", "undo", "retry"]
    decision: DecisionView | None = None
    previous: TurnView | None = None  # the scene this one replaces on screen (closed, or taken back)


@dataclass(frozen=True)
class BallotChanged(StoryEvent):
    """Votes or a write-in changed the ballot of the open scene (Discord edits its counts, coalesced)."""

    turn: TurnView


@dataclass(frozen=True)
class StoryPaused(StoryEvent):
    """Nobody voted and the config says pause: the next vote opens a new window."""

    turn: TurnView


@dataclass(frozen=True)
class SceneDelayed(StoryEvent):
    """The narrator could not write the next scene (busy or failed); the vote closes again after `retry_in_s`."""

    turn: TurnView
    retry_in_s: float


@dataclass(frozen=True)
class StoryEnded(StoryEvent):
    scenes: int
    reason: Literal["ended", "last_scene"]
    by: str | None = None
    last: TurnView | None = None  # the final scene (its message loses its buttons)


@dataclass(frozen=True)
class VoteAck:
    option: int
    label: str
    previous: int | None
    counts: dict[int, int]
    closing: asyncio.Task[None] | None = None  # the early close this vote triggered (the console awaits it)


@dataclass(frozen=True)
class WriteInAck:
    position: int
    label: str
    accepted: bool  # True: a moderator's action, taken at once; False: on the ballot for the vote
    closing: asyncio.Task[None] | None = None


def decision_view(decision: Decision, turn: Turn, by: str | None = None) -> DecisionView:
    option = turn.options[decision.option - 1]
    return DecisionView(
        option=decision.option,
        label=option.label,
        resolution=str(decision.resolution),
        counts=dict(decision.counts),
        seed=decision.seed,
        tied=decision.tied,
        by=by,
    )


def turn_view(game: Game, turn: Turn) -> TurnView:
    return TurnView(
        game_id=game.id,
        turn_id=turn.id,
        number=turn.number,
        narrator=game.narrator,
        narration=turn.narration,
        options=tuple(OptionView(o.position, o.kind, o.label, o.author_name) for o in turn.options),
        counts=turn.ballot.counts(),
        status="closing" if turn.closing else turn.status,
        closes_at=turn.closes_at,
        message_ref=turn.message_ref,
        action=turn.action,
    )
