"""Teaching on Discord: a message menu command ("Teach Wick") on any of the character's replies opens a form for
the reply it should have given; the answer is ephemeral.

Moderators only (Manage Messages, or the configured admins); anyone else is told so without a form. The form is
prefilled with the logged reply (when it fits the form) for small corrections, and it is refused before it opens when
the message is not one of the character's logged chat replies. The submission is checked again by `TeachService`
(rights, length, the reply still logged). Forms live in memory: one left open past `FORM_TIMEOUT_S`, or across a
restart, no longer submits (Discord then says the interaction failed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.platforms.discord import send
from bot.platforms.discord.rights import interaction_actor
from bot.platforms.discord.tracking import tracked
from cogs.teach.service import MAX_TAUGHT_CHARS

if TYPE_CHECKING:
    from bot.platforms.discord.client import FamiliarDiscordBot

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"
MENU_NAME_MAX: Final = 32  # Discord's limit on a context-menu command's name
MENU_FALLBACK: Final = "Teach the character"
FORM_TITLE_MAX: Final = 45  # Discord's limits on a modal's title and a text input's label
FORM_TIMEOUT_S: Final = 15 * 60.0  # an open form is forgotten after this (an interaction token lasts as long)


def menu_name(character: str) -> str:
    """The menu command's name: "Teach Wick", or `MENU_FALLBACK` when the name is empty or would make it too long."""
    name = f"Teach {' '.join(character.split())}"
    return name if character.strip() and len(name) <= MENU_NAME_MAX else MENU_FALLBACK


class TeachForm(discord.ui.Modal):
    """The form a moderator fills in: the reply the character should have given to one message."""

    def __init__(self, cog: TeachCog, *, message_id: int, original: str) -> None:
        who = cog.teach.character
        super().__init__(title=send.truncate(f"Teach {who}", FORM_TITLE_MAX), timeout=FORM_TIMEOUT_S)
        self.cog = cog
        self.message_id = message_id
        self.reply: discord.ui.TextInput[TeachForm] = discord.ui.TextInput(
            label=send.truncate(f"What {who} should have said", FORM_TITLE_MAX),
            style=discord.TextStyle.paragraph,
            max_length=MAX_TAUGHT_CHARS,
            default=original if len(original) <= MAX_TAUGHT_CHARS else None,
        )
        self.add_item(self.reply)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await tracked(
            self.cog.bot, interaction, lambda: self.cog.submit(interaction, self.message_id, self.reply.value)
        )

    # discord.py's Modal.on_error drops BaseView's `item` argument; this overrides the Modal's.
    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        log.error(
            "teach form failed: guild=%s channel=%s user=%s message=%s",
            interaction.guild_id,
            interaction.channel_id,
            interaction.user.id,
            self.message_id,
            exc_info=error,
        )
        await send.answer(interaction, "Something went wrong with that form. It has been logged.")


class TeachCog(commands.Cog, name="Teach"):
    def __init__(self, bot: FamiliarDiscordBot) -> None:
        self.bot = bot
        self.teach = bot.runtime.teach
        self.menu = app_commands.ContextMenu(name=menu_name(self.teach.character), callback=self.teach_menu)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def teach_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Give the reply the character should have given (moderators)."""
        await tracked(self.bot, interaction, lambda: self._open_form(interaction, message))

    async def _open_form(self, interaction: discord.Interaction, message: discord.Message) -> None:
        who = self.teach.character
        if not interaction_actor(interaction).is_moderator:
            await send.answer(interaction, f"Only moderators (Manage Messages) can teach {who}.")
            return
        me = self.bot.user
        if me is None or message.author.id != me.id:
            await send.answer(
                interaction, f"That message is not {who}'s: teaching works on {who}'s own replies."
            )
            return
        original = await self.teach.reply_text(PLATFORM, str(message.id))
        if original is None:
            await send.answer(
                interaction,
                f"That message is not one of {who}'s chat replies in the log (or it was deleted since), "
                "so there is nothing to correct.",
            )
            return
        await interaction.response.send_modal(TeachForm(self, message_id=message.id, original=original))

    async def submit(self, interaction: discord.Interaction, message_id: int, text: str) -> None:
        result = await self.teach.teach(
            interaction_actor(interaction), text, reply_message_id=str(message_id)
        )
        await send.answer(interaction, result.message)


async def setup(bot: FamiliarDiscordBot) -> None:
    await bot.add_cog(TeachCog(bot))
