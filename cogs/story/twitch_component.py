"""Story games in Twitch chat: `!story start [premise]`, votes by `!1`..`!4` (or `!vote 2`), scenes in chat.

Everything the bot says goes through the client's pacer, so a story never pushes the bot over Twitch's send limits.
Scenes, decisions and vote tallies are announcements (`Job.say`, `Job.announce`): the pacer sends them in the order
submitted, one at a time, ahead of chat replies and never dropped for their age, so a scene split into several
messages reads in order. Answers to a viewer (`Job.reply`) are replies.
Vote confirmations would flood the chat (one per viewer), so they are gathered into at most one line per channel
every `ACK_INTERVAL_S`, with the live counts. Scenes and results are posted by the service's event listener,
whichever way they came about (a command, the vote timer, a start-up close).

`!vote N` is shared with polls (see docs/CONVENTIONS.md): it is a story vote when a story vote is open in the
channel and no poll is; otherwise it belongs to the polls component.

Commands run under the client's `handlers` tracker (`FamiliarTwitchBot.process_commands`), and so do the vote
listener's, so a stop lets a scene being written or a vote being stored finish before the store closes. A scene
counts as shown (`StoryService.scene_posted`) once every part of it went out; one that a stop kept from going out
is announced at the next start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from twitchio.ext import commands

from bot.platforms.twitch.pacing import TWITCH_MAX_CHARS, Job
from bot.platforms.twitch.rights import actor_from_message
from cogs.common.coalesce import Coalescer
from cogs.story.render import choice_lines, decision_text, scene_messages, status_lines
from cogs.story.service import StoryError, StoryService
from cogs.story.state import (
    SceneDelayed,
    SceneOpened,
    StoryEnded,
    StoryEvent,
    StoryPaused,
    TurnView,
    is_write_in,
)

if TYPE_CHECKING:
    import twitchio

    from bot.platforms.twitch.client import FamiliarTwitchBot

log = logging.getLogger(__name__)

PLATFORM: Final = "twitch"
ACK_INTERVAL_S = 5.0  # one vote-confirmation line per channel at most this often
MAX_ACK_NAMES = 10  # voters named in one confirmation line; the rest are counted
MAX_PENDING_ACKS = 500  # confirmations waiting per channel; beyond this they are only counted
USAGE = (
    "Usage: !story start [premise] · !1 to !4 to vote · !story do <action> · !story say <words> · "
    "!story status · moderators: !story pick N · !story undo · !story retry · !story end"
)
_NUMBER_VOTE = re.compile(r"^!([1-9])\s*$")
_WORD_VOTE = re.compile(r"^!vote\s+#?([1-9])\s*$", re.IGNORECASE)


def vote_hint(turn: TurnView) -> str:
    return f"vote with !1 to !{len(turn.options)}"


class TwitchStory(commands.Component):
    """The story game in Twitch chat."""

    def __init__(self, bot: FamiliarTwitchBot) -> None:
        self.bot = bot
        self.story: StoryService = bot.runtime.story
        self._acks: dict[str, list[str]] = {}
        self._overflow: dict[str, int] = {}
        self._ack_lines: Coalescer[str] = Coalescer(
            self._submit_acks, ACK_INTERVAL_S, name="twitch-story-acks"
        )

    async def component_load(self) -> None:
        self.story.subscribe(PLATFORM, self._on_event)  # also posts what happened while we were away

    async def component_teardown(self) -> None:
        self.story.unsubscribe(PLATFORM, self._on_event)
        await self._ack_lines.close()

    # ------------------------------------------------------------------------------------------------ commands
    @commands.command(name="story")
    async def story_command(self, ctx: commands.Context[FamiliarTwitchBot], *, text: str = "") -> None:
        """Play a story game: the narrator tells a scene, chat votes on what happens next.

        !story start [premise] · !story do <action> · !story say <words> · !story status · !story end
        """
        message = ctx.message
        if message is None or (channel := self._channel(message)) is None:
            return
        actor = actor_from_message(message)
        sub, _, rest = text.strip().partition(" ")
        sub, rest = sub.lower(), rest.strip()
        try:
            if sub == "start":
                await self.story.begin(actor, channel, rest)
            elif is_write_in(sub):
                ack = await self.story.write_in(actor, channel, sub, rest)
                if not ack.accepted:
                    self._reply(message, f"Your write-in is on the ballot: vote !{ack.position} for it.")
            elif sub == "pick":
                if not rest.isdigit():
                    raise StoryError("Write !story pick N (the choice's number).")
                await self.story.pick(actor, channel, int(rest))
            elif sub == "undo":
                await self.story.undo(actor, channel)
            elif sub == "retry":
                await self.story.retry(actor, channel)
            elif sub == "end":
                await self.story.end(actor, channel)
            elif sub == "status":
                lines = status_lines(self.story.status(PLATFORM, channel))
                self._reply(message, " · ".join(lines))
            else:
                self._reply(message, USAGE)
        except StoryError as exc:
            self._reply(message, str(exc))

    @commands.Component.listener()
    async def event_message(self, payload: twitchio.ChatMessage) -> None:
        """`!1`..`!9`, and `!vote N` when this channel's story (not a poll) is taking votes."""
        with self.bot.handlers.track() as accepted:
            if accepted:  # not while the bot is stopping: the vote is simply not taken
                await self._on_message(payload)

    async def _on_message(self, payload: twitchio.ChatMessage) -> None:
        text = (payload.text or "").strip()
        match = _NUMBER_VOTE.match(text)
        if match is None:
            match = _WORD_VOTE.match(text)
            if match is None:
                return
            channel = self._channel(payload)
            if channel is None or not self.story.has_open_vote(PLATFORM, channel) or self._poll_open(payload):
                return  # the polls component's `!vote`
        channel = self._channel(payload)
        if channel is None or payload.chatter.id == self.bot.bot_id:
            return
        actor = actor_from_message(payload)
        try:
            ack = await self.story.vote(actor, channel, int(match.group(1)))
        except StoryError as exc:
            self._reply(payload, str(exc))
            return
        pending = self._acks.setdefault(channel, [])
        if len(pending) < MAX_PENDING_ACKS:
            pending.append(f"@{actor.name} {ack.option}")
        else:
            self._overflow[channel] = self._overflow.get(channel, 0) + 1
        self._ack_lines.mark(channel)

    # ------------------------------------------------------------------------------------------------ events
    async def _on_event(self, event: StoryEvent) -> None:
        channel = event.channel_id
        if isinstance(event, SceneOpened):
            self._ack_lines.forget(channel)
            self._acks.pop(channel, None)
            self._overflow.pop(channel, None)
            if event.decision is not None:
                self._say(channel, f"📜 {decision_text(event.decision)}")
            elif event.cause == "undo":
                self._say(channel, "⏪ Back one scene: vote again.")
            elif event.cause == "retry":
                self._say(channel, "🔁 The scene, told again:")
            hint = vote_hint(event.turn) + (" (again)" if event.cause == "undo" else "")
            parts = scene_messages(event.turn, limit=TWITCH_MAX_CHARS, vote_hint=hint)
            posted = self._when_all_sent(event.turn.turn_id, len(parts))
            for text in parts:
                self._say(channel, text, on_sent=posted)
        elif isinstance(event, SceneDelayed):
            self._say(
                channel, f"The narrator needs a moment; the vote closes again in {round(event.retry_in_s)} s."
            )
        elif isinstance(event, StoryPaused):
            self._say(channel, f"Nobody voted, so the story is paused: {vote_hint(event.turn)} to go on.")
        elif isinstance(event, StoryEnded):
            why = "it reached its last scene" if event.reason == "last_scene" else f"ended by {event.by}"
            self._say(channel, f"📕 The End — {event.scenes} scene(s); {why}.")

    async def _submit_acks(self, channel: str) -> None:
        async def compose() -> str | None:
            names = self._acks.pop(channel, [])
            overflow = self._overflow.pop(channel, 0)
            turn = self.story.current(PLATFORM, channel)
            if not names or turn is None:
                return None
            shown = names[:MAX_ACK_NAMES]
            more = len(names) - len(shown) + overflow
            live = " · ".join(choice_lines(turn, counts=True))
            text = "Votes: " + ", ".join(shown) + (f" (+{more} more)" if more else "") + f" — live: {live}"
            return text[:TWITCH_MAX_CHARS]

        self.bot.pacer.submit(Job.announce(channel, compose))  # in order with the scenes

    # ------------------------------------------------------------------------------------------------ helpers
    def _channel(self, message: twitchio.ChatMessage) -> str | None:
        """The broadcaster id of a channel we chat in (the story's channel id); None for shared chat or others."""
        return message.broadcaster.id if self.bot.chats_in(message) else None

    def _poll_open(self, message: twitchio.ChatMessage) -> bool:
        polls = getattr(self.bot.runtime, "polls", None)
        if polls is None:
            return False
        login = self.bot.channels.get(message.broadcaster.id, "").lower()
        try:
            polls.open_in(PLATFORM, login)
        except Exception:  # PollNotFound: no poll here
            return False
        return True

    def _reply(self, message: twitchio.ChatMessage, text: str) -> None:
        self._submit(Job.reply(message, text))

    def _say(
        self, channel: str, text: str, *, on_sent: Callable[[str | None, str], Awaitable[None]] | None = None
    ) -> None:
        self._submit(Job.say(channel, text, on_sent=on_sent))

    def _when_all_sent(self, turn_id: int, parts: int) -> Callable[[str | None, str], Awaitable[None]]:
        """An `on_sent` for each part of a scene: the scene is posted once the last of them went out."""
        left = parts

        async def on_sent(message_id: str | None, text: str) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                await self.story.scene_posted(turn_id)

        return on_sent

    def _submit(self, job: Job) -> None:
        if not self.bot.pacer.submit(job):
            log.warning("Twitch: the pacer refused a story message for %s", job.channel_id)


async def setup(bot: FamiliarTwitchBot) -> None:
    await bot.add_component(TwitchStory(bot))
