"""Story games on Discord: `/story start|do|say|pick|undo|retry|status|end`, a button per choice, live vote counts.

Each scene is one message: an embed with the narration and the ballot (counts live), and a button per option whose
custom id carries the scene (`familiar:story:<turn>:<option>`), matched by a `DynamicItem` so buttons posted before
a restart still vote after it. Count edits go through a `Coalescer` (at most one edit per scene message every
`EDIT_INTERVAL_S`), far inside Discord's edit rate limits however fast people click. Scenes, results and endings are
posted by the service's event listener, whichever way they came about (a command, a timer, a start-up close).
Commands and buttons run under the bot's `handlers` tracker and wait for the events they caused to be posted, so a
stop lets a scene being written finish, stored and shown, before the connection and the store close.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.platforms.discord import send
from bot.platforms.discord.rights import interaction_actor
from bot.platforms.discord.tracking import tracked
from cogs.common.coalesce import Coalescer
from cogs.story.render import decision_text, option_line, status_lines
from cogs.story.service import StoryError, StoryService
from cogs.story.state import (
    BallotChanged,
    SceneDelayed,
    SceneOpened,
    StoryEnded,
    StoryEvent,
    StoryPaused,
    TurnView,
    WriteInKind,
)

if TYPE_CHECKING:
    from bot.platforms.discord.client import FamiliarDiscordBot

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"
CUSTOM_ID = "familiar:story:{turn}:{option}"
CUSTOM_ID_TEMPLATE = r"familiar:story:(?P<turn>[0-9]+):(?P<option>[0-9]+)"
EDIT_INTERVAL_S = 2.0  # one count edit per scene message at most this often (Discord allows ~5 edits / 5 s)
BUTTONS_PER_ROW = 5
OPEN_COLOUR = discord.Colour.purple()
CLOSED_COLOUR = discord.Colour.dark_grey()


def scene_embed(turn: TurnView) -> discord.Embed:
    """The scene's message: narration, the ballot with counts, and how the vote stands."""
    ballot = "\n".join(option_line(o, turn.counts.get(o.position, 0)) for o in turn.options)
    description = f"{turn.narration}\n\n{ballot}"
    if turn.status == "open" and turn.closes_at is not None:
        state = f"Vote with the buttons · closes <t:{int(turn.closes_at)}:R>"
    elif turn.status == "open":
        state = "Vote with the buttons · a majority or a moderator decides"
    elif turn.status == "paused":
        state = "Paused: nobody voted. Vote to go on."
    elif turn.status == "closing":
        state = "The vote is closed; the next scene is being written…"
    elif turn.status == "undone":
        state = "Taken back."
    else:
        state = "The vote is closed."
    votes = turn.total_votes
    e = send.embed(
        title=f"📖 Scene {turn.number} — {turn.narrator}",
        description=send.defang(f"{description}\n\n{state}"),
        colour=OPEN_COLOUR if turn.status in ("open", "paused") else CLOSED_COLOUR,
    )
    e.set_footer(text=f"{votes} vote{'s' * (votes != 1)} · story #{turn.game_id}")
    return e


def scene_buttons(turn: TurnView) -> discord.ui.View:
    """A button per ballot option, as a finished template: clicks reach `StoryButton` by custom id."""
    view = discord.ui.View(timeout=None)
    for option in turn.options:
        count = turn.counts.get(option.position, 0)
        view.add_item(
            discord.ui.Button(
                label=send.truncate(f"{option.position}. {option.label}", 72)
                + (f" ({count})" if count else ""),
                style=discord.ButtonStyle.primary
                if option.kind == "choice"
                else discord.ButtonStyle.secondary,
                custom_id=CUSTOM_ID.format(turn=turn.turn_id, option=option.position),
                row=(option.position - 1) // BUTTONS_PER_ROW,
            )
        )
    view.stop()
    return view


class StoryButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID_TEMPLATE):
    """A choice button of any scene, before or after a restart: the custom id says which scene and option."""

    def __init__(self, turn_id: int, option: int) -> None:
        super().__init__(
            discord.ui.Button(label=str(option), custom_id=CUSTOM_ID.format(turn=turn_id, option=option))
        )
        self.turn_id = turn_id
        self.option = option

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StoryButton:
        return cls(int(match["turn"]), int(match["option"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Story") if isinstance(interaction.client, commands.Bot) else None
        if not isinstance(cog, StoryCog):
            await send.answer(interaction, "Stories are not available right now; try again in a moment.")
            return
        await cog.vote_from_button(interaction, self.turn_id, self.option)


class StoryCog(
    commands.GroupCog, name="Story", group_name="story", group_description="Play a story game here"
):
    def __init__(self, bot: FamiliarDiscordBot) -> None:
        self.bot = bot
        self.story: StoryService = bot.runtime.story
        self._edits: Coalescer[tuple[str, int]] = Coalescer(
            self._edit_counts, EDIT_INTERVAL_S, name="story-edits"
        )
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(StoryButton)
        self.story.subscribe(PLATFORM, self._on_event)  # also posts what happened while we were away

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(StoryButton)
        self.story.unsubscribe(PLATFORM, self._on_event)
        await self._edits.close()

    # ------------------------------------------------------------------------------------------- slash commands
    @app_commands.command(name="start")
    @app_commands.describe(premise="What the story is about, or its genre (optional)")
    async def start(self, interaction: discord.Interaction, premise: str | None = None) -> None:
        """Start a story game in this channel: the narrator tells a scene, everyone votes on what happens."""
        await tracked(self.bot, interaction, lambda: self._start(interaction, premise))

    @app_commands.command(name="do")
    @app_commands.describe(action="What to do, in your own words (a moderator's action is taken at once)")
    async def do(self, interaction: discord.Interaction, action: str) -> None:
        """Write in an action: it goes on the ballot (a moderator's is taken at once)."""
        await tracked(self.bot, interaction, lambda: self._write_in(interaction, "do", action))

    @app_commands.command(name="say")
    @app_commands.describe(words="What to say (a moderator's line is taken at once)")
    async def say(self, interaction: discord.Interaction, words: str) -> None:
        """Write in a line to say: it goes on the ballot (a moderator's is taken at once)."""
        await tracked(self.bot, interaction, lambda: self._write_in(interaction, "say", words))

    @app_commands.command(name="pick")
    @app_commands.describe(choice="The number of the choice or write-in to take")
    async def pick(self, interaction: discord.Interaction, choice: app_commands.Range[int, 1, 9]) -> None:
        """Moderators: decide the open vote now."""
        await tracked(self.bot, interaction, lambda: self._pick(interaction, choice))

    @app_commands.command(name="undo")
    async def undo(self, interaction: discord.Interaction) -> None:
        """Go back one scene and vote on it again."""
        await tracked(self.bot, interaction, lambda: self._control(interaction, "undo", "Back one scene."))

    @app_commands.command(name="retry")
    async def retry(self, interaction: discord.Interaction) -> None:
        """Tell the current scene again, differently."""
        await tracked(
            self.bot, interaction, lambda: self._control(interaction, "retry", "The scene is told again.")
        )

    @app_commands.command(name="end")
    async def end(self, interaction: discord.Interaction) -> None:
        """End this channel's story."""
        await tracked(self.bot, interaction, lambda: self._control(interaction, "end", "The story is over."))

    @app_commands.command(name="status")
    async def status(self, interaction: discord.Interaction) -> None:
        """The story so far and the current vote."""
        try:
            lines = status_lines(self.story.status(PLATFORM, str(interaction.channel_id)))
        except StoryError as exc:
            await send.answer(interaction, str(exc))
            return
        await send.answer(interaction, "\n".join(lines))

    # ------------------------------------------------------------------------------------------- handlers
    async def _start(self, interaction: discord.Interaction, premise: str | None) -> None:
        await interaction.response.defer(thinking=True)
        actor = interaction_actor(interaction)
        guild = str(interaction.guild_id) if interaction.guild_id else None
        try:
            await self.story.begin(actor, str(interaction.channel_id), premise or "", guild_id=guild)
        except StoryError as exc:
            await send.answer(interaction, str(exc), ephemeral=True)
            return
        await self.story.flush_events()  # the opening scene is posted before the handler ends
        about = f": {premise}" if premise else ""
        await send.answer(interaction, f"📖 {actor.name} started a story{about}", ephemeral=False)

    async def _pick(self, interaction: discord.Interaction, choice: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            await self.story.pick(interaction_actor(interaction), str(interaction.channel_id), choice)
        except StoryError as exc:
            await send.answer(interaction, str(exc))
            return
        await self.story.flush_events()
        await send.answer(interaction, f"Choice {choice} is taken; the next scene is being written.")

    async def _write_in(self, interaction: discord.Interaction, kind: WriteInKind, text: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            ack = await self.story.write_in(
                interaction_actor(interaction),
                str(interaction.channel_id),
                kind,
                text,
            )
        except StoryError as exc:
            await send.answer(interaction, str(exc))
            return
        await self.story.flush_events()
        if ack.accepted:
            await send.answer(interaction, "Taken: the next scene is being written.")
        else:
            await send.answer(interaction, f"Your write-in is on the ballot as choice {ack.position}.")

    async def _control(self, interaction: discord.Interaction, name: str, done: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        method = {"undo": self.story.undo, "retry": self.story.retry, "end": self.story.end}[name]
        try:
            await method(interaction_actor(interaction), str(interaction.channel_id))
        except StoryError as exc:
            await send.answer(interaction, str(exc))
            return
        await self.story.flush_events()
        await send.answer(interaction, done)

    async def vote_from_button(self, interaction: discord.Interaction, turn_id: int, option: int) -> None:
        await tracked(self.bot, interaction, lambda: self._vote(interaction, turn_id, option))

    async def _vote(self, interaction: discord.Interaction, turn_id: int, option: int) -> None:
        try:
            ack = await self.story.vote(
                interaction_actor(interaction), str(interaction.channel_id), option, turn_id=turn_id
            )
        except StoryError as exc:
            await send.answer(interaction, str(exc))
            return
        changed = f" (was {ack.previous})" if ack.previous not in (None, ack.option) else ""
        await send.answer(interaction, f"Your vote: {ack.option}. {ack.label}{changed}")

    # ------------------------------------------------------------------------------------------- events
    async def _on_event(self, event: StoryEvent) -> None:
        if isinstance(event, BallotChanged):
            if event.turn.message_ref:
                self._edits.mark((event.channel_id, event.turn.turn_id))
        elif isinstance(event, SceneOpened):
            await self._post_scene(event)
        elif isinstance(event, SceneDelayed):
            await self._edit_message(event.channel_id, event.turn)
            await self._send(
                event.channel_id,
                f"The narrator needs a moment; the vote closes again in {round(event.retry_in_s)} s.",
            )
        elif isinstance(event, StoryPaused):
            await self._edit_message(event.channel_id, event.turn)
            await self._send(event.channel_id, "Nobody voted, so the story is paused. Vote to go on.")
        elif isinstance(event, StoryEnded):
            if event.last is not None:
                await self._edit_message(event.channel_id, event.last, buttons=False)
            why = "it reached its last scene" if event.reason == "last_scene" else f"ended by {event.by}"
            await self._send(event.channel_id, f"📕 The End — {event.scenes} scene(s); {why}.")

    async def _post_scene(self, event: SceneOpened) -> None:
        if event.previous is not None:
            self._edits.forget((event.channel_id, event.previous.turn_id))
            await self._edit_message(event.channel_id, event.previous, buttons=False)
        channel = self._channel(event.channel_id)
        if channel is None:
            return
        lead = ""
        if event.decision is not None:
            lead = f"**{decision_text(event.decision)}**"
        elif event.cause == "undo":
            lead = "⏪ Back one scene: vote again."
        elif event.cause == "retry":
            lead = "🔁 The scene, told again."
        content = send.truncate(send.defang(lead), send.MESSAGE_LIMIT) or None
        try:
            with send.automod_guard(lead):
                message = await channel.send(
                    content=content,
                    embed=scene_embed(event.turn),
                    view=scene_buttons(event.turn),
                    allowed_mentions=send.NO_MENTIONS,
                )
        except send.BlockedByAutoMod as refused:
            if content is None:
                raise  # the scene itself was refused: logged; it is announced again at the next start
            await self.bot.automod_refused(event.channel_id, refused)
            message = await channel.send(
                embed=scene_embed(event.turn),
                view=scene_buttons(event.turn),
                allowed_mentions=send.NO_MENTIONS,
            )
        await self.story.scene_posted(event.turn.turn_id, str(message.id))

    async def _edit_counts(self, key: tuple[str, int]) -> None:
        channel_id, turn_id = key
        turn = self.story.current(PLATFORM, channel_id)
        if turn is None or turn.turn_id != turn_id:
            return  # the scene moved on: its final state is edited by the SceneOpened handler
        await self._edit_message(channel_id, turn)

    async def _edit_message(self, channel_id: str, turn: TurnView, *, buttons: bool = True) -> None:
        channel = self._channel(channel_id)
        if channel is None or not turn.message_ref:
            return
        message = channel.get_partial_message(int(turn.message_ref))
        view = scene_buttons(turn) if buttons and turn.status in ("open", "paused") else None
        try:
            await message.edit(embed=scene_embed(turn), view=view, allowed_mentions=send.NO_MENTIONS)
        except discord.NotFound:
            log.info("story message %s in %s is gone; not updating it", turn.message_ref, channel_id)

    async def _send(self, channel_id: str, text: str) -> None:
        channel = self._channel(channel_id)
        if channel is not None:
            await send.send_to(channel, text)

    def _channel(self, channel_id: str) -> discord.PartialMessageable | None:
        try:
            return self.bot.get_partial_messageable(int(channel_id))
        except ValueError:
            log.warning("story: %r is not a Discord channel id", channel_id)
            return None


async def setup(bot: FamiliarDiscordBot) -> None:
    await bot.add_cog(StoryCog(bot))
