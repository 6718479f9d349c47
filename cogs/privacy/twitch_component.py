"""Privacy in Twitch chat: `!consent on|off|status|history`, `!forget`. Answers go through the bot's paced sender."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from twitchio.ext import commands

from bot.platforms.twitch.pacing import Job
from cogs.privacy.service import parse_choice

if TYPE_CHECKING:
    from bot.platforms.twitch.client import FamiliarTwitchBot

log = logging.getLogger(__name__)

PLATFORM: Final = "twitch"
USAGE: Final = "Usage: !consent on|off|status (on: your messages from now on), or !consent history to include earlier ones"


def reply(bot: FamiliarTwitchBot, ctx: commands.Context, text: str) -> None:
    """Queue `text` as a reply to the command's message (the pacer decides when it may go out)."""
    if ctx.message is not None:  # None only for a channel-points redemption, which runs no command here
        bot.pacer.submit(Job.reply(ctx.message, text))


class TwitchPrivacy(commands.Component):
    def __init__(self, bot: FamiliarTwitchBot) -> None:
        self.bot = bot
        self.privacy = bot.runtime.privacy

    @commands.command(name="consent")
    async def consent(self, ctx: commands.Context, *, text: str = "") -> None:
        """May your chat messages be used to train the character? `on` counts those from now on; `history` (or
        `all`, `on history`) your earlier ones too.

        !consent on|off|status|history
        """
        user_id = ctx.chatter.id
        parsed = parse_choice(text)
        if parsed is None:
            answer = USAGE
        elif parsed[0] == "status":
            answer = await self.privacy.status(PLATFORM, user_id)
        else:
            choice, include_history = parsed
            answer = await self.privacy.set_consent(
                PLATFORM, user_id, choice == "on", include_history=include_history
            )
        reply(self.bot, ctx, answer.replace("`", ""))

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
