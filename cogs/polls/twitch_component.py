"""Polls in Twitch chat: `!poll Question? | a | b | 2m` (moderators), `!vote 2`, `!poll close`, `!poll results`.

Everything the bot says goes through the client's pacer, so polls never push the bot over Twitch's send limits.
Announcements, results and vote tallies are the pacer's announcements (in order, ahead of chat replies, never
dropped for their age); answers to a viewer are replies.
Vote confirmations are the flood risk (one per viewer), so they are gathered: at most one chat line per channel every
`polls.twitch_ack_interval_s`, naming the voters and the live tally. Refusals (a closed poll, an unknown option, a
viewer trying to start a poll) are answered to the person, through the same pacer.

A poll's place on Twitch is the channel's login name (what `polls.links` names), so a poll started in a linked
Discord channel is announced here too, and voters from both platforms count toward one tally.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from twitchio.ext import commands

from bot.platforms.twitch.pacing import TWITCH_MAX_CHARS, Job
from bot.platforms.twitch.rights import actor_from_message
from cogs.common.coalesce import Coalescer
from cogs.polls.announce import Announcement
from cogs.polls.model import Display, Poll, PollError, PollNotFound, PollStatus, format_duration
from cogs.polls.results import Results
from cogs.polls.storage import VoteAction
from cogs.polls.syntax import parse_create

if TYPE_CHECKING:
    import twitchio

    from bot.platforms.twitch.client import FamiliarTwitchBot

log = logging.getLogger(__name__)

PLATFORM: Final = "twitch"
MAX_ACK_NAMES = 12  # voters named in one confirmation line; the rest are counted
MAX_ACKS_PER_CHANNEL = 200  # confirmations waiting per channel; beyond this they are only counted
ANNOUNCE_SEND_TIMEOUT_S = 120.0  # how long a results announcement may wait for a send slot
USAGE = (
    "Usage: !poll Question? | option 1 | option 2 | 2m (moderators) · !vote 2 · !poll close · !poll results"
)
NOT_MODERATOR = "Only moderators can start a poll. Vote in a running one with !vote N."


@dataclass
class _Acks:
    """Vote confirmations waiting for the channel's next confirmation line."""

    lines: list[str] = field(default_factory=list)
    overflow: int = 0

    def add(self, text: str) -> None:
        if len(self.lines) < MAX_ACKS_PER_CHANNEL:
            self.lines.append(text)
        else:
            self.overflow += 1

    def drain(self) -> tuple[list[str], int]:
        lines, overflow = self.lines, self.overflow
        self.lines, self.overflow = [], 0
        return lines, overflow


def poll_announcement(poll: Poll) -> str:
    options = " · ".join(f"{i}) {label}" for i, label in enumerate(poll.options, 1))
    how = "!vote N for each option you like" if poll.multi else "!vote N or !vote <option>"
    closes = format_duration(max(0.0, poll.closes_at - poll.created_at))
    text = f"📊 Poll #{poll.id}: {poll.question} — {options} — vote with {how} (closes in {closes})"
    if len(text) <= TWITCH_MAX_CHARS:
        return text
    return f"📊 Poll #{poll.id}: {poll.question[:150]}… — {options} — {how}"[:TWITCH_MAX_CHARS]


def ack_line(lines: list[str], overflow: int, tally: str) -> str:
    named = lines[:MAX_ACK_NAMES]
    more = len(lines) - len(named) + overflow
    text = "Votes counted: " + ", ".join(named) + (f" (+{more} more)" if more else "")
    if tally:
        text += f" — {tally}"
    return text


def closed_line(results: Results, announcement: Announcement, *, character: str) -> str:
    """One chat line: the announcement (the character's, or the template), then every option's count."""
    if results.poll.status is PollStatus.CANCELLED:
        return f"Poll #{results.poll.id} was cancelled."
    lead = f"{character}: {announcement.text}" if announcement.in_character else announcement.text
    room = TWITCH_MAX_CHARS - len(lead) - 3
    tally = results.compact(limit=max(room, 60))
    text = f"{lead} | {tally}"
    return text if len(text) <= TWITCH_MAX_CHARS else text[: TWITCH_MAX_CHARS - 1] + "…"


class TwitchPolls(commands.Component):
    """Viewer polls in Twitch chat."""

    def __init__(self, bot: FamiliarTwitchBot) -> None:
        self.bot = bot
        self.polls = bot.runtime.polls
        self.config = bot.runtime.config.polls
        self.character = bot.runtime.card.name
        self._acks: dict[str, _Acks] = {}
        self._ack_lines: Coalescer[str] = Coalescer(
            self._submit_acks, max(1.0, self.config.twitch_ack_interval_s), name="twitch-poll-acks"
        )

    async def component_load(self) -> None:
        self.polls.on_created(PLATFORM, self._on_created)
        self.polls.on_closed(PLATFORM, self._on_closed)  # also announces polls that closed while we were away

    async def component_teardown(self) -> None:
        for listener in (self._on_created, self._on_closed):
            self.polls.remove_listener(listener)
        await self._ack_lines.close()

    # ------------------------------------------------------------------------------------------------ commands
    @commands.command(name="poll")
    async def poll(self, ctx: commands.Context[FamiliarTwitchBot], *, text: str = "") -> None:
        """Start, close or show a poll.

        !poll Question? | option 1 | option 2 | 2m  ·  !poll close  ·  !poll cancel  ·  !poll results
        """
        message = ctx.message
        if message is None or (where := self._where(message)) is None:
            return
        broadcaster_id, login = where
        actor = actor_from_message(message)
        word = text.strip().lower()
        try:
            if not word:
                self._reply(message, USAGE)
            elif word in ("close", "end", "stop", "cancel"):
                results = await self.polls.close_in(actor, login, cancel=word == "cancel")
                log.info("Twitch: poll #%d %s by %s", results.poll.id, word, actor.name)
                # The results line is the on_closed listener's, for every close (command, deadline, restart).
            elif word == "results":
                results = await self.polls.results_in(PLATFORM, login)
                self._reply(message, results.compact())
            elif not actor.is_moderator:
                self._reply(message, NOT_MODERATOR)
            else:
                spec = parse_create(text)
                poll = await self.polls.create(
                    actor, spec.question, spec.options, spec.duration, channel_id=login, multi=spec.multi
                )
                self._say(broadcaster_id, poll_announcement(poll))
        except PollError as exc:
            self._reply(message, str(exc))

    @commands.command(name="vote")
    async def vote(self, ctx: commands.Context[FamiliarTwitchBot], *, choice: str = "") -> None:
        """Vote in the channel's poll by number or by the option's text.

        !vote 2  ·  !vote option a
        """
        message = ctx.message
        if message is None or (where := self._where(message)) is None:
            return
        broadcaster_id, login = where
        actor = actor_from_message(message)
        try:
            if not choice.strip():
                raise PollError("Write !vote N (the option's number) or !vote <option>.")
            poll = await self.polls.running_in(PLATFORM, login)
            receipt = await self.polls.vote(actor, poll.id, choice.strip(), toggle=poll.multi)
        except PollNotFound as exc:
            # With no poll here, `!vote N` belongs to an open story vote (see docs/CONVENTIONS.md).
            story = getattr(self.bot.runtime, "story", None)
            if story is None or not story.has_open_vote(PLATFORM, broadcaster_id):
                self._reply(message, str(exc))
            return
        except PollError as exc:
            self._reply(message, str(exc))
            return
        mark = "✗ " if receipt.action is VoteAction.REMOVED else ""
        self._acks.setdefault(broadcaster_id, _Acks()).add(
            f"@{actor.name} {mark}{receipt.option}. {receipt.label}"
        )
        self._ack_lines.mark(broadcaster_id)

    # ------------------------------------------------------------------------------------------------ listeners
    async def _on_created(self, poll: Poll, displays: tuple[Display, ...]) -> None:
        for display in displays:
            broadcaster_id = self._broadcaster_id(display.channel_id)
            if broadcaster_id is not None:
                self._say(broadcaster_id, poll_announcement(poll))

    async def _on_closed(self, results: Results, announcement: Announcement) -> None:
        text = closed_line(results, announcement, character=self.character)
        waits: list[Awaitable[None]] = []
        for display in results.poll.displays:
            if display.platform != PLATFORM:
                continue
            broadcaster_id = self._broadcaster_id(display.channel_id)
            if broadcaster_id is None:
                log.warning(
                    "Twitch: poll #%d is shown in %s, where the bot is not",
                    results.poll.id,
                    display.channel_id,
                )
                continue
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._say(broadcaster_id, text, on_sent=_resolve(sent))
            waits.append(sent)
        if waits:
            # Returning marks the results announced: wait until they really went out (or fail, and retry at start).
            await asyncio.wait_for(asyncio.gather(*waits), ANNOUNCE_SEND_TIMEOUT_S)

    async def _submit_acks(self, broadcaster_id: str) -> None:
        login = self.bot.channels.get(broadcaster_id, "")

        async def compose() -> str | None:
            acks = self._acks.get(broadcaster_id)
            if acks is None or not acks.lines:
                return None
            lines, overflow = acks.drain()
            tally = ""
            try:
                results = await self.polls.results_in(PLATFORM, login)
                if results.poll.is_open:
                    tally = "live: " + " · ".join(
                        f"{label} {count}"
                        for label, count in zip(results.poll.options, results.counts, strict=True)
                    )
            except PollError:
                pass
            return ack_line(lines, overflow, tally)

        self.bot.pacer.submit(Job.announce(broadcaster_id, compose))  # in order with the results

    # ------------------------------------------------------------------------------------------------ helpers
    def _where(self, message: twitchio.ChatMessage) -> tuple[str, str] | None:
        """(broadcaster id, login) of a channel we chat in; None for shared chat or other channels."""
        if not self.bot.chats_in(message):
            return None
        return message.broadcaster.id, self.bot.channels[message.broadcaster.id].lower()

    def _broadcaster_id(self, login: str) -> str | None:
        login = login.lower().lstrip("#")
        return next((bid for bid, name in self.bot.channels.items() if name.lower() == login), None)

    def _reply(self, message: twitchio.ChatMessage, text: str) -> None:
        self._submit(Job.reply(message, text))

    def _say(
        self,
        broadcaster_id: str,
        text: str,
        *,
        on_sent: Callable[[str | None, str], Awaitable[None]] | None = None,
    ) -> None:
        self._submit(Job.say(broadcaster_id, text, on_sent=on_sent))

    def _submit(self, job: Job) -> None:
        if not self.bot.pacer.submit(job):
            log.warning("Twitch: the pacer refused a poll message for %s", job.channel_id)


def _resolve(future: asyncio.Future[None]) -> Callable[[str | None, str], Awaitable[None]]:
    async def on_sent(message_id: str | None, text: str) -> None:
        if not future.done():
            future.set_result(None)

    return on_sent


async def setup(bot: FamiliarTwitchBot) -> None:
    await bot.add_component(TwitchPolls(bot))
