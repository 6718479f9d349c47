"""`!tune` and `!retrain` in Twitch chat (the broadcaster only): one line when it starts, one with the result; and
`!safety [block <word>]` (moderators): the safety settings and when texts were last held, never their words (the
channel reads the answer; the dashboard and `/admin safety` show them), or a word blocked from now on."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from twitchio.ext import commands

from bot.platforms.twitch.rights import actor_from_message
from cogs.privacy.twitch_component import reply

if TYPE_CHECKING:
    from bot.platforms.twitch.client import FamiliarTwitchBot

log = logging.getLogger(__name__)


class TwitchAdmin(commands.Component):
    def __init__(self, bot: FamiliarTwitchBot) -> None:
        self.bot = bot
        self.models = bot.runtime.models
        self._tasks: set[asyncio.Task[None]] = set()

    async def component_teardown(self) -> None:
        for task in self._tasks:
            task.cancel()

    @commands.command(name="tune")
    async def tune(self, ctx: commands.Context, option: str = "") -> None:
        """Train the character on its own material (card, dialogue files, teachings) and the consenting chat
        (the broadcaster only); an interrupted one resumes.

        !tune [fresh]
        """
        await self._train(ctx, "tune", fresh=option.lower() == "fresh")

    @commands.command(name="retrain")
    async def retrain(self, ctx: commands.Context, option: str = "") -> None:
        """Teach the character from consenting viewers' chat (the broadcaster only); an interrupted one resumes.

        !retrain [fresh]
        """
        await self._train(ctx, "retrain", fresh=option.lower() == "fresh")

    @commands.command(name="safety")
    async def safety(self, ctx: commands.Context, *, text: str = "") -> None:
        """The safety settings and the last held texts, or block a word from now on (moderators only).

        !safety [block <word>]
        """
        if ctx.message is None:
            return
        actor = actor_from_message(ctx.message)
        safety = self.bot.runtime.safety
        action, _, rest = text.strip().partition(" ")
        if action.lower() == "block":
            reply(self.bot, ctx, safety.block(actor, rest))
            return
        if not actor.is_moderator:
            reply(self.bot, ctx, "Only moderators can see the safety settings.")
            return
        if action:
            reply(self.bot, ctx, "Usage: !safety, or !safety block <word>")
            return
        reply(self.bot, ctx, " · ".join(safety.moderator.describe()))
        reply(self.bot, ctx, " · ".join(await safety.held_lines(show_text=False, held=3)))

    async def _train(self, ctx: commands.Context, kind: str, *, fresh: bool) -> None:
        """Start a tune or a retrain for the broadcaster: one line now, one with the result (figures included)."""
        if ctx.message is None:  # a channel-points redemption, not a chat command
            return
        actor = actor_from_message(ctx.message)
        if not actor.is_admin:
            reply(self.bot, ctx, f"Only the broadcaster can {kind} me.")
            return
        if self.models.running:
            reply(self.bot, ctx, self.models.busy_message())
            return
        reply(self.bot, ctx, f"{'Tuning' if kind == 'tune' else 'Retraining'} started; I'll say how it went.")
        train = self.models.tune if kind == "tune" else self.models.retrain

        async def run() -> None:
            result = await train(actor, fresh=fresh)
            reply(self.bot, ctx, result.message)

        task = asyncio.create_task(run(), name=f"twitch-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def setup(bot: FamiliarTwitchBot) -> None:
    await bot.add_component(TwitchAdmin(bot))
