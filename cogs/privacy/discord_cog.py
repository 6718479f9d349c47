"""Privacy on Discord: `/privacy consent on|off|status [include_history]`, `/privacy forget`, `/privacy export`
(answers only the asker).

Each command runs under the bot's `handlers` tracker, so a stop lets a deletion or an export finish first.
"""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING, Final, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.platforms.discord import send
from bot.platforms.discord.tracking import tracked

if TYPE_CHECKING:
    from bot.platforms.discord.client import FamiliarDiscordBot

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"


class PrivacyCog(
    commands.GroupCog,
    name="Privacy",
    group_name="privacy",
    group_description="Your data and training consent",
):
    def __init__(self, bot: FamiliarDiscordBot) -> None:
        self.bot = bot
        self.privacy = bot.runtime.privacy
        super().__init__()

    @app_commands.command(name="consent")
    @app_commands.describe(
        choice="on: your messages from now on may teach the character; off: none of them may",
        include_history="with on: also use the messages you wrote before (default: only those from now on)",
    )
    async def consent(
        self,
        interaction: discord.Interaction,
        choice: Literal["on", "off", "status"],
        include_history: bool = False,
    ) -> None:
        """Choose whether your conversations may be used to train the character."""
        await tracked(self.bot, interaction, lambda: self._consent(interaction, choice, include_history))

    @app_commands.command(name="forget")
    async def forget(self, interaction: discord.Interaction) -> None:
        """Delete everything the bot logged from you, and withdraw your training consent."""
        await tracked(self.bot, interaction, lambda: self._forget(interaction))

    @app_commands.command(name="export")
    async def export(self, interaction: discord.Interaction) -> None:
        """Get a JSON file of everything the bot keeps about you."""
        await tracked(self.bot, interaction, lambda: self._export(interaction))

    # ------------------------------------------------------------------------------------------- handlers
    async def _consent(self, interaction: discord.Interaction, choice: str, include_history: bool) -> None:
        user_id = str(interaction.user.id)
        if choice == "status":
            text = await self.privacy.status(PLATFORM, user_id)
        else:  # include_history means nothing with off: nothing is used then
            text = await self.privacy.set_consent(
                PLATFORM, user_id, choice == "on", include_history=include_history and choice == "on"
            )
        await send.answer(interaction, text, ephemeral=True)

    async def _forget(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.privacy.forget(PLATFORM, str(interaction.user.id))
        for conversation in report.conversations:  # memory is rebuilt from the (now clean) log on next use
            self.bot.runtime.chat.forget_conversation_cache(conversation)
        await send.answer(interaction, f"Forgotten: {report.summary()}.", ephemeral=True)

    async def _export(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await self.privacy.export(PLATFORM, str(interaction.user.id))
        payload = json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")
        file = discord.File(io.BytesIO(payload), filename=f"familiar-data-{interaction.user.id}.json")
        try:
            await interaction.followup.send(
                f"Your data: {len(data['messages'])} logged message(s) and your settings.",
                file=file,
                ephemeral=True,
                allowed_mentions=send.NO_MENTIONS,
            )
        except discord.HTTPException as exc:
            log.warning("privacy export for %s could not be sent: %s", interaction.user.id, exc)
            await send.answer(interaction, "Your export was too large to send here; ask the bot's owner.")


async def setup(bot: FamiliarDiscordBot) -> None:
    await bot.add_cog(PrivacyCog(bot))
