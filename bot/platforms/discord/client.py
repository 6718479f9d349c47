"""The Discord client: discord.py's `commands.Bot` built over the shared `Runtime`.

Features are extensions (modules with `async def setup(bot)`) listed once, in `EXTENSIONS`; `setup_hook` loads them
and syncs the slash commands to the configured guilds (instant) or globally (Discord takes up to an hour). Chat is
slash commands, mentions, replies and DMs, so there are no prefix commands. Nothing the bot sends can ping anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.platforms.discord import send
from bot.platforms.discord.rights import MissingRights
from bot.tasks import TaskTracker
from cogs.common.held import Place

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"  # the name this client reports its connection under (`runtime.metrics`)

# Every Discord feature, in load order. A feature adds its module here and nowhere else.
EXTENSIONS: tuple[str, ...] = (
    "cogs.chat.discord_cog",
    "cogs.polls.discord_cog",
    "cogs.story.discord_cog",
    "cogs.privacy.discord_cog",
    "cogs.admin.discord_cog",
    "cogs.teach.discord_cog",
)

GENERIC_ERROR = (
    "Something went wrong on my side while handling that command. It has been logged; please try again."
)
STALE_COMMAND = (
    "I don't know that command (or its options changed). Commands are being updated; try again shortly."
)


def build_intents(*, message_content: bool) -> discord.Intents:
    """Only what the features use. Message Content is privileged: enable it in the Developer Portal as well."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    intents.message_content = message_content
    return intents


class FamiliarCommandTree(app_commands.CommandTree):
    """The slash-command tree, with one error handler for every command: log with context, tell the user plainly."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        message = describe_error(interaction, error)
        await send.answer(interaction, message, ephemeral=True)


def describe_error(interaction: discord.Interaction, error: Exception) -> str:
    """Log `error` with who/where/what, and return what the user should read."""
    name = interaction.command.qualified_name if interaction.command else _raw_name(interaction)
    where = f"guild={interaction.guild_id} channel={interaction.channel_id} user={interaction.user.id}"
    if isinstance(error, MissingRights):
        log.info("/%s refused (%s) %s", name, error.permission, where)
        return str(error)
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f}s."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "That command only works in a server."
    if isinstance(error, app_commands.CheckFailure):
        log.info("/%s check failed %s: %s", name, where, error)
        return str(error) or "You can't use that command here."
    if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
        log.warning("/%s is unknown or out of date (%s) %s", name, type(error).__name__, where)
        return STALE_COMMAND
    if isinstance(error, app_commands.TransformerError):
        return f"I couldn't understand the value {error.value!r}."
    original = getattr(error, "original", error)
    log.error("/%s failed %s", name, where, exc_info=(type(original), original, original.__traceback__))
    return GENERIC_ERROR


def _raw_name(interaction: discord.Interaction) -> str:
    data: Any = interaction.data or {}
    return str(data.get("name") or data.get("custom_id") or "?")


class FamiliarDiscordBot(commands.Bot):
    """One Discord connection (see `FamiliarShardedDiscordBot` for several) over the process's runtime."""

    def __init__(self, runtime: Runtime, *, extensions: Sequence[str] = EXTENSIONS, **options: Any) -> None:
        config = runtime.config.discord
        super().__init__(
            command_prefix=commands.when_mentioned,  # unused: no prefix commands (see on_message)
            help_command=None,
            intents=build_intents(message_content=config.message_content),
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=FamiliarCommandTree,
            **options,
        )
        self.runtime = runtime
        self._extensions = tuple(extensions)
        self.synced_commands: list[app_commands.AppCommand] = []
        self.handlers = TaskTracker("discord")  # event handlers in flight; drained before disconnecting

    async def setup_hook(self) -> None:
        for name in self._extensions:
            await self.load_extension(name)
        if self.runtime.config.discord.sync_commands:
            await self.sync_commands()

    async def sync_commands(self) -> None:
        """Register the slash commands with Discord: per configured guild (instant) or globally."""
        guild_ids = self.runtime.config.discord.guild_ids
        try:
            if guild_ids:
                for guild_id in guild_ids:
                    guild = discord.Object(id=guild_id)
                    self.tree.copy_global_to(guild=guild)
                    self.synced_commands = await self.tree.sync(guild=guild)
                log.info("synced %d slash commands to %d guild(s)", len(self.synced_commands), len(guild_ids))
            else:
                self.synced_commands = await self.tree.sync()
                log.info(
                    "synced %d slash commands globally (may take up to an hour)", len(self.synced_commands)
                )
        except discord.Forbidden:
            log.error(
                "Discord refused to register slash commands: invite the bot with the applications.commands scope "
                "(see docs/discord.md). Mentions and DMs still work."
            )
        except discord.HTTPException as exc:
            log.error("registering slash commands failed (%s); they may be out of date", exc)

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: chat messages are handled by the chat cog's listener."""

    async def on_ready(self) -> None:
        log.info(
            "Discord: logged in as %s (%s) in %d server(s)",
            self.user,
            self.user and self.user.id,
            len(self.guilds),
        )
        self.runtime.metrics.platform(PLATFORM, connected=True)

    async def on_resumed(self) -> None:
        self.runtime.metrics.platform(PLATFORM, connected=True)

    async def on_disconnect(self) -> None:
        """The gateway socket closed; discord.py reconnects (and resumes) by itself."""
        detail = "stopped" if self.is_closed() else "reconnecting"
        self.runtime.metrics.platform(PLATFORM, connected=False, detail=detail)

    async def close(self) -> None:
        await super().close()
        self.runtime.metrics.platform(PLATFORM, connected=False, detail="stopped")

    async def automod_refused(self, channel_id: object, refused: send.BlockedByAutoMod) -> None:
        """The server's AutoMod refused a line the bot wrote (a poll announcement, a story decision): kept as held
        for moderators; the caller posts what it can without it, once."""
        place = Place("reply", PLATFORM, str(channel_id))
        await self.runtime.safety.hold(
            place, refused.text, ("the server's AutoMod refused it",), "discord-automod"
        )

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """An event handler raised: log it with the event's name; the bot carries on."""
        log.exception("Discord event %s failed", event_method)


class FamiliarShardedDiscordBot(FamiliarDiscordBot, commands.AutoShardedBot):
    """Several gateway connections in one process, for bots in many servers (`discord.sharded`)."""


def create_bot(runtime: Runtime, **options: Any) -> FamiliarDiscordBot:
    """The bot the config asks for: sharded or not."""
    config = runtime.config.discord
    if config.sharded:
        if config.shard_count:
            options.setdefault("shard_count", config.shard_count)
        return FamiliarShardedDiscordBot(runtime, **options)
    return FamiliarDiscordBot(runtime, **options)
