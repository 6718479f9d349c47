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

What the narrator writes comes through the moderation step (`cogs/common/safety.py`, see `narrator.py`); what
people type that the story repeats (a premise, a write-in) is cleaned with `clean_people_text` and checked by the same
rules first: a flagged one is refused (and kept for moderators), so it is never narrated, shown or logged.

This file holds the commands and the order things happen in; the parts it orchestrates sit beside it: `narrator.py`
writes each scene and the recap of older ones, `windows.py` says when a vote closes (timers, majority), `events.py`
hands events to platforms, `forgotten.py` makes the games in memory follow a `forget`, and `transcript.py` logs each
scene for retraining.

Privacy: `cogs/privacy` re-keys a forgotten person's votes and write-ins on disk (`cogs/story/ballots.py`) and
anonymises who started, decided or ended a story (`cogs/story/actors.py`); `forgotten` then does the same to the games
held in memory, so their vote on an open scene counts once under its hashed key (a new vote replaces it), their
write-in there still counts as theirs for the one-per-scene rule, and nothing in memory names them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final, Literal

from bot.config import GenerationConfig, PromptConfig, StoryConfig
from bot.store import ConversationLog, MessageRecord, Store
from cogs.common.actor import Actor
from cogs.common.ballot_keys import FORGOTTEN_NAME
from cogs.common.held import Place
from cogs.common.safety import SafeGenerator, Safety
from cogs.story.errors import (
    BadVote,
    NarratorBusy,
    NoStory,
    NotAllowed,
    StoryError,
    StoryRunning,
    VoteClosed,
)
from cogs.story.events import Listener, StoryEvents
from cogs.story.forgotten import forget_in_game
from cogs.story.narrator import Narrator, Scene
from cogs.story.parser import MAX_CHOICE_CHARS, clean_choice
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
    StoryPaused,
    Turn,
    TurnView,
    VoteAck,
    WriteInAck,
    WriteInKind,
    decision_view,
    turn_view,
)
from cogs.story.transcript import scene_records
from cogs.story.voting import Ballot, Decision, Resolution
from cogs.story.windows import RETRY_CLOSE_S, GameKey, VoteWindows
from models.backend import GenerationBackend
from models.engine import EngineError
from models.persona import Card

log = logging.getLogger(__name__)

MAX_ACTIVE_GAMES: Final = 1000  # stories running at once across every platform
MAX_PREMISE_CHARS: Final = 300
MAX_WRITEIN_INPUT_CHARS: Final = 200  # a write-in is cleaned to this, then cut to a choice's length
CLOSE_GRACE_S: Final = (
    10.0  # at a stop, scenes being written get this long to be stored; the rest resume at start
)

Control = Literal["start", "do", "say", "undo", "retry", "end", "pick"]


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
        safety: Safety | None = None,
    ) -> None:
        self.config = config
        self._repo = StoryRepo(store)
        self._safety = safety if safety is not None else Safety.rules_only(card.char_name)
        self._narrator = Narrator(
            backend=SafeGenerator(backend, self._safety),
            card=card,
            config=config,
            generation=generation,
            prompt=prompt,
        )
        self._log = log_
        self._clock = clock
        self._windows = VoteWindows(
            config=config, repo=self._repo, scheduler=scheduler, clock=clock, on_due=self._on_timer
        )
        self._games: dict[GameKey, Game] = {}
        self._starting: set[GameKey] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events = StoryEvents(self._spawn)
        self._close_grace_s = close_grace_s
        self._forgets = 0  # `forgotten` calls so far: a write racing one reads back what it stored

    @property
    def narrator(self) -> str:
        return self._narrator.name

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
                    self._windows.schedule(game, turn)
        if games:
            log.info("resumed %d story game(s)", len(games))

    async def close(self) -> None:
        """Stop timers; let scenes being written finish and be stored (at most `close_grace_s`), then cancel the rest.

        A scene cancelled here is not lost: its decision is on disk, and the next `start` writes it.
        """
        self._windows.stop(game.current.id for game in self._games.values())
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
        self._events.subscribe(platform, listener)

    async def flush_events(self) -> None:
        """Wait until every event raised so far has been handed to its listener (the console prints in order)."""
        await self._events.flush()

    def unsubscribe(self, platform: str, listener: Listener) -> None:
        self._events.unsubscribe(platform, listener)

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
            recap=self._narrator.recap(game, upto=len(game.turns)),
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
        place = Place("input", actor.platform, channel_id, actor.user_id, actor.name)
        typed = premise
        premise, verdict = await self._safety.people_text(typed, MAX_PREMISE_CHARS, place)
        if typed.strip() and not premise:
            raise BadVote("That premise has nothing readable in it; use words, or start without one.")
        if not verdict.allowed:
            raise NotAllowed("I can't tell a story from that premise; try another one.")
        self._starting.add(key)
        try:
            scene = await self._narrator.write_scene_or_fail(
                premise=premise, recent=[], recap_text="", action="", opening=True, place=place
            )
            now = self._clock()
            new = self._new_turn(1, "start", premise, None, scene, now)
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
                turns=[new.live(turn_id)],
            )
            self._games[key] = game
        finally:
            self._starting.discard(key)
        log.info(
            "story %d started in %s:%s by %s: %r", game.id, actor.platform, channel_id, actor.name, premise
        )
        self._windows.schedule(game, game.current)
        self._log_scene(game, game.current, author=actor)
        view = turn_view(game, game.current)
        self._events.emit(SceneOpened(game.platform, game.channel_id, game.id, view, "start"))
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
            await self._windows.reopen(game, turn)
        elif not turn.closing and game.current is turn and self._windows.majority_voted(game):
            closing = self._begin_close(game, turn, reason="majority")
        if closing is None:
            self._events.emit(BallotChanged(game.platform, game.channel_id, game.id, turn_view(game, turn)))
        return VoteAck(option, turn.options[option - 1].label, previous, turn.ballot.counts(), closing)

    async def write_in(self, actor: Actor, channel_id: str, kind: WriteInKind, text: str) -> WriteInAck:
        """An action of one's own: a moderator's is taken at once; anyone else's goes on the ballot."""
        self._check_allowed(actor, kind)
        game = self._require(actor.platform, channel_id)
        place = Place("input", actor.platform, channel_id, actor.user_id, actor.name)
        cleaned, verdict = await self._safety.people_text(text, MAX_WRITEIN_INPUT_CHARS, place)
        if not verdict.allowed:
            raise NotAllowed("That can't go on the ballot; try something else.")
        label = clean_choice(cleaned)
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
        self._events.emit(BallotChanged(game.platform, game.channel_id, game.id, turn_view(game, turn)))
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
            led_there = _action_option(game, len(game.turns) - 2)
            new = NewTurn(
                number=back.number,
                action_kind=back.action_kind,
                action=back.action,
                action_by=led_there.author_name if led_there else None,
                narration=back.narration,
                options=options,
                status="open",
                opened_at=now,
                closes_at=self._windows.deadline(now),
            )
            restored = await self._replace_live(game, [back, turn], new)
            restored.summary = back.summary
        log.info("story %d: %s undid scene %d", game.id, actor.name, turn.number)
        turn.status = back.status = "undone"
        view = turn_view(game, restored)
        self._events.emit(
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
                scene = await self._narrator.write_scene_or_fail(
                    premise=game.premise,
                    recent=self._narrator.recent_records(earlier),
                    recap_text=self._narrator.recap(game, upto=len(earlier)),
                    action=turn.action,
                    opening=opening,
                    place=_story_place(game),
                )
            except BaseException:
                self._windows.schedule(game, turn)  # a timer that fired meanwhile was ignored: set it again
                raise
            finally:
                turn.closing = False
            now = self._clock()
            led_here = _action_option(game, len(game.turns) - 1)
            action_by = led_here.author_name if led_here else None
            new = self._new_turn(turn.number, turn.action_kind, turn.action, action_by, scene, now)
            fresh = await self._replace_live(game, [turn], new)
        log.info("story %d: %s retried scene %d", game.id, actor.name, fresh.number)
        turn.status = "undone"
        # The action is logged as its author's (so `forget` deletes it with their messages), as when it first won.
        self._log_scene(game, fresh, author=None, action_author=led_here)
        view = turn_view(game, fresh)
        self._events.emit(
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
            self._windows.unschedule(game.current.id)
            await self._repo.end_game(game.id, ended_at=self._clock(), by=Person(actor.user_id, actor.name))
            del self._games[game.key]
            game.current.seal()
        scenes = len(game.turns)
        log.info("story %d ended by %s after %d scene(s)", game.id, actor.name, scenes)
        last = replace(turn_view(game, game.current), status="closed")
        self._events.emit(
            StoryEnded(game.platform, game.channel_id, game.id, scenes, "ended", actor.name, last)
        )
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
        for game in [g for g in self._games.values() if g.platform == platform]:
            if await forget_in_game(self._repo, game, platform, user_id):
                # The ballot showed their name on a write-in: displays redraw it.
                self._events.emit(
                    BallotChanged(game.platform, game.channel_id, game.id, turn_view(game, game.current))
                )

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
        self._windows.unschedule(turn.id)
        decision = forced or turn.ballot.decide()
        if decision is None:
            if self.config.no_votes == "pause":
                await self._windows.pause(turn)
                log.info("story %d: nobody voted on scene %d; paused", game.id, turn.number)
                self._events.emit(StoryPaused(game.platform, game.channel_id, game.id, turn_view(game, turn)))
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
            self._events.emit(
                StoryEnded(game.platform, game.channel_id, game.id, len(game.turns), "last_scene", None, last)
            )
            return
        # On disk before the narrator starts: a stop or a crash from here on resumes with this decision.
        turn.decision, turn.decided_by = decision, by
        await self._repo.decide(closing)
        await self._narrator.summarize_aging(game, self._repo)
        try:
            scene = await self._narrator.write_scene(
                premise=game.premise,
                recent=self._narrator.recent_records(game.turns),
                recap_text=self._narrator.recap(game, upto=len(game.turns)),
                action=chosen.action,
                opening=False,
                place=_story_place(game),
            )
        except EngineError as exc:
            # The decision is not lost: the scene stays open and tries again shortly (votes may still change it).
            log.warning(
                "story %d: narrator failed (%s); closing again in %.0f s", game.id, exc, RETRY_CLOSE_S
            )
            turn.decision = turn.decided_by = None
            await self._windows.retry_later(game, turn)
            self._events.emit(
                SceneDelayed(game.platform, game.channel_id, game.id, turn_view(game, turn), RETRY_CLOSE_S)
            )
            return
        action_by = chosen.author_name if chosen.kind != "choice" else None
        new = self._new_turn(turn.number + 1, chosen.kind, chosen.action, action_by, scene, now)
        new_id = await self._repo.advance(game.id, closing=closing, undone=[], turn=new)
        turn.status = "closed"
        turn.seal()
        fresh = new.live(new_id)
        game.turns.append(fresh)
        self._trim_memory(game)
        self._windows.schedule(game, fresh)
        self._log_scene(game, fresh, author=None, action_author=chosen)
        previous = turn_view(game, turn)
        # Who decided, as memory holds it now: a forget while the scene was written made them "someone".
        by_name = turn.decided_by.name if turn.decided_by else None
        self._events.emit(
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

    async def _announce_again(self, game: Game, turn: Turn) -> None:
        """Announce a stored scene nobody was shown, as it would have been; its vote gets a whole window from now."""
        if turn.status == "open":
            await self._windows.reopen(game, turn)
        before = game.turns[-2] if len(game.turns) > 1 else None
        decided = None
        previous = None
        if before is not None:
            previous = replace(turn_view(game, before), status="closed")
            if before.decision is not None:
                by = before.decided_by.name if before.decided_by else None
                decided = decision_view(before.decision, before, by)
        cause: Literal["start", "decided"] = "start" if before is None else "decided"
        self._events.emit(
            SceneOpened(
                game.platform, game.channel_id, game.id, turn_view(game, turn), cause, decided, previous
            )
        )

    # ----------------------------------------------------------------------------------------------- helpers
    def _new_turn(
        self,
        number: int,
        kind: ActionKind,
        action: str,
        action_by: str | None,
        scene: Scene,
        now: float,
    ) -> NewTurn:
        return NewTurn(
            number=number,
            action_kind=kind,
            action=action,
            action_by=action_by,
            narration=scene.narration,
            options=scene.options(),
            status="open",
            opened_at=now,
            closes_at=self._windows.deadline(now),
            model_version=scene.model_version,
        )

    async def _replace_live(self, game: Game, undone: list[Turn], new: NewTurn) -> Turn:
        """Undo the game's last turns (`undone`, oldest first) and open `new` in their place; the new turn."""
        self._windows.unschedule(game.current.id)
        turn_id = await self._repo.advance(game.id, closing=None, undone=[t.id for t in undone], turn=new)
        fresh = new.live(turn_id)
        game.turns[-len(undone) :] = [fresh]
        self._windows.schedule(game, fresh)
        return fresh

    def _trim_memory(self, game: Game) -> None:
        # Ballots older than the active-audience window are no longer needed in memory (they stay on disk).
        for old in game.turns[: -2 - self.config.active_turns]:
            if old.ballot.total:
                old.ballot = Ballot(len(old.options))
                old.voter_names.clear()
                old.writers.clear()

    async def _on_timer(self, key: GameKey, turn_id: int) -> None:
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

    def _log_scene(
        self, game: Game, turn: Turn, *, author: Actor | None, action_author: Option | None = None
    ) -> None:
        """The action (as the audience's turn) and the scene (as the narrator's turn), for retraining."""
        self._spawn(self._log_pair(*scene_records(game, turn, author=author, action_author=action_author)))

    async def _log_pair(self, ask: MessageRecord, scene: MessageRecord) -> None:
        await self._log.log(ask)
        await self._log.log(scene)


def _story_place(game: Game) -> Place:
    """Where a held scene of this game is recorded."""
    return Place("story", game.platform, game.channel_id)


def _action_option(game: Game, index: int) -> Option | None:
    """The write-in whose winning led to the live scene `index` (from the scene before's decision), if one did."""
    if index < 1:
        return None
    before = game.turns[index - 1]
    if before.decision is None:
        return None
    option = before.options[before.decision.option - 1]
    return option if option.kind != "choice" else None


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
