"""Interactive story games, free of any platform: the narrator tells a scene, the audience votes, the story goes on.

One active story per channel (a channel is `(platform, channel_id)`). A scene's vote closes when its window ends (a
job on the runtime's scheduler), early when a majority of the active participants has voted, or when a moderator
picks; the winning option becomes the next scene's action. Every scene and vote is stored first and announced after,
so a restart resumes each game where it was: open windows are rescheduled, and a window that ended while the bot
was down closes at once.

A stop (or a crash) loses no progress: a decision is stored before its next scene is written, and a scene counts as
shown only once its platform says so (`scene_posted`). `close` gives the scenes being written `CLOSE_GRACE_S` to be
stored; the next `start` writes the scene of a decision that has none yet, and announces a stored scene that was
never shown, with a fresh vote window.

Platforms call the command methods with an `Actor` and show the `StoryError`s they raise; what happens later (a
window closing on its timer, counts changing) reaches them as events through `subscribe`.

Privacy: `cogs/privacy` re-keys a forgotten person's votes and write-ins on disk (`cogs/story/ballots.py`) and
anonymises who started, decided or ended a story (`cogs/story/actors.py`); `forgotten` then does the same to the games
held in memory, so their vote on an open scene counts once under its hashed key (a new vote replaces it), their
write-in there still counts as theirs for the one-per-scene rule, and nothing in memory names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Literal

from bot.config import GenerationConfig, PromptConfig, StoryConfig
from bot.store import ConversationLog, MessageRecord, Store
from cogs.common.actor import Actor
from cogs.common.ballot_keys import FORGOTTEN_NAME, anonymous_key, is_anonymous
from cogs.story import prompt as story_prompt
from cogs.story.parser import (
    MAX_CHOICE_CHARS,
    MIN_CHOICES,
    clean_choice,
    parse_choices,
    parse_scene,
    trim_narration,
    with_fallback_choices,
)
from cogs.story.repo import Closing, NewTurn, StoryRepo
from cogs.story.state import (
    ActionKind,
    BallotChanged,
    Game,
    Option,
    Person,
    SceneDelayed,
    SceneOpened,
    StatusView,
    StoryEnded,
    StoryEvent,
    StoryPaused,
    Turn,
    TurnView,
    VoteAck,
    WriteInAck,
    WriteInKind,
    decision_view,
    turn_view,
)
from cogs.story.voting import Ballot, Decision, Resolution, Voter, majority_reached
from models.backend import GenerationBackend
from models.engine import EngineError, GenerationRequest
from models.persona import Card
from models.prompt import PromptBudget

log = logging.getLogger(__name__)

MAX_ACTIVE_GAMES: Final = 1000  # stories running at once across every platform
MAX_PREMISE_CHARS: Final = 300
MAX_PENDING_EVENTS: Final = (
    200  # events kept for a platform that has not subscribed yet (start-up), per platform
)
RETRY_CLOSE_S: Final = (
    20.0  # when the narrator failed to write the next scene, the window closes again this later
)
CLOSE_GRACE_S: Final = (
    10.0  # at a stop, scenes being written get this long to be stored; the rest resume at start
)
SUMMARY_MAX_NEW_TOKENS: Final = 48
CHOICES_MAX_NEW_TOKENS: Final = 60
STOP_STRINGS: Final = ("<|im_start|>", "<|im_end|>", "\nUser:", "\nThe audience chose", "\nAudience:")
_SPACES = re.compile(r"\s+")

Listener = Callable[[StoryEvent], Awaitable[None]]
Control = Literal["start", "do", "say", "undo", "retry", "end", "pick"]


class StoryError(Exception):
    """A command that cannot be done; the message is for the person who asked."""


class NoStory(StoryError):
    pass


class StoryRunning(StoryError):
    pass


class NotAllowed(StoryError):
    pass


class BadVote(StoryError):
    pass


class VoteClosed(StoryError):
    pass


class NarratorBusy(StoryError):
    pass


@dataclass(frozen=True)
class Scene:
    narration: str
    choices: tuple[str, ...]
    model_version: str | None
    attempts: int
    fallback: bool


class StoryService:
    def __init__(
        self,
        *,
        store: Store,
        backend: GenerationBackend,
        card: Card,
        log_: ConversationLog,
        config: StoryConfig,
        generation: GenerationConfig,
        prompt: PromptConfig,
        scheduler: Any,
        clock: Callable[[], float] = time.time,
        close_grace_s: float = CLOSE_GRACE_S,
    ) -> None:
        self.config = config
        self._repo = StoryRepo(store)
        self._backend = backend
        self._card = story_prompt.narrator_card(card, config.narrator, config.narrator_style)
        self._log = log_
        self._generation = generation
        self._budget = PromptBudget(
            total_tokens=prompt.context_tokens,
            reserve_for_reply=min(config.max_new_tokens, prompt.context_tokens // 2),
            examples_max_tokens=0,  # the card's chat examples pull a small model out of narrating
        )
        self._scheduler = scheduler
        self._clock = clock
        self._games: dict[tuple[str, str], Game] = {}
        self._starting: set[tuple[str, str]] = set()
        self._listeners: dict[str, Listener] = {}
        self._pending: dict[str, deque[StoryEvent]] = defaultdict(lambda: deque(maxlen=MAX_PENDING_EVENTS))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._close_grace_s = close_grace_s
        self._forgets = 0  # `forgotten` calls so far: a write racing one reads back what it stored

    @property
    def narrator(self) -> str:
        return self._card.char_name

    # ----------------------------------------------------------------------------------------------- lifetime
    async def start(self) -> None:
        """Resume every active game where the last run left it.

        A decided scene whose next scene was not stored gets it written now; a stored scene that its platform never
        showed is announced now, with a fresh window; other open windows are rescheduled, and those that ended while
        the bot was down close at once.
        """
        games = await self._repo.load_active()
        now = self._clock()
        for game in games:
            self._games[game.key] = game
            turn = game.current
            if turn.waiting_for_scene:
                assert turn.decision is not None
                log.info(
                    "story %d: scene %d was decided (option %d) before the stop; writing the next scene now",
                    game.id,
                    turn.number,
                    turn.decision.option,
                )
                self._begin_close(
                    game, turn, reason="decided before the stop", forced=turn.decision, by=turn.decided_by
                )
            elif not turn.posted:
                log.info(
                    "story %d: scene %d was stored but never shown; announcing it now", game.id, turn.number
                )
                await self._announce_again(game, turn)
            elif turn.status == "open" and turn.closes_at is not None:
                if turn.closes_at <= now:
                    log.info(
                        "story %d: scene %d's vote ended while down; closing it now", game.id, turn.number
                    )
                    self._begin_close(game, turn, reason="timer (ended while down)")
                else:
                    self._schedule(game, turn)
        if games:
            log.info("resumed %d story game(s)", len(games))

    async def close(self) -> None:
        """Stop timers; let scenes being written finish and be stored (at most `close_grace_s`), then cancel the rest.

        A scene cancelled here is not lost: its decision is on disk, and the next `start` writes it.
        """
        self._closed = True
        for game in self._games.values():
            self._unschedule(game.current.id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_grace_s
        # Tasks may start others (a scene stored -> its event delivered, its log written): wait for those too.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)
        tasks = list(self._tasks)
        if tasks:
            log.warning(
                "stopping: %d story task(s) still running after %gs; cancelled (resumed at the next start)",
                len(tasks),
                self._close_grace_s,
            )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def subscribe(self, platform: str, listener: Listener) -> None:
        """Receive this platform's events; those raised before it subscribed (start-up) are delivered now."""
        self._listeners[platform] = listener
        pending = self._pending.pop(platform, None)
        for event in pending or ():
            self._deliver_later(listener, event)

    async def flush_events(self) -> None:
        """Wait until every event raised so far has been handed to its listener (the console prints in order)."""
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    def unsubscribe(self, platform: str, listener: Listener) -> None:
        if self._listeners.get(platform) is listener:
            del self._listeners[platform]

    # ----------------------------------------------------------------------------------------------- queries
    def has_open_vote(self, platform: str, channel_id: str) -> bool:
        """True when the channel's story takes votes now (the `!vote N` routing rule asks this)."""
        game = self._games.get((platform, channel_id))
        return game is not None and game.current.status in ("open", "paused") and not game.current.closing

    def current(self, platform: str, channel_id: str) -> TurnView | None:
        game = self._games.get((platform, channel_id))
        return turn_view(game, game.current) if game else None

    def status(self, platform: str, channel_id: str) -> StatusView:
        game = self._require(platform, channel_id)
        turn = game.current
        left = max(0.0, turn.closes_at - self._clock()) if turn.closes_at and turn.status == "open" else None
        return StatusView(
            premise=game.premise,
            narrator=game.narrator,
            recap=self._recap(game, upto=len(game.turns)),
            turn=turn_view(game, turn),
            seconds_left=left,
            scenes=len(game.turns),
        )

    # ----------------------------------------------------------------------------------------------- commands
    async def begin(
        self, actor: Actor, channel_id: str, premise: str = "", *, guild_id: str | None = None
    ) -> TurnView:
        """Start a story in the channel with an optional premise or genre; the opening scene is announced."""
        self._check_allowed(actor, "start")
        key = (actor.platform, channel_id)
        if key in self._games or key in self._starting:
            raise StoryRunning("A story is already running here. Vote, or end it first with `story end`.")
        if len(self._games) >= MAX_ACTIVE_GAMES:
            raise NarratorBusy("Too many stories are running right now; try again later.")
        premise = _one_line(premise)[:MAX_PREMISE_CHARS]
        self._starting.add(key)
        try:
            scene = await self._write_scene_or_fail(
                premise=premise, recent=[], recap_text="", action="", opening=True
            )
            now = self._clock()
            options = [Option(i, "choice", c) for i, c in enumerate(scene.choices, 1)]
            new = self._new_turn(1, "start", premise, None, scene, options, now)
            forgets = self._forgets
            game_id, turn_id = await self._repo.create_game(
                platform=actor.platform,
                channel_id=channel_id,
                guild_id=guild_id,
                premise=premise,
                narrator=self.narrator,
                started_by=(actor.platform, actor.user_id),
                started_by_name=actor.name,
                created_at=now,
                turn=new,
            )
            starter = (actor.user_id, actor.name)
            if self._forgets != forgets:  # a forget ran meanwhile: the game is known as it is stored
                starter = await self._repo.starter(game_id) or starter
            game = Game(
                id=game_id,
                platform=actor.platform,
                channel_id=channel_id,
                guild_id=guild_id,
                premise=premise,
                narrator=self.narrator,
                started_by=(actor.platform, starter[0]),
                started_by_name=starter[1],
                turns=[self._turn_from(turn_id, new)],
            )
            self._games[key] = game
        finally:
            self._starting.discard(key)
        log.info(
            "story %d started in %s:%s by %s: %r", game.id, actor.platform, channel_id, actor.name, premise
        )
        self._schedule(game, game.current)
        self._log_scene(game, game.current, author=actor)
        view = turn_view(game, game.current)
        self._emit(SceneOpened(game.platform, game.channel_id, game.id, view, "start"))
        return view

    async def vote(
        self, actor: Actor, channel_id: str, option: int, *, turn_id: int | None = None
    ) -> VoteAck:
        """Cast or change `actor`'s vote; `turn_id` (from a button) must still be the open scene."""
        game = self._require(actor.platform, channel_id)
        turn = game.current
        if turn_id is not None and turn_id != turn.id:
            raise VoteClosed("That vote is over; vote on the latest scene.")
        if turn.closing or turn.status not in ("open", "paused"):
            raise VoteClosed("The vote has closed; the next scene is being written.")
        if not 1 <= option <= len(turn.options):
            raise BadVote(f"There is no choice {option}: vote 1 to {len(turn.options)}.")
        # A person forgotten while this vote was open votes under their hashed key: the new vote replaces it.
        voter = turn.voter(actor.platform, actor.user_id)
        previous = turn.ballot.cast(
            voter, option
        )  # synchronous: the tally is exact whatever the interleaving
        turn.voter_names[voter] = actor.name if voter[1] == actor.user_id else FORGOTTEN_NAME
        stored = await self._repo.vote(
            turn.id, (actor.platform, actor.user_id), actor.name, option, self._clock()
        )
        if stored != voter[1]:
            # A forget committed just now and `forgotten` has not run yet: the key on disk is the one that counts.
            name = actor.name if stored == actor.user_id else FORGOTTEN_NAME
            turn.rekey(voter, (actor.platform, stored), name)
        closing: asyncio.Task[None] | None = None
        if turn.status == "paused" and not turn.closing:
            await self._reopen(game, turn)
        elif not turn.closing and game.current is turn and self._majority(game):
            closing = self._begin_close(game, turn, reason="majority")
        if closing is None:
            self._emit(BallotChanged(game.platform, game.channel_id, game.id, turn_view(game, turn)))
        return VoteAck(option, turn.options[option - 1].label, previous, turn.ballot.counts(), closing)

    async def write_in(self, actor: Actor, channel_id: str, kind: WriteInKind, text: str) -> WriteInAck:
        """An action of one's own: a moderator's is taken at once; anyone else's goes on the ballot."""
        self._check_allowed(actor, kind)
        game = self._require(actor.platform, channel_id)
        label = clean_choice(_one_line(text))
        if not label:
            raise BadVote(f"Say what to {kind}: `story {kind} <{'action' if kind == 'do' else 'words'}>`.")
        async with game.lock:
            turn = game.current
            if turn.closing or turn.status not in ("open", "paused"):
                raise VoteClosed("The vote has closed; the next scene is being written.")
            key = label.casefold()
            for o in turn.options:
                if o.label.casefold() == key and o.kind in (kind, "choice"):
                    raise BadVote(f"That is already on the ballot as choice {o.position}.")
            moderator = actor.is_moderator or actor.is_admin
            if not moderator:
                if self.config.max_writeins == 0:
                    raise NotAllowed("Write-ins are off here; vote for one of the choices.")
                if sum(1 for o in turn.options if o.kind != "choice") >= self.config.max_writeins:
                    raise BadVote("The ballot is full of write-ins for this scene; vote for one of them.")
                # Also when they were forgotten since: their write-in is kept under their hashed key.
                if turn.wrote(actor.platform, actor.user_id):
                    raise BadVote("You already added a write-in to this scene.")
            # The author's id (the platform is the game's) and name.
            option = Option(len(turn.options) + 1, kind, label, actor.user_id, actor.name)
            forgets = self._forgets
            await self._repo.add_option(turn.id, option)
            if self._forgets != forgets:  # a forget ran meanwhile: the write-in is known as it is stored
                option.author_id, option.author_name = (await self._repo.authors([turn.id])).get(
                    (turn.id, option.position), (option.author_id, option.author_name)
                )
                turn.secret = (await self._repo.secrets([turn.id])).get(turn.id, turn.secret)
            turn.options.append(option)
            turn.ballot.add_option()
            if option.author_id == actor.user_id:
                turn.writers.add((actor.platform, actor.user_id))
        if moderator:
            decision = Decision(option.position, Resolution.MODERATOR, turn.ballot.counts())
            task = self._begin_close(
                game, turn, reason="write-in", forced=decision, by=Person(actor.user_id, actor.name)
            )
            return WriteInAck(option.position, option.label, True, task)
        self._emit(BallotChanged(game.platform, game.channel_id, game.id, turn_view(game, turn)))
        return WriteInAck(option.position, option.label, False)

    async def pick(self, actor: Actor, channel_id: str, option: int) -> asyncio.Task[None]:
        """A moderator decides the open scene now (a choice or an audience write-in)."""
        if not (actor.is_moderator or actor.is_admin):
            raise NotAllowed("Only moderators can pick for the audience; vote instead.")
        game = self._require(actor.platform, channel_id)
        turn = game.current
        if turn.closing or turn.status not in ("open", "paused"):
            raise VoteClosed("The vote has closed; the next scene is being written.")
        if not 1 <= option <= len(turn.options):
            raise BadVote(f"There is no choice {option}: pick 1 to {len(turn.options)}.")
        decision = Decision(option, Resolution.MODERATOR, turn.ballot.counts())
        task = self._begin_close(
            game, turn, reason="pick", forced=decision, by=Person(actor.user_id, actor.name)
        )
        assert task is not None
        return task

    async def undo(self, actor: Actor, channel_id: str) -> TurnView:
        """Back one scene: the previous scene's vote opens again (the votes on both are kept on record)."""
        self._check_allowed(actor, "undo")
        game = self._require(actor.platform, channel_id)
        async with game.lock:
            turn = game.current
            if turn.closing:
                raise VoteClosed("The next scene is being written; undo it once it is posted.")
            if len(game.turns) < 2:
                raise StoryError(
                    "This is the opening scene: nothing to undo (`story retry` writes a new one)."
                )
            back = game.turns[-2]
            now = self._clock()
            options = [replace(o) for o in back.options]
            led_there = self._action_option(game, len(game.turns) - 2)
            new = NewTurn(
                number=back.number,
                action_kind=back.action_kind,
                action=back.action,
                action_by=led_there.author_name if led_there else None,
                narration=back.narration,
                options=options,
                status="open",
                opened_at=now,
                closes_at=self._deadline(now),
            )
            restored = await self._replace_live(game, [back, turn], new)
            restored.summary = back.summary
        log.info("story %d: %s undid scene %d", game.id, actor.name, turn.number)
        turn.status = back.status = "undone"
        view = turn_view(game, restored)
        self._emit(
            SceneOpened(game.platform, game.channel_id, game.id, view, "undo", previous=turn_view(game, turn))
        )
        return view

    async def retry(self, actor: Actor, channel_id: str) -> TurnView:
        """Write the current scene again from the same action (its votes are void; everyone votes again)."""
        self._check_allowed(actor, "retry")
        game = self._require(actor.platform, channel_id)
        async with game.lock:
            turn = game.current
            if turn.closing:
                raise VoteClosed("The next scene is being written already.")
            turn.closing = True
            try:
                opening = turn.action_kind == "start"
                earlier = game.turns[:-1]
                scene = await self._write_scene_or_fail(
                    premise=game.premise,
                    recent=self._recent_records(earlier),
                    recap_text=self._recap(game, upto=len(earlier)),
                    action=turn.action,
                    opening=opening,
                )
            except BaseException:
                self._schedule(game, turn)  # a timer that fired meanwhile was ignored: set it again
                raise
            finally:
                turn.closing = False
            now = self._clock()
            options = [Option(i, "choice", c) for i, c in enumerate(scene.choices, 1)]
            led_here = self._action_option(game, len(game.turns) - 1)
            action_by = led_here.author_name if led_here else None
            new = self._new_turn(turn.number, turn.action_kind, turn.action, action_by, scene, options, now)
            fresh = await self._replace_live(game, [turn], new)
        log.info("story %d: %s retried scene %d", game.id, actor.name, fresh.number)
        turn.status = "undone"
        # The action is logged as its author's (so `forget` deletes it with their messages), as when it first won.
        self._log_scene(game, fresh, author=None, action_author=led_here)
        view = turn_view(game, fresh)
        self._emit(
            SceneOpened(
                game.platform, game.channel_id, game.id, view, "retry", previous=turn_view(game, turn)
            )
        )
        return view

    async def end(self, actor: Actor, channel_id: str) -> int:
        """End the channel's story; the number of scenes it had."""
        game = self._require(actor.platform, channel_id)
        if (actor.platform, actor.user_id) != game.started_by:
            self._check_allowed(actor, "end")
        async with game.lock:
            if self._games.get(game.key) is not game:
                raise NoStory("There is no story running here.")
            self._unschedule(game.current.id)
            await self._repo.end_game(game.id, ended_at=self._clock(), by=Person(actor.user_id, actor.name))
            del self._games[game.key]
            game.current.seal()
        scenes = len(game.turns)
        log.info("story %d ended by %s after %d scene(s)", game.id, actor.name, scenes)
        last = replace(turn_view(game, game.current), status="closed")
        self._emit(StoryEnded(game.platform, game.channel_id, game.id, scenes, "ended", actor.name, last))
        return scenes

    async def scene_posted(self, turn_id: int, ref: str | None = None) -> None:
        """A platform showed this scene; `ref` is its message there (Discord edits its counts, even after restart).

        A scene that no platform confirmed is announced again at the next start, so call this once it is shown.
        """
        for game in self._games.values():
            for turn in reversed(game.turns):
                if turn.id == turn_id:
                    turn.posted = True
                    turn.message_ref = ref or turn.message_ref
                    break
        await self._repo.mark_posted(turn_id, self._clock(), ref)

    async def forgotten(self, platform: str, user_id: str) -> None:
        """Privacy listener (after `forget` commits): the games held in memory stop naming the person.

        The database was changed first (`cogs/privacy`); memory follows it. Their vote on an open scene moves to the
        hashed key it is now stored under (it counts once, and their next vote replaces it); on earlier scenes it
        becomes an anonymous token. Their write-ins, the actions those led to, the votes they decided and the stories
        they started read as stored now ("someone"); a write-in on an open scene keeps its hashed key, so they still
        cannot add a second one there. A vote or write-in that reached the database after the forget is theirs anew
        and stays as it is.
        """
        self._forgets += 1
        person = (platform, user_id)
        for game in [g for g in self._games.values() if g.platform == platform]:
            voted = [t.id for t in game.turns if person in t.ballot or person in t.voter_names]
            wrote = [t.id for t in game.turns if any(o.author_id == user_id for o in t.options)]
            decided = [
                t.id for t in game.turns if t.decided_by is not None and t.decided_by.user_id == user_id
            ]
            started = game.started_by == person
            if not (voted or wrote or decided or started):
                continue
            # Every read first; then memory changes without an await, so no vote interleaves with the change.
            hashed = await self._repo.hashed_ballots(voted, platform, user_id)
            authors = await self._repo.authors(wrote)
            secrets = await self._repo.secrets(wrote)
            deciders = await self._repo.deciders(decided)
            starter = await self._repo.starter(game.id) if started else None
            for turn in game.turns:
                if turn.id in hashed:
                    key, turn.secret = hashed[turn.id]
                    turn.rekey(person, (platform, key))
                elif person in turn.ballot and turn.status not in ("open", "paused"):
                    # A closed scene: a token linked to nothing, as on disk (not the same one, which is unknowable).
                    turn.rekey(person, (platform, anonymous_key()))
                if person not in turn.ballot:
                    turn.voter_names.pop(person, None)
                turn.writers.discard(person)
                if turn.id in secrets:
                    turn.secret = secrets[turn.id]
                if turn.id in wrote:
                    self._rename_writer(game, turn, user_id, authors)
                stored = deciders.get(turn.id)
                if stored is not None and stored.user_id != user_id:
                    turn.decided_by = stored
            if starter is not None:
                game.started_by, game.started_by_name = (platform, starter[0]), starter[1]
            current = game.current
            if current.id in wrote and current.status in ("open", "paused") and not current.closing:
                # The ballot showed their name on a write-in: displays redraw it.
                self._emit(BallotChanged(game.platform, game.channel_id, game.id, turn_view(game, current)))

    @staticmethod
    def _rename_writer(
        game: Game, turn: Turn, user_id: str, authors: dict[tuple[int, int], tuple[str | None, str | None]]
    ) -> None:
        """The person's write-ins on `turn` take their stored author; as on disk, so do the action a write-in led to
        ("someone says …", on the scene after) and the recap line quoting that action (on `turn` itself)."""
        for option in turn.options:
            if option.author_id != user_id:
                continue
            was = option.action
            option.author_id, option.author_name = authors.get(
                (turn.id, option.position), (None, FORGOTTEN_NAME)
            )
            now = option.action
            if now == was:
                continue
            for other in game.turns:
                if (
                    other.number == turn.number + 1
                    and other.action_kind == option.kind
                    and other.action == was
                ):
                    other.action = now
                if other.number == turn.number and other.summary and was in other.summary:
                    other.summary = other.summary.replace(was, now)

    @staticmethod
    def _action_option(game: Game, index: int) -> Option | None:
        """The write-in whose winning led to the live scene `index` (from the scene before's decision), if one did."""
        if index < 1:
            return None
        before = game.turns[index - 1]
        if before.decision is None:
            return None
        option = before.options[before.decision.option - 1]
        return option if option.kind != "choice" else None

    # ----------------------------------------------------------------------------------------------- closing
    def _begin_close(
        self, game: Game, turn: Turn, *, reason: str, forced: Decision | None = None, by: Person | None = None
    ) -> asyncio.Task[None] | None:
        """Stop the vote now (synchronously: later votes are refused) and decide it in a task; None if closing."""
        if turn.closing:
            return None
        turn.closing = True
        return self._spawn(self._close(game, turn, reason=reason, forced=forced, by=by))

    async def _close(
        self, game: Game, turn: Turn, *, reason: str, forced: Decision | None, by: Person | None
    ) -> None:
        """Decide the scene and write the next; a no-op when it is no longer the open scene (undo, end)."""
        try:
            async with game.lock:
                if self._games.get(game.key) is not game or game.current is not turn:
                    return
                if turn.status not in ("open", "paused"):
                    return
                await self._decide_and_advance(game, turn, reason=reason, forced=forced, by=by)
        finally:
            turn.closing = False

    async def _decide_and_advance(
        self, game: Game, turn: Turn, *, reason: str, forced: Decision | None, by: Person | None
    ) -> None:
        self._unschedule(turn.id)
        decision = forced or turn.ballot.decide()
        if decision is None:
            if self.config.no_votes == "pause":
                turn.status = "paused"
                turn.closes_at = None
                await self._repo.set_window(turn.id, status="paused", closes_at=None)
                log.info("story %d: nobody voted on scene %d; paused", game.id, turn.number)
                self._emit(StoryPaused(game.platform, game.channel_id, game.id, turn_view(game, turn)))
                return
            decision = turn.ballot.draw()
        if decision.seed is not None:
            log.info(
                "story %d scene %d: %s decided option %d with seed %d (tied: %s)",
                game.id,
                turn.number,
                decision.resolution,
                decision.option,
                decision.seed,
                decision.tied or "-",
            )
        else:
            log.info(
                "story %d scene %d: option %d by %s (%s)",
                game.id,
                turn.number,
                decision.option,
                reason,
                by.name if by else None,
            )
        chosen = turn.options[decision.option - 1]
        now = self._clock()
        closing = Closing(turn.id, decision, now, by)
        if turn.number >= self.config.max_scenes:
            await self._repo.close_last(game.id, closing, ended_at=now, reason="last_scene")
            turn.status = "closed"
            turn.seal()
            del self._games[game.key]
            last = turn_view(game, turn)
            self._emit(
                StoryEnded(game.platform, game.channel_id, game.id, len(game.turns), "last_scene", None, last)
            )
            return
        # On disk before the narrator starts: a stop or a crash from here on resumes with this decision.
        turn.decision, turn.decided_by = decision, by
        await self._repo.decide(closing)
        await self._summarize_aging(game)
        try:
            scene = await self._write_scene(
                premise=game.premise,
                recent=self._recent_records(game.turns),
                recap_text=self._recap(game, upto=len(game.turns)),
                action=chosen.action,
                opening=False,
            )
        except EngineError as exc:
            # The decision is not lost: the scene stays open and tries again shortly (votes may still change it).
            log.warning(
                "story %d: narrator failed (%s); closing again in %.0f s", game.id, exc, RETRY_CLOSE_S
            )
            turn.status = "open"
            turn.decision = turn.decided_by = None
            if turn.closes_at is None:
                turn.closes_at = self._clock() + RETRY_CLOSE_S
            await self._repo.reopen(turn.id, closes_at=turn.closes_at)
            self._schedule_in(game, turn, RETRY_CLOSE_S)
            self._emit(
                SceneDelayed(game.platform, game.channel_id, game.id, turn_view(game, turn), RETRY_CLOSE_S)
            )
            return
        options = [Option(i, "choice", c) for i, c in enumerate(scene.choices, 1)]
        action_by = chosen.author_name if chosen.kind != "choice" else None
        new = self._new_turn(turn.number + 1, chosen.kind, chosen.action, action_by, scene, options, now)
        new_id = await self._repo.advance(game.id, closing=closing, undone=[], turn=new)
        turn.status = "closed"
        turn.seal()
        fresh = self._turn_from(new_id, new)
        game.turns.append(fresh)
        self._trim_memory(game)
        self._schedule(game, fresh)
        self._log_scene(game, fresh, author=None, action_author=chosen)
        previous = turn_view(game, turn)
        # Who decided, as memory holds it now: a forget while the scene was written made them "someone".
        by_name = turn.decided_by.name if turn.decided_by else None
        self._emit(
            SceneOpened(
                game.platform,
                game.channel_id,
                game.id,
                turn_view(game, fresh),
                "decided",
                decision_view(decision, turn, by_name),
                replace(previous, status="closed"),
            )
        )

    def _majority(self, game: Game) -> bool:
        """More than `majority` of the active audience (previous scenes' voters and writers) has voted."""
        turn = game.current
        active: set[Voter] = set()
        for earlier in game.turns[-1 - self.config.active_turns : -1]:
            active |= earlier.participants
        # Forgotten people cannot be recognised from one scene to the next: they are not counted as the audience.
        active = {voter for voter in active if not is_anonymous(voter[1])}
        if not active:
            active = {game.started_by}
        voted = len(active & turn.ballot.voters)
        return majority_reached(voted, len(active), self.config.majority)

    async def _announce_again(self, game: Game, turn: Turn) -> None:
        """Announce a stored scene nobody was shown, as it would have been; its vote gets a whole window from now."""
        if turn.status == "open":
            turn.closes_at = self._deadline(self._clock())
            await self._repo.set_window(turn.id, status="open", closes_at=turn.closes_at)
            self._schedule(game, turn)
        before = game.turns[-2] if len(game.turns) > 1 else None
        decided = None
        previous = None
        if before is not None:
            previous = replace(turn_view(game, before), status="closed")
            if before.decision is not None:
                by = before.decided_by.name if before.decided_by else None
                decided = decision_view(before.decision, before, by)
        cause: Literal["start", "decided"] = "start" if before is None else "decided"
        self._emit(
            SceneOpened(
                game.platform, game.channel_id, game.id, turn_view(game, turn), cause, decided, previous
            )
        )

    async def _reopen(self, game: Game, turn: Turn) -> None:
        turn.status = "open"
        turn.closes_at = self._deadline(self._clock())
        await self._repo.set_window(turn.id, status="open", closes_at=turn.closes_at)
        self._schedule(game, turn)

    # ----------------------------------------------------------------------------------------------- scenes
    async def _write_scene_or_fail(self, **kwargs: Any) -> Scene:
        try:
            return await self._write_scene(**kwargs)
        except EngineError as exc:
            log.warning("narrator unavailable: %s", exc)
            raise NarratorBusy(
                f"{self.narrator} is busy with many voices right now; try again in a moment."
            ) from exc

    async def _write_scene(
        self,
        *,
        premise: str,
        recent: list[story_prompt.SceneRecord],
        recap_text: str,
        action: str,
        opening: bool,
    ) -> Scene:
        """Ask the model for a scene; when it does not parse, ask once more, then fall back. Never a broken scene."""
        messages = story_prompt.scene_messages(
            self._card,
            premise=premise,
            recap_text=recap_text,
            recent=recent,
            action=action,
            opening=opening,
            count_tokens=self._backend.count_tokens,
            budget=self._budget,
        )
        g = self._generation
        request = GenerationRequest(
            messages=messages,
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=g.top_p,
            repetition_penalty=g.repetition_penalty,
            stop=STOP_STRINGS,
        )
        first = await self._backend.generate(request, timeout=self.config.timeout_s)
        parsed = parse_scene(first.text)
        if parsed.ok:
            return Scene(parsed.narration, parsed.choices, first.model_version, 1, False)
        log.info("scene did not parse (%s); asking again", ", ".join(parsed.problems))
        if parsed.problems == (f"{len(parsed.choices)} usable choice(s)",):
            # Good narration without choices (the usual way a small model fails): ask for the choices alone.
            answer = await self._backend.generate(
                GenerationRequest(
                    messages=story_prompt.choices_messages(parsed.narration),
                    max_new_tokens=CHOICES_MAX_NEW_TOKENS,
                    temperature=max(0.7, self.config.temperature),
                    top_p=g.top_p,
                    repetition_penalty=g.repetition_penalty,
                    stop=STOP_STRINGS,
                ),
                timeout=self.config.timeout_s,
            )
            choices = parse_choices(answer.text)
            fallback = len(choices) < MIN_CHOICES
            if fallback:
                choices = with_fallback_choices(tuple(dict.fromkeys((*parsed.choices, *choices))))
            return Scene(parsed.narration, choices, first.model_version, 2, fallback)
        again = replace(request, temperature=max(0.8, self.config.temperature), seed=random.randrange(2**31))
        second = await self._backend.generate(again, timeout=self.config.timeout_s)
        reparsed = parse_scene(second.text)
        if reparsed.ok:
            return Scene(reparsed.narration, reparsed.choices, second.model_version, 2, False)
        log.info("scene did not parse again (%s); using what can be used", ", ".join(reparsed.problems))
        narration = reparsed.narration or parsed.narration
        if len(narration) < 12:
            narration = self._fallback_narration(premise, action, opening)
        best = max((reparsed.choices, parsed.choices), key=len)
        choices = best if len(best) >= 2 else with_fallback_choices(best)
        return Scene(trim_narration(narration), choices, second.model_version, 2, True)

    def _fallback_narration(self, premise: str, action: str, opening: bool) -> str:
        if opening:
            about = f" {premise.rstrip('.')}." if premise else ""
            return f"{self.narrator} clears their throat, and the tale begins.{about} What happens next is up to you."
        return f"And so: {action.rstrip('.')}. The story holds its breath as the next moment unfolds."

    async def _summarize_aging(self, game: Game) -> None:
        """Give a recap line to each scene about to leave the verbatim window (model first, extractive fallback)."""
        aging = game.turns[: max(0, len(game.turns) - self.config.recent_scenes)]
        for i, turn in enumerate(aging):
            if turn.summary:
                continue
            nxt = game.turns[i + 1].action if i + 1 < len(game.turns) else ""
            fallback = story_prompt.extractive_summary(turn.narration, nxt)
            summary = fallback
            if self.config.summarize_with_model:
                try:
                    result = await self._backend.generate(
                        GenerationRequest(
                            messages=story_prompt.summary_messages(turn.narration, nxt),
                            max_new_tokens=SUMMARY_MAX_NEW_TOKENS,
                            temperature=0.0,
                            stop=STOP_STRINGS,
                        ),
                        timeout=self.config.timeout_s,
                    )
                    summary = story_prompt.clean_summary(result.text, fallback)
                except EngineError as exc:
                    log.info("summary by model failed (%s); extractive summary instead", exc)
            turn.summary = summary
            await self._repo.set_summary(turn.id, summary)

    def _recap(self, game: Game, *, upto: int) -> str:
        """Recap lines of the scenes before the verbatim window among the first `upto` live scenes."""
        turns = game.turns[:upto]
        older = turns[: max(0, len(turns) - self.config.recent_scenes)]
        lines = []
        for i, t in enumerate(older):
            nxt = turns[i + 1].action if i + 1 < len(turns) else ""
            lines.append(t.summary or story_prompt.extractive_summary(t.narration, nxt))
        return story_prompt.recap(lines, self._backend.count_tokens, self.config.recap_tokens)

    def _recent_records(self, turns: list[Turn]) -> list[story_prompt.SceneRecord]:
        recent = turns[-self.config.recent_scenes :] if self.config.recent_scenes else []
        return [
            story_prompt.SceneRecord(
                action="" if t.action_kind == "start" else t.action,
                narration=t.narration,
                choices=tuple(o.label for o in t.options if o.kind == "choice"),
            )
            for t in recent
        ]

    # ----------------------------------------------------------------------------------------------- helpers
    def _new_turn(
        self,
        number: int,
        kind: ActionKind,
        action: str,
        action_by: str | None,
        scene: Scene,
        options: list[Option],
        now: float,
    ) -> NewTurn:
        return NewTurn(
            number=number,
            action_kind=kind,
            action=action,
            action_by=action_by,
            narration=scene.narration,
            options=options,
            status="open",
            opened_at=now,
            closes_at=self._deadline(now),
            model_version=scene.model_version,
        )

    async def _replace_live(self, game: Game, undone: list[Turn], new: NewTurn) -> Turn:
        """Undo the game's last turns (`undone`, oldest first) and open `new` in their place; the new turn."""
        self._unschedule(game.current.id)
        turn_id = await self._repo.advance(game.id, closing=None, undone=[t.id for t in undone], turn=new)
        fresh = self._turn_from(turn_id, new)
        game.turns[-len(undone) :] = [fresh]
        self._schedule(game, fresh)
        return fresh

    @staticmethod
    def _turn_from(turn_id: int, new: NewTurn) -> Turn:
        return Turn(
            id=turn_id,
            number=new.number,
            action_kind=new.action_kind,
            action=new.action,
            narration=new.narration,
            options=list(new.options),
            status="open",
            opened_at=new.opened_at,
            closes_at=new.closes_at,
            ballot=Ballot(len(new.options)),
        )

    def _trim_memory(self, game: Game) -> None:
        # Ballots older than the active-audience window are no longer needed in memory (they stay on disk).
        for old in game.turns[: -2 - self.config.active_turns]:
            if old.ballot.total:
                old.ballot = Ballot(len(old.options))
                old.voter_names.clear()
                old.writers.clear()

    def _deadline(self, now: float) -> float | None:
        return now + self.config.vote_seconds if self.config.vote_seconds > 0 else None

    def _schedule(self, game: Game, turn: Turn) -> None:
        if turn.closes_at is None or turn.status != "open" or self._closed:
            return
        self._schedule_in(game, turn, max(0.0, turn.closes_at - self._clock()))

    def _schedule_in(self, game: Game, turn: Turn, delay: float) -> None:
        if self._closed:
            return  # stopping: the next start reschedules from what is on disk
        # The scheduler runs on wall time; the delay comes from our clock, so tests may use a fake one.
        self._scheduler.add_job(
            self._on_timer,
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=delay),
            args=[game.key, turn.id],
            id=_job_id(turn.id),
            replace_existing=True,
            misfire_grace_time=None,  # a late timer still closes the vote
        )

    def _unschedule(self, turn_id: int) -> None:
        with contextlib.suppress(Exception):  # apscheduler raises JobLookupError when it already ran
            self._scheduler.remove_job(_job_id(turn_id))

    async def _on_timer(self, key: tuple[str, str], turn_id: int) -> None:
        if self._closed:
            return
        game = self._games.get(key)
        if game is not None and game.current.id == turn_id and game.current.status == "open":
            self._begin_close(game, game.current, reason="timer")

    def _require(self, platform: str, channel_id: str) -> Game:
        game = self._games.get((platform, channel_id))
        if game is None:
            raise NoStory("There is no story running here. Start one with `story start [premise]`.")
        return game

    def _check_allowed(self, actor: Actor, control: Control) -> None:
        if control in self.config.moderator_only and not (actor.is_moderator or actor.is_admin):
            raise NotAllowed(f"Only moderators can use `story {control}` here.")

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("story task failed", exc_info=task.exception())

    def _emit(self, event: StoryEvent) -> None:
        listener = self._listeners.get(event.platform)
        if listener is None:
            self._pending[event.platform].append(event)
            return
        self._deliver_later(listener, event)

    def _deliver_later(self, listener: Listener, event: StoryEvent) -> None:
        task = self._spawn(self._deliver(listener, event))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    @staticmethod
    async def _deliver(listener: Listener, event: StoryEvent) -> None:
        try:
            await listener(event)
        except Exception:
            log.exception("story listener failed on %s", type(event).__name__)

    def _log_scene(
        self, game: Game, turn: Turn, *, author: Actor | None, action_author: Option | None = None
    ) -> None:
        """The action (as the audience's turn) and the scene (as the narrator's turn), for retraining."""
        conversation = f"story:{game.platform}:{game.id}"
        if turn.action_kind == "start":
            who_id, who_name = (author.user_id, author.name) if author else ("audience", "audience")
            ask = story_prompt.instruction("", opening=True, premise=game.premise)
        else:
            # A forgotten author's key (hashed or a token) is no one's id: such an action is the audience's.
            if (
                action_author is not None
                and action_author.author_id
                and not is_anonymous(action_author.author_id)
            ):
                who_id, who_name = action_author.author_id, action_author.author_name or "audience"
            else:
                who_id, who_name = "audience", "audience"
            ask = story_prompt.action_line(turn.action)
        record = partial(
            MessageRecord,
            platform=game.platform,
            guild_id=game.guild_id,
            channel_id=game.channel_id,
            conversation_id=conversation,
        )
        text = story_prompt.scene_text(turn.narration, [o.label for o in turn.options])
        self._spawn(
            self._log_pair(
                record(author_id=who_id, author_name=who_name, role="user", content=ask),
                record(author_id="familiar", author_name=game.narrator, role="narrator", content=text),
            )
        )

    async def _log_pair(self, ask: MessageRecord, scene: MessageRecord) -> None:
        await self._log.log(ask)
        await self._log.log(scene)


def _job_id(turn_id: int) -> str:
    return f"story-vote-{turn_id}"


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text or "").strip()


__all__ = [
    "MAX_CHOICE_CHARS",
    "BadVote",
    "NarratorBusy",
    "NoStory",
    "NotAllowed",
    "StoryError",
    "StoryRunning",
    "StoryService",
    "TurnView",
    "VoteClosed",
]
