"""Model administration on Discord: `/admin tune`, `/admin retrain`, `/admin model status`, `/admin model rollback`,
and `/admin safety [block]` (moderators: the safety settings and the last held texts; block a word live).

Admins only (Manage Server or `discord.admin_ids`); anyone else gets a clear refusal. A tune or a retrain (the same
run: a tune learns from the character's own material and the log, a retrain needs the log) answers at once,
then posts a progress message in the channel and edits it as training goes (at most every EDIT_INTERVAL_S; lines that
arrive meanwhile fold into one trailing edit showing the latest), ending with the result; a channel message, unlike
an interaction follow-up, can still be edited after 15 minutes.

The commands run under the bot's `handlers` tracker (a stop waits for a rollback's swap); the retrain itself runs
on as a task of this cog, and is cancelled (its training process stopped) when the cog unloads at a stop: the job
is recorded as interrupted, and the next `/admin retrain` resumes it from its last checkpoint (`fresh` starts over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.platforms.discord import send
from bot.platforms.discord.rights import interaction_actor, require_admin, require_moderator
from bot.platforms.discord.tracking import tracked

if TYPE_CHECKING:
    from bot.platforms.discord.client import FamiliarDiscordBot

log = logging.getLogger(__name__)

EDIT_INTERVAL_S = 3.0  # progress edits per message, well inside Discord's edit rate limit


class ProgressMessage:
    """A channel message showing the latest progress line, edited at most every `interval_s`.

    A line arriving within the interval is not dropped: one trailing edit shows the latest line once the interval
    has passed. The final line is shown at once and ends the updates.
    """

    def __init__(
        self, message: discord.Message | None, title: str, *, interval_s: float = EDIT_INTERVAL_S
    ) -> None:
        self._message = message
        self._title = title
        self._interval_s = interval_s
        self._last_edit = -float("inf")
        self._latest = ""
        self._shown = ""
        self._final = False
        self._pending: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one edit at a time, in order

    async def update(self, line: str, *, final: bool = False) -> None:
        if self._message is None or self._final:
            return
        self._latest = line
        if final:
            self._final = True
            if self._pending is not None:
                self._pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pending
            await self._edit(line)
        elif self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._trail(), name="discord-retrain-progress")

    async def _trail(self) -> None:
        while self._latest != self._shown:
            wait = self._last_edit + self._interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._edit(self._latest)

    async def _edit(self, line: str) -> None:
        assert self._message is not None
        async with self._lock:
            self._last_edit = time.monotonic()
            self._shown = line
            try:
                await send.edit(self._message, f"{self._title}\n{line}")
            except discord.HTTPException as exc:
                log.warning("could not edit the retrain progress message: %s", exc)


class AdminCog(
    commands.GroupCog, name="Admin", group_name="admin", group_description="Run the character's model"
):
    model = app_commands.Group(name="model", description="The served model version")

    def __init__(self, bot: FamiliarDiscordBot) -> None:
        self.bot = bot
        self.models = bot.runtime.models
        self._tasks: set[asyncio.Task[None]] = set()
        self.edit_interval_s = EDIT_INTERVAL_S  # between progress edits
        super().__init__()

    async def cog_unload(self) -> None:
        for task in self._tasks:
            task.cancel()

    @app_commands.command(name="tune")
    @app_commands.describe(fresh="start over instead of resuming a run that a stop interrupted")
    @require_admin()
    async def tune(self, interaction: discord.Interaction, fresh: bool = False) -> None:
        """Train the character on its card, dialogue files and teachings, plus the log (admins only)."""
        await tracked(self.bot, interaction, lambda: self._train(interaction, "tune", fresh))

    @app_commands.command(name="retrain")
    @app_commands.describe(fresh="start over instead of resuming a retrain that a stop interrupted")
    @require_admin()
    async def retrain(self, interaction: discord.Interaction, fresh: bool = False) -> None:
        """Teach the character from consenting members' conversations (admins only)."""
        await tracked(self.bot, interaction, lambda: self._train(interaction, "retrain", fresh))

    @model.command(name="status")
    @require_admin()
    async def status(self, interaction: discord.Interaction) -> None:
        """Which model version is served, and the latest trained ones."""
        await send.answer(interaction, "\n".join(self.models.status()), ephemeral=True)

    @model.command(name="rollback")
    @app_commands.describe(
        version="vNNNN, or 'base' for no adapter (default: the previously promoted version)"
    )
    @require_admin()
    async def rollback(self, interaction: discord.Interaction, version: str | None = None) -> None:
        """Serve an earlier model version."""
        await tracked(self.bot, interaction, lambda: self._rollback(interaction, version))

    @app_commands.command(name="safety")
    @app_commands.describe(block="a word or short phrase to block from now on (until the bot restarts)")
    @require_moderator()
    async def safety(self, interaction: discord.Interaction, block: str | None = None) -> None:
        """The safety settings and the last held texts; block a word (moderators only)."""
        await tracked(self.bot, interaction, lambda: self._safety(interaction, block))

    # ------------------------------------------------------------------------------------------- handlers
    async def _safety(self, interaction: discord.Interaction, block: str | None) -> None:
        """Answered to the moderator alone (ephemeral): the held texts are shown with their words."""
        safety = self.bot.runtime.safety
        lines = [safety.block(interaction_actor(interaction), block)] if block is not None else []
        lines += await safety.status_lines(show_text=True)
        await send.answer(interaction, "\n".join(lines), ephemeral=True)

    async def _train(self, interaction: discord.Interaction, kind: str, fresh: bool) -> None:
        """`/admin tune` or `/admin retrain`: answer at once, then a progress message edited until the result."""
        actor = interaction_actor(interaction)
        if self.models.running:
            await send.answer(interaction, self.models.busy_message(), ephemeral=True)
            return
        title = "🔧 Tune" if kind == "tune" else "🔧 Retrain"
        await interaction.response.send_message(
            f"{'Tuning' if kind == 'tune' else 'Retraining'} started; progress follows in this channel.",
            allowed_mentions=send.NO_MENTIONS,
        )
        channel = interaction.channel
        message = None
        if isinstance(channel, discord.abc.Messageable):
            try:
                message = await channel.send(f"{title}: starting…", allowed_mentions=send.NO_MENTIONS)
            except discord.HTTPException as exc:
                log.warning("could not post the %s progress message: %s", kind, exc)
        progress = ProgressMessage(message, title, interval_s=self.edit_interval_s)
        train = self.models.tune if kind == "tune" else self.models.retrain

        async def run() -> None:
            result = await train(actor, on_progress=progress.update, fresh=fresh)
            icon = {"promoted": "✅", "rejected": "↩️"}.get(result.status, "⚠️")
            if message is not None:
                await progress.update(f"{icon} {result.message}", final=True)
            else:
                await send.answer(interaction, f"{icon} {result.message}", ephemeral=False)

        task = asyncio.create_task(run(), name=f"discord-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rollback(self, interaction: discord.Interaction, version: str | None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        message = await self.models.rollback(interaction_actor(interaction), version)
        await send.answer(interaction, message, ephemeral=True)


async def setup(bot: FamiliarDiscordBot) -> None:
    await bot.add_cog(AdminCog(bot))
