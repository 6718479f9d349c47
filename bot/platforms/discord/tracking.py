"""Run a feature's Discord handler under the client's `handlers` tracker, so a stop waits for it (bot/tasks.py).

Slash commands and buttons that do work (generation, store writes) go through `tracked`: while the bot is stopping
(or swamped) the work is not started and the person is told to try again, instead of meeting a closed store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.platforms.discord import send

if TYPE_CHECKING:
    from bot.platforms.discord.client import FamiliarDiscordBot

STOPPING = "I'm restarting (or swamped) right now; try again in a moment."


async def tracked(
    bot: FamiliarDiscordBot, interaction: discord.Interaction, work: Callable[[], Awaitable[object]]
) -> None:
    """Run `work()` as a handler a stop waits for; while stopping (or swamped), answer STOPPING instead."""
    with bot.handlers.track() as accepted:
        if accepted:
            await work()
            return
    await send.answer(interaction, STOPPING, ephemeral=True)
