"""`!teach <better reply>` in Twitch chat: a moderator (or the broadcaster) corrects the character's last reply in
the channel. Answers go through the bot's paced sender, as replies to the command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from twitchio.ext import commands

from bot.platforms.twitch.rights import actor_from_message
from cogs.chat.twitch_component import conversation_id
from cogs.privacy.twitch_component import reply
from cogs.teach.service import TeachStatus

if TYPE_CHECKING:
    from bot.platforms.twitch.client import FamiliarTwitchBot

USAGE: Final = "Usage: !teach <the reply {character} should have given to its last one here>"


class TwitchTeach(commands.Component):
    def __init__(self, bot: FamiliarTwitchBot) -> None:
        self.bot = bot
        self.teach = bot.runtime.teach

    @commands.command(name="teach")
    async def teach_command(self, ctx: commands.Context[FamiliarTwitchBot], *, text: str = "") -> None:
        """Give the reply the character should have given to its last reply in this channel (moderators).

        !teach <better reply>
        """
        if ctx.message is None:  # a channel-points redemption, not a chat command
            return
        result = await self.teach.teach(
            actor_from_message(ctx.message),
            text,
            conversation_id=conversation_id(ctx.broadcaster.name or ctx.broadcaster.id),
        )
        if result.status is TeachStatus.EMPTY:
            reply(self.bot, ctx, USAGE.format(character=self.teach.character))
            return
        reply(self.bot, ctx, result.message)


async def setup(bot: FamiliarTwitchBot) -> None:
    await bot.add_component(TwitchTeach(bot))
