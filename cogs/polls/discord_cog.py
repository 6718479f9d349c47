"""Polls on Discord: `/poll create|close|results`, a button per option, live tallies, results with a bar chart.

The buttons carry their state in the custom id (`familiar:poll:<poll>:<option>`) and are matched by a
`DynamicItem`, so a poll posted before a restart keeps working after it. Live tallies edit the poll's message at most
once per `polls.discord_edit_interval_s` (a `Coalescer` folds the votes in between), which keeps the bot well inside
Discord's edit rate limits however fast people click. The results (embed, chart, the character's announcement) are
posted by the `on_closed` listener, whether the poll closed by command, at its deadline, or while the bot was down.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.platforms.discord import send
from bot.platforms.discord.rights import MODERATOR_PERMISSION, MissingRights, interaction_actor
from bot.platforms.discord.tracking import tracked
from cogs.common.coalesce import Coalescer
from cogs.polls.announce import Announcement
from cogs.polls.chart import render_chart
from cogs.polls.model import MAX_OPTIONS, Display, Poll, PollError, PollStatus
from cogs.polls.results import Results
from cogs.polls.syntax import split_options

if TYPE_CHECKING:
    from bot.platforms.discord.client import FamiliarDiscordBot

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"
CUSTOM_ID = "familiar:poll:{poll}:{option}"
CUSTOM_ID_TEMPLATE = r"familiar:poll:(?P<poll>[0-9]+):(?P<option>[0-9]+)"
MIN_EDIT_INTERVAL_S = 1.0  # whatever the config says, never edit one message more often than this
BAR_CELLS = 16
OPEN_COLOUR = discord.Colour.blurple()
CLOSED_COLOUR = discord.Colour.green()
CANCELLED_COLOUR = discord.Colour.dark_grey()
_MULTI_HINT = "Pick any options; click one again to take it back."
_SINGLE_HINT = "Pick one option; click another to change your vote."


def _bar(count: int, top: int) -> str:
    filled = round(BAR_CELLS * count / top) if top else 0
    return "█" * filled + "░" * (BAR_CELLS - filled)


def poll_embed(results: Results) -> discord.Embed:
    """The poll's message: question, one field per option with a bar, when it closes, who voted where."""
    poll = results.poll
    top = max(results.counts) if results.counts else 0
    fields = [
        (f"{i}. {label}", f"`{_bar(count, top)}` **{count}** ({pct:.0f}%)")
        for i, (label, count, pct) in enumerate(
            zip(poll.options, results.counts, results.percentages, strict=True), 1
        )
    ]
    if poll.status is PollStatus.OPEN:
        lines = [
            f"**{poll.question}**",
            f"{_MULTI_HINT if poll.multi else _SINGLE_HINT} Closes <t:{int(poll.closes_at)}:R>.",
        ]
        colour = OPEN_COLOUR
    else:
        lines = [f"**{poll.question}**", f"**{results.outcome_line()}**"]
        colour = CANCELLED_COLOUR if poll.status is PollStatus.CANCELLED else CLOSED_COLOUR
    state = {PollStatus.OPEN: "open", PollStatus.CLOSED: "closed", PollStatus.CANCELLED: "cancelled"}[
        poll.status
    ]
    embed = send.embed(
        title=f"📊 Poll #{poll.id} ({state})",
        description=send.defang("\n".join(lines)),
        fields=[(send.defang(n), v) for n, v in fields],
        colour=colour,
    )
    voters = f"{results.voters} voter{'s' if results.voters != 1 else ''}"
    platforms = {d.platform for d in poll.displays}
    where = ""
    if len(platforms) > 1:
        per = ", ".join(f"{p.capitalize()} {n}" for p, n in results.by_platform) or "no votes yet"
        where = f" · also on {', '.join(sorted(p.capitalize() for p in platforms - {PLATFORM}))} ({per})"
    embed.set_footer(text=f"{voters}{where} · started by {poll.creator_name}")
    return embed


def poll_buttons(poll: Poll) -> discord.ui.View:
    """One button per option, as a finished template: clicks are routed to `PollButton` by custom id."""
    view = discord.ui.View(timeout=None)
    for i, label in enumerate(poll.options, 1):
        view.add_item(
            discord.ui.Button(
                label=send.truncate(f"{i}. {label}", 80),
                style=discord.ButtonStyle.primary,
                custom_id=CUSTOM_ID.format(poll=poll.id, option=i),
                row=(i - 1) // 5,
            )
        )
    view.stop()
    return view


class PollButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID_TEMPLATE):
    """Any poll's option button, before or after a restart: the custom id says which poll and option."""

    def __init__(self, poll_id: int, option: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=str(option),
                style=discord.ButtonStyle.primary,
                custom_id=CUSTOM_ID.format(poll=poll_id, option=option),
            )
        )
        self.poll_id = poll_id
        self.option = option

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PollButton:
        return cls(int(match["poll"]), int(match["option"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Polls") if isinstance(interaction.client, commands.Bot) else None
        if not isinstance(cog, PollCog):
            await send.answer(interaction, "Polls are not available right now; try again in a moment.")
            return
        try:
            await cog.vote_from_button(interaction, self.poll_id, self.option)
        except Exception:
            log.exception(
                "poll button %s failed: guild=%s channel=%s user=%s",
                self.custom_id,
                interaction.guild_id,
                interaction.channel_id,
                interaction.user.id,
            )
            await send.answer(
                interaction, "Something went wrong with that vote. It has been logged; try again."
            )


class PollCog(
    commands.GroupCog, name="Polls", group_name="poll", group_description="Run a poll in this channel"
):
    def __init__(self, bot: FamiliarDiscordBot) -> None:
        self.bot = bot
        self.polls = bot.runtime.polls
        self.config = bot.runtime.config.polls
        self.character = bot.runtime.card.name
        interval = max(MIN_EDIT_INTERVAL_S, self.config.discord_edit_interval_s)
        self._edits: Coalescer[int] = Coalescer(self._edit_live, interval, name="discord-poll-edits")
        self._locks: dict[int, asyncio.Lock] = {}  # per poll: a live edit never lands after the final one
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PollButton)
        self.polls.on_changed(self._on_changed)
        self.polls.on_created(PLATFORM, self._on_created)
        self.polls.on_closed(PLATFORM, self._on_closed)  # also announces polls that closed while we were away

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PollButton)
        for listener in (self._on_changed, self._on_created, self._on_closed):
            self.polls.remove_listener(listener)
        await self._edits.close()

    # ------------------------------------------------------------------------------------------- slash commands
    @app_commands.command(name="create")
    @app_commands.describe(
        question="What you ask (up to 300 characters)",
        options=f"2 to {MAX_OPTIONS} options separated by | or ; (each up to 55 characters)",
        duration="How long it runs: 90s, 2m, 1h30m, 1d (15 seconds to 7 days)",
        multiple="Let people pick several options (default: one)",
    )
    async def create(
        self,
        interaction: discord.Interaction,
        question: str,
        options: str,
        duration: str,
        multiple: bool = False,
    ) -> None:
        """Start a poll in this channel, with a button per option."""
        await tracked(
            self.bot, interaction, lambda: self._create(interaction, question, options, duration, multiple)
        )

    @app_commands.command(name="close")
    @app_commands.describe(cancel="Cancel it instead: no winner is announced")
    async def close(self, interaction: discord.Interaction, cancel: bool = False) -> None:
        """Close this channel's poll now (its creator or a moderator)."""
        await tracked(self.bot, interaction, lambda: self._close_poll(interaction, cancel))

    @app_commands.command(name="results")
    @app_commands.describe(poll="A poll's number (default: this channel's latest poll)")
    async def results(self, interaction: discord.Interaction, poll: int | None = None) -> None:
        """Show a poll's results with a bar chart: live while it runs, final once closed."""
        await tracked(self.bot, interaction, lambda: self._results(interaction, poll))

    # ------------------------------------------------------------------------------------------- handlers
    async def _create(
        self, interaction: discord.Interaction, question: str, options: str, duration: str, multiple: bool
    ) -> None:
        actor = interaction_actor(interaction)
        if self.config.discord_create == "moderators" and not actor.is_moderator:
            raise MissingRights(MODERATOR_PERMISSION)
        channel_id = str(interaction.channel_id)
        try:
            poll = await self.polls.create(
                actor, question, split_options(options), duration, channel_id=channel_id, multi=multiple
            )
        except PollError as exc:
            await send.answer(interaction, str(exc), ephemeral=True)
            return
        results = await self.polls.results(poll.id)
        await interaction.response.send_message(
            embed=poll_embed(results), view=poll_buttons(poll), allowed_mentions=send.NO_MENTIONS
        )
        message = await interaction.original_response()
        await self.polls.set_message(poll.id, PLATFORM, channel_id, str(message.id))

    async def _close_poll(self, interaction: discord.Interaction, cancel: bool) -> None:
        actor = interaction_actor(interaction)
        try:
            poll = self.polls.open_in(PLATFORM, str(interaction.channel_id))
            await self.polls.close_poll(actor, poll.id, cancel=cancel)
        except PollError as exc:
            await send.answer(interaction, str(exc), ephemeral=True)
            return
        done = "cancelled" if cancel else "closed"
        await send.answer(
            interaction, f"Poll #{poll.id} is {done}; the results are being posted.", ephemeral=True
        )

    async def _results(self, interaction: discord.Interaction, poll: int | None) -> None:
        try:
            if poll is None:
                results = await self.polls.results_in(PLATFORM, str(interaction.channel_id))
            else:
                results = await self.polls.results(poll)
        except PollError as exc:
            await send.answer(interaction, str(exc), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        embed, file = await self._results_message(results)
        await interaction.followup.send(embed=embed, file=file, allowed_mentions=send.NO_MENTIONS)

    # ------------------------------------------------------------------------------------------- buttons
    async def vote_from_button(self, interaction: discord.Interaction, poll_id: int, option: int) -> None:
        await tracked(self.bot, interaction, lambda: self._vote(interaction, poll_id, option))

    async def _vote(self, interaction: discord.Interaction, poll_id: int, option: int) -> None:
        actor = interaction_actor(interaction)
        open_poll = self.polls.open_poll(poll_id)
        multi = open_poll is not None and open_poll.multi
        try:
            receipt = await self.polls.vote(actor, poll_id, option, toggle=multi)
        except PollError as exc:
            await send.answer(interaction, str(exc), ephemeral=True)
            return
        text = receipt.message()
        if multi:
            picks = await self.polls.choices_of(poll_id, actor)
            mine = ", ".join(receipt.poll.option_number(p) for p in picks) or "none"
            text += f" Your picks: {mine}."
        await send.answer(interaction, text, ephemeral=True)

    # ------------------------------------------------------------------------------------------- listeners
    def _on_changed(self, poll_ids: frozenset[int]) -> None:
        for poll_id in poll_ids:
            poll = self.polls.open_poll(poll_id)
            if poll is not None and any(d.platform == PLATFORM and d.message_id for d in poll.displays):
                self._edits.mark(poll_id)

    async def _edit_live(self, poll_id: int) -> None:
        async with self._lock(poll_id):
            poll = self.polls.open_poll(poll_id)
            if poll is None:
                return  # closed meanwhile: the final edit is `_on_closed`'s
            results = await self.polls.results(poll_id)
            for display in self._discord_displays(poll):
                await self._edit(display, embed=poll_embed(results), view=poll_buttons(poll))

    async def _on_created(self, poll: Poll, displays: tuple[Display, ...]) -> None:
        """A poll started on another platform (or channel) is shown here too, through `polls.links`."""
        results = await self.polls.results(poll.id)
        for display in displays:
            channel = self._channel(display.channel_id)
            if channel is None:
                continue
            message = await channel.send(
                embed=poll_embed(results), view=poll_buttons(poll), allowed_mentions=send.NO_MENTIONS
            )
            await self.polls.set_message(poll.id, PLATFORM, display.channel_id, str(message.id))

    async def _on_closed(self, results: Results, announcement: Announcement) -> None:
        poll = results.poll
        self._edits.forget(poll.id)
        async with self._lock(poll.id):
            for display in self._discord_displays(poll):
                await self._edit(display, embed=poll_embed(results), view=None)
        self._locks.pop(poll.id, None)
        if poll.status is PollStatus.CANCELLED:
            text = f"Poll #{poll.id} was cancelled."
        elif announcement.in_character:
            text = f"**{self.character}:** {announcement.text}"
        else:
            text = announcement.text
        for display in poll.displays:
            if display.platform != PLATFORM:
                continue
            channel = self._channel(display.channel_id)
            if channel is None:
                continue
            embed, file = await self._results_message(results)
            try:
                with send.automod_guard(text):
                    await channel.send(
                        content=send.truncate(send.defang(text), send.MESSAGE_LIMIT),
                        embed=embed,
                        file=file,
                        allowed_mentions=send.NO_MENTIONS,
                    )
            except send.BlockedByAutoMod as refused:
                # The results go out without the announcement (the chart and table say it all), once.
                await self.bot.automod_refused(display.channel_id, refused)
                embed, file = await self._results_message(results)
                await channel.send(embed=embed, file=file, allowed_mentions=send.NO_MENTIONS)

    # ------------------------------------------------------------------------------------------- helpers
    async def _results_message(self, results: Results) -> tuple[discord.Embed, discord.File]:
        png = await asyncio.to_thread(render_chart, results)
        name = f"poll-{results.poll.id}.png"
        embed = poll_embed(results)
        embed.set_image(url=f"attachment://{name}")
        return embed, discord.File(io.BytesIO(png), filename=name)

    def _discord_displays(self, poll: Poll) -> list[Display]:
        return [d for d in poll.displays if d.platform == PLATFORM and d.message_id]

    def _channel(self, channel_id: str) -> discord.PartialMessageable | None:
        try:
            return self.bot.get_partial_messageable(int(channel_id))
        except ValueError:
            log.warning("polls: %r is not a Discord channel id (check polls.links)", channel_id)
            return None

    async def _edit(self, display: Display, *, embed: discord.Embed, view: discord.ui.View | None) -> None:
        channel = self._channel(display.channel_id)
        if channel is None or display.message_id is None:
            return
        message = channel.get_partial_message(int(display.message_id))
        try:
            await message.edit(embed=embed, view=view, allowed_mentions=send.NO_MENTIONS)
        except discord.NotFound:
            log.info("poll message %s in %s is gone; not updating it", display.message_id, display.channel_id)

    def _lock(self, poll_id: int) -> asyncio.Lock:
        lock = self._locks.get(poll_id)
        if lock is None:
            lock = self._locks[poll_id] = asyncio.Lock()
        return lock


async def setup(bot: FamiliarDiscordBot) -> None:
    await bot.add_cog(PollCog(bot))
