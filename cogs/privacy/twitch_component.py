"""Privacy in Twitch chat: `!consent on|off`, `!forget`. Answers go through the bot's paced sender."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from twitchio.ext import commands

from bot.platforms.twitch.pacing import Job

if TYPE_CHECKING:
    from bot.platforms.twitch.client import FamiliarTwitchBot

log = logging.getLogger(__name__)

PLATFORM: Final = "twitch"


def reply(bot: FamiliarTwitchBot, ctx: commands.Context, text: str) -> None:
    """Queue `text` as a reply to the command's message (the pacer decides when it may go out)."""
    if ctx.message is not None:  # None only for a channel-points redemption, which runs no command here
        bot.pacer.submit(Job.reply(ctx.message, text))


class TwitchPrivacy(commands.Component):
    def __init__(self, bot: FamiliarTwitchBot) -> None:
        self.bot = bot
        self.privacy = bot.runtime.privacy

    @commands.command(name="consent")
    async def consent(self, ctx: commands.Context, choice: str = "status") -> None:
        """May your chat messages be used to train the character?

        !consent on|off|status
        """
        choice = choice.lower()
        user_id = ctx.chatter.id
        if choice in ("on", "off"):
            text = await self.privacy.set_consent(PLATFORM, user_id, choice == "on")
        elif choice == "status":
            text = await self.privacy.status(PLATFORM, user_id)
        else:
            text = "Usage: !consent on|off|status"
        reply(self.bot, ctx, text.replace("`", ""))

    @commands.command(name="forget")
    async def forget(self, ctx: commands.Context) -> None:
        """Delete everything the bot logged from you and withdraw your training consent.

        !forget
        """
        report = await self.privacy.forget(PLATFORM, ctx.chatter.id)
        for conversation in report.conversations:
            self.bot.runtime.chat.forget_conversation_cache(conversation)
        self.bot.pacer.discard(ctx.broadcaster.id, author_id=ctx.chatter.id)
        reply(self.bot, ctx, f"Forgotten: {report.summary()}.")


async def setup(bot: FamiliarTwitchBot) -> None:
    await bot.add_component(TwitchPrivacy(bot))
