"""Chat on Discord: `/chat`, `/reset`, `/persona`, `/help`, and talking by @mention, reply or DM.

The cog only turns Discord events into `ChatMessage`s and `ChatReply`s into messages; who gets an answer, memory and
logging live in `ChatService`. Each reply carries 👍/👎/Regenerate buttons (a persistent view: the buttons work after
a restart, and Regenerate finds the latest reply in the log when it is no longer in memory); 👍/👎 reactions on a
reply count as ratings too. A message deleted on Discord is deleted from the log, and so is a reply any of whose
parts is deleted. Every handler runs under the bot's `handlers` tracker, so a stop waits for replies in flight.

A reply the moderation step held arrives as the character's deflection (`Outcome.HELD`): posted without buttons and
never logged as a reply. A reply the server's AutoMod refuses (`send.BlockedByAutoMod`) is recorded as held the
same way and the deflection is posted once in its place; a refused deflection is only logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.platforms.discord import send
from bot.platforms.discord.rights import MODERATOR_PERMISSION, MissingRights, interaction_actor
from bot.platforms.discord.streaming import LiveReply
from cogs.chat.service import ChatMessage, ChatReply, LoggedReply, Outcome, normalize_input

if TYPE_CHECKING:
    from bot.platforms.discord.client import FamiliarDiscordBot

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"
MAX_TRACKED_REPLIES = 1000  # conversations whose latest reply can be regenerated; the oldest are forgotten
RATING_EMOJI = {"👍": 1, "👎": -1}
COOLDOWN_EMOJI = "⏳"  # reaction on a mention that came too soon: quiet in a busy channel, still an answer
BUTTON_UP = "familiar:chat:rate:up"
BUTTON_DOWN = "familiar:chat:rate:down"
BUTTON_REGENERATE = "familiar:chat:regenerate"
STOPPING = "I'm restarting (or swamped) right now; try again in a moment."
AUTOMOD_REASON = "the server's AutoMod refused it"
AUTOMOD_SOURCE = "discord-automod"

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")


@dataclass(frozen=True)
class LatestReply:
    """The newest reply in a conversation: what it answered, who asked, and the Discord messages that show it."""

    message: ChatMessage
    asker_id: int
    message_ids: tuple[int, ...]


def conversation_of(channel: object, *, guild_id: int | None) -> tuple[str, str, str | None]:
    """(conversation id, channel id, thread id): one conversation per channel, per thread and per DM."""
    channel_id = getattr(channel, "id", 0)
    if guild_id is None:
        return f"discord:dm:{channel_id}", str(channel_id), None
    if isinstance(channel, discord.Thread):
        return f"discord:thread:{channel.id}", str(channel.parent_id), str(channel.id)
    return f"discord:{channel_id}", str(channel_id), None


def readable_content(message: discord.Message, bot_id: int) -> str:
    """The message's text as a person reads it: the bot's own mention removed, other mentions as names."""
    text = re.sub(rf"<@!?{bot_id}>", "", message.content)
    users = {u.id: u.display_name for u in message.mentions}
    roles = {r.id: r.name for r in message.role_mentions}
    channels = {c.id: c.name for c in message.channel_mentions}
    text = _USER_MENTION.sub(lambda m: "@" + users.get(int(m[1]), "someone"), text)
    text = _ROLE_MENTION.sub(lambda m: "@" + roles.get(int(m[1]), "role"), text)
    text = _CHANNEL_MENTION.sub(lambda m: "#" + channels.get(int(m[1]), "channel"), text)
    return text.strip()


def mention_names(text: str, guild: discord.Guild | None, client: discord.Client) -> str:
    """Raw mention tokens typed into a slash option (`<@id>`, `<@&id>`, `<#id>`) as plain names."""

    def user(m: re.Match[str]) -> str:
        found = (guild.get_member(int(m[1])) if guild else None) or client.get_user(int(m[1]))
        return "@" + (found.display_name if found else "someone")

    def role(m: re.Match[str]) -> str:
        found = guild.get_role(int(m[1])) if guild else None
        return "@" + (found.name if found else "role")

    def channel(m: re.Match[str]) -> str:
        found = client.get_channel(int(m[1]))
        return "#" + str(getattr(found, "name", None) or "channel")

    text = _USER_MENTION.sub(user, text)
    text = _ROLE_MENTION.sub(role, text)
    return _CHANNEL_MENTION.sub(channel, text)


def feedback_buttons() -> discord.ui.View:
    """The buttons under a reply, as a finished template: clicks reach the one persistent `FeedbackView`.

    A finished view is not stored per message by discord.py, so thousands of replies cost no memory.
    """
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(emoji="👍", style=discord.ButtonStyle.secondary, custom_id=BUTTON_UP))
    view.add_item(discord.ui.Button(emoji="👎", style=discord.ButtonStyle.secondary, custom_id=BUTTON_DOWN))
    view.add_item(
        discord.ui.Button(
            label="Regenerate", emoji="🔄", style=discord.ButtonStyle.secondary, custom_id=BUTTON_REGENERATE
        )
    )
    view.stop()
    return view


class FeedbackView(discord.ui.View):
    """Handles the reply buttons of every message, before and after restarts (registered in `cog_load`)."""

    def __init__(self, cog: ChatCog) -> None:
        super().__init__(timeout=None)
        self.cog = cog

    @discord.ui.button(emoji="👍", style=discord.ButtonStyle.secondary, custom_id=BUTTON_UP)
    async def rate_up(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.cog.rate_from_button(interaction, 1)

    @discord.ui.button(emoji="👎", style=discord.ButtonStyle.secondary, custom_id=BUTTON_DOWN)
    async def rate_down(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.cog.rate_from_button(interaction, -1)

    @discord.ui.button(
        label="Regenerate", emoji="🔄", style=discord.ButtonStyle.secondary, custom_id=BUTTON_REGENERATE
    )
    async def regenerate(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.cog.regenerate_from_button(interaction)

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item
    ) -> None:
        log.error(
            "button %s failed: guild=%s channel=%s user=%s",
            getattr(item, "custom_id", "?"),
            interaction.guild_id,
            interaction.channel_id,
            interaction.user.id,
            exc_info=error,
        )
        await send.answer(interaction, "Something went wrong with that button. It has been logged.")


def _can_reset(interaction: discord.Interaction) -> bool:
    """Everyone may reset a DM; in a server the conversation is shared, so it takes a moderator."""
    if interaction.guild_id is not None and not interaction_actor(interaction).is_moderator:
        raise MissingRights(MODERATOR_PERMISSION)
    return True


class ChatCog(commands.Cog, name="Chat"):
    def __init__(self, bot: FamiliarDiscordBot) -> None:
        self.bot = bot
        self.chat = bot.runtime.chat
        self.log = bot.runtime.log
        self.config = bot.runtime.config.discord
        self._latest: OrderedDict[str, LatestReply] = OrderedDict()

    async def cog_load(self) -> None:
        self.bot.add_view(FeedbackView(self))

    # ------------------------------------------------------------------------------------------- slash commands
    @app_commands.command(name="chat")
    @app_commands.describe(message="What you say to the character")
    async def chat_command(self, interaction: discord.Interaction, message: str) -> None:
        """Talk to the character."""
        await self._tracked(interaction, lambda: self._chat_command(interaction, message))

    async def _chat_command(self, interaction: discord.Interaction, message: str) -> None:
        if not self._channel_allowed(interaction.channel, guild_id=interaction.guild_id):
            await send.answer(interaction, "I don't chat in this channel.")
            return
        content = normalize_input(message)
        if not content:
            await send.answer(interaction, "Say something and I'll answer.")
            return
        wait = self.chat.cooldown_left(PLATFORM, str(interaction.user.id))
        if wait > 0:
            await send.answer(interaction, _slow_down(wait))
            return
        await interaction.response.defer(thinking=True)  # within Discord's 3 s; generation takes longer
        conversation_id, channel_id, thread_id = conversation_of(
            interaction.channel, guild_id=interaction.guild_id
        )
        msg = ChatMessage(
            platform=PLATFORM,
            conversation_id=conversation_id,
            channel_id=channel_id,
            thread_id=thread_id,
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
            author_id=str(interaction.user.id),
            author_name=interaction.user.display_name,
            content=content,
        )
        reply = await self.chat.respond(msg)
        if reply.outcome is Outcome.COOLDOWN:
            await send.followup(interaction, _slow_down(reply.retry_after_s))
            return
        if reply.outcome is Outcome.IGNORED or (reply.outcome is Outcome.HELD and not reply.text):
            # The message itself was flagged (the only way a non-empty /chat is ignored): answer without it.
            await send.followup(interaction, self.chat.safety.deflection)
            return
        # The channel sees the answer, not the command's option: quote what was asked, in one short line (never
        # a message the moderation step held).
        asked = None
        if reply.outcome is not Outcome.HELD:
            asked = send.quote_line(mention_names(content, interaction.guild, self.bot))
        try:
            sent = await send.followup(
                interaction, reply.text, note=reply.note, view=self._buttons(reply), quote=asked
            )
        except send.BlockedByAutoMod:
            held = await self.chat.hold_sent(reply, reasons=(AUTOMOD_REASON,), source=AUTOMOD_SOURCE)
            text = held.text or "Discord's AutoMod refused my answer."  # the "thinking…" must end somehow
            await self._say_once(send.followup(interaction, text), interaction.channel_id)
            return
        await self._remember(reply, interaction.user.id, [m.id for m in sent])

    @app_commands.command(name="reset")
    @app_commands.check(_can_reset)
    async def reset_command(self, interaction: discord.Interaction) -> None:
        """Make the character forget this conversation (channel, thread or DM)."""
        await self._tracked(interaction, lambda: self._reset(interaction))

    async def _reset(self, interaction: discord.Interaction) -> None:
        conversation_id, channel_id, _ = conversation_of(interaction.channel, guild_id=interaction.guild_id)
        await self.chat.reset(conversation_id, platform=PLATFORM, channel_id=channel_id)
        self._latest.pop(conversation_id, None)
        await send.answer(
            interaction,
            f"*{self.chat.card.name} forgets this conversation and starts afresh.*",
            ephemeral=False,
        )

    @app_commands.command(name="persona")
    async def persona_command(self, interaction: discord.Interaction) -> None:
        """Show who the character is."""
        card = self.chat.card
        lines = card.summary().splitlines()
        title, details = (lines[0], "\n".join(lines[1:])) if lines else (card.name, "")
        fields = []
        greeting = card.greeting(interaction.user.display_name)
        if greeting:
            fields.append(("Greeting", greeting))
        await send.answer(interaction, embed=send.embed(title=title, description=details, fields=fields))

    @app_commands.command(name="help")
    async def help_command(self, interaction: discord.Interaction) -> None:
        """List the commands and the ways to talk to the character."""
        commands_ = sorted(
            self.bot.tree.get_commands(type=discord.AppCommandType.chat_input), key=lambda c: c.name
        )
        lines = [f"**/{c.name}** — {getattr(c, 'description', '') or '…'}" for c in commands_]
        menus = sorted(c.name for c in self.bot.tree.get_commands(type=discord.AppCommandType.message))
        if menus:  # message menu commands (e.g. Teach): no slash, found on a message
            lines.append(f"On a message (⋯ → Apps): {', '.join(f'**{m}**' for m in menus)}")
        ways = []
        if self.config.chat_on_mention:
            ways.append(
                f"mention me (@{self.bot.user.display_name if self.bot.user else 'me'}) with a message"
            )
        if self.config.chat_on_reply:
            ways.append("reply to one of my messages")
        if self.config.chat_in_dms:
            ways.append("send me a direct message")
        if ways:
            lines += ["", "You can also " + ", ".join(ways) + "."]
        if self.config.feedback_buttons:
            lines.append("Use 👍/👎 under a reply to rate it, 🔄 to get another answer.")
        await send.answer(
            interaction,
            embed=send.embed(title=f"{self.chat.card.name}: commands", description="\n".join(lines)),
        )

    # ------------------------------------------------------------------------------------------- chat by message
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        with self.bot.handlers.track() as accepted:
            if accepted:  # not while stopping: the message is simply not answered
                await self._on_message(message)

    async def _on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None or self.bot.user is None:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        if not self._directed_at_me(message):
            return
        if not self._channel_allowed(message.channel, guild_id=message.guild.id if message.guild else None):
            return
        content = readable_content(message, self.bot.user.id)
        if not normalize_input(content):
            return
        if self.chat.cooldown_left(PLATFORM, str(message.author.id)) > 0:
            await self._react(message, COOLDOWN_EMOJI)
            return
        guild_id = message.guild.id if message.guild else None
        conversation_id, channel_id, thread_id = conversation_of(message.channel, guild_id=guild_id)
        reference = message.reference.message_id if message.reference else None
        msg = ChatMessage(
            platform=PLATFORM,
            conversation_id=conversation_id,
            channel_id=channel_id,
            thread_id=thread_id,
            guild_id=str(guild_id) if guild_id else None,
            author_id=str(message.author.id),
            author_name=message.author.display_name,
            content=content,
            platform_message_id=str(message.id),
            reply_to_platform_id=str(reference) if reference else None,
        )
        live = LiveReply(message) if self.config.stream_replies else None
        async with _typing(message.channel):
            reply = await self.chat.respond(msg, on_text=live.update if live is not None else None)
        if reply.outcome is Outcome.IGNORED:
            return
        if reply.outcome is Outcome.COOLDOWN:
            await self._react(message, COOLDOWN_EMOJI)
            return
        try:
            sent = await self._post(message, live, reply)
        except send.BlockedByAutoMod:
            held = await self.chat.hold_sent(reply, reasons=(AUTOMOD_REASON,), source=AUTOMOD_SOURCE)
            await self._say_once(self._post(message, live, held), message.channel.id)
            return
        except discord.Forbidden:
            log.warning("no permission to answer in channel %s (guild %s)", message.channel.id, guild_id)
            return
        await self._remember(reply, message.author.id, [m.id for m in sent])

    async def _post(
        self, message: discord.Message, live: LiveReply | None, reply: ChatReply
    ) -> list[discord.Message]:
        """Post `reply` to `message`: as the last edit of its live preview, or as a reply."""
        if live is not None and live.started:
            return await live.finish(reply.text, note=reply.note, view=self._buttons(reply))
        if not reply.text:
            return []
        return await send.send_reply(message, reply.text, note=reply.note, view=self._buttons(reply))

    async def _say_once(self, posting: Awaitable[object], channel_id: object) -> None:
        """Post the deflection in place of a refused reply: once; a refusal of it too is only logged."""
        try:
            await posting
        except discord.HTTPException as exc:
            log.warning("the deflection in channel %s was not posted either: %s", channel_id, exc)

    def _directed_at_me(self, message: discord.Message) -> bool:
        me = self.bot.user
        assert me is not None
        if message.guild is None:
            return self.config.chat_in_dms
        if self.config.chat_on_mention and any(u.id == me.id for u in message.mentions):
            return True
        if self.config.chat_on_reply and message.reference is not None:
            resolved = message.reference.resolved
            if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
                return True
        return False

    def _channel_allowed(self, channel: object, *, guild_id: int | None) -> bool:
        if guild_id is None:
            return self.config.chat_in_dms
        ids = {getattr(channel, "id", None), getattr(channel, "parent_id", None)} - {None}
        if ids & set(self.config.denied_channels):
            return False
        return not self.config.allowed_channels or bool(ids & set(self.config.allowed_channels))

    # ------------------------------------------------------------------------------------------- feedback
    async def rate_from_button(self, interaction: discord.Interaction, rating: int) -> None:
        await self._tracked(interaction, lambda: self._rate_from_button(interaction, rating))

    async def _rate_from_button(self, interaction: discord.Interaction, rating: int) -> None:
        if interaction.message is None:
            return
        rows = await self.log.set_rating(PLATFORM, str(interaction.message.id), rating)
        if rows:
            await send.answer(interaction, "Thanks, noted 👍" if rating > 0 else "Thanks, noted 👎")
        else:
            await send.answer(interaction, "I can't rate that message any more (it is no longer in my log).")

    async def regenerate_from_button(self, interaction: discord.Interaction) -> None:
        await self._tracked(interaction, lambda: self._regenerate(interaction))

    async def _regenerate(self, interaction: discord.Interaction) -> None:
        if interaction.message is None:
            return
        conversation_id, _, _ = conversation_of(interaction.channel, guild_id=interaction.guild_id)
        latest = self._latest.get(conversation_id)
        if latest is None:  # not answered since the start (or forgotten): the log knows the latest reply
            logged = await self.chat.latest_reply(PLATFORM, conversation_id, str(interaction.message.id))
            latest = _from_log(logged) if logged is not None else None
        if latest is None or latest.message_ids[-1] != interaction.message.id:
            await send.answer(interaction, "I can only redo my latest reply in this conversation.")
            return
        if interaction.user.id != latest.asker_id and not interaction_actor(interaction).is_moderator:
            await send.answer(
                interaction, "Only the person I answered (or a moderator) can regenerate this reply."
            )
            return
        await interaction.response.defer()  # an update of the message; the button shows it is working
        reply = await self.chat.regenerate(
            latest.message, limit=send.MESSAGE_LIMIT, requested_by=str(interaction.user.id)
        )
        if reply.outcome is Outcome.COOLDOWN:
            await send.answer(interaction, _slow_down(reply.retry_after_s))
            return
        if reply.outcome is not Outcome.REPLIED:
            text = {
                Outcome.BUSY: reply.text,
                Outcome.HELD: "I'd rather not say what came to mind; my first answer stays.",
            }.get(reply.outcome, "The conversation has moved on; I can't redo that.")
            await send.answer(interaction, text)
            return
        try:
            with send.automod_guard(reply.text):
                await interaction.edit_original_response(
                    content=send.truncate(send.defang(reply.text), send.MESSAGE_LIMIT),
                    view=self._buttons(reply),
                    allowed_mentions=send.NO_MENTIONS,
                )
        except send.BlockedByAutoMod:
            await self.chat.hold_sent(reply, reasons=(AUTOMOD_REASON,), source=AUTOMOD_SOURCE)
            await send.answer(interaction, "Discord's AutoMod refused my new answer; the first one stays.")
            return
        # The old row (with all its parts) leaves the log before its extra messages leave Discord, so their
        # deletion events find nothing left to delete.
        await self.log.delete_platform_message(PLATFORM, str(interaction.message.id))
        # A long first answer took several messages; the new one fits in one.
        for extra in latest.message_ids[:-1]:
            with contextlib.suppress(discord.HTTPException):
                await interaction.channel.get_partial_message(extra).delete()  # type: ignore[union-attr]
        await self._remember(reply, latest.asker_id, [interaction.message.id])

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        with self.bot.handlers.track() as accepted:
            if accepted:
                await self._rate_from_reaction(payload, add=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        with self.bot.handlers.track() as accepted:
            if accepted:
                await self._rate_from_reaction(payload, add=False)

    async def _rate_from_reaction(self, payload: discord.RawReactionActionEvent, *, add: bool) -> None:
        rating = RATING_EMOJI.get(str(payload.emoji))
        me = self.bot.user
        if rating is None or me is None or payload.user_id == me.id:
            return
        if payload.message_author_id is not None and payload.message_author_id != me.id:
            return
        if payload.member is not None and payload.member.bot:
            return
        await self.log.set_rating(PLATFORM, str(payload.message_id), rating if add else None)

    # ------------------------------------------------------------------------------------------- deletions
    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        with self.bot.handlers.track():  # counted so a stop waits for it; a deletion is honoured even then
            await self._forget_messages([payload.message_id], payload.channel_id, payload.guild_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        with self.bot.handlers.track():
            await self._forget_messages(sorted(payload.message_ids), payload.channel_id, payload.guild_id)

    async def _forget_messages(self, message_ids: list[int], channel_id: int, guild_id: int | None) -> None:
        deleted = 0
        for message_id in message_ids:
            deleted += await self.log.delete_platform_message(PLATFORM, str(message_id))
        if not deleted:
            return
        channel = self.bot.get_channel(channel_id) or discord.Object(id=channel_id)
        conversation_id, _, _ = conversation_of(channel, guild_id=guild_id)
        self.chat.forget_conversation_cache(conversation_id)  # memory is re-read from the log, without them
        latest = self._latest.get(conversation_id)
        if latest is not None and set(latest.message_ids) & set(message_ids):
            del self._latest[conversation_id]
        log.info("deleted %d logged message(s) removed on Discord in channel %s", deleted, channel_id)

    # ------------------------------------------------------------------------------------------- helpers
    async def _tracked(self, interaction: discord.Interaction, work: Callable[[], Awaitable[None]]) -> None:
        """Run an interaction's work as a handler a stop waits for; while stopping (or swamped), say so instead."""
        with self.bot.handlers.track() as accepted:
            if accepted:
                await work()
                return
        await send.answer(interaction, STOPPING)

    def _buttons(self, reply: ChatReply) -> discord.ui.View | None:
        return (
            feedback_buttons() if self.config.feedback_buttons and reply.outcome is Outcome.REPLIED else None
        )

    async def _remember(self, reply: ChatReply, asker_id: int, message_ids: list[int]) -> None:
        if reply.outcome is not Outcome.REPLIED or not message_ids or reply.message is None:
            return
        ids = [str(i) for i in message_ids]
        await self.chat.record_sent(reply, platform_message_id=ids[-1], parts=ids)
        conversation_id = reply.message.conversation_id
        self._latest[conversation_id] = LatestReply(reply.message, asker_id, tuple(message_ids))
        self._latest.move_to_end(conversation_id)
        while len(self._latest) > MAX_TRACKED_REPLIES:
            self._latest.popitem(last=False)

    async def _react(self, message: discord.Message, emoji: str) -> None:
        try:
            await message.add_reaction(emoji)
        except discord.HTTPException as exc:  # no Add Reactions permission, or the message is gone
            log.debug("could not react to %s: %s", message.id, exc)


def _from_log(logged: LoggedReply) -> LatestReply | None:
    try:
        asker_id = int(logged.message.author_id)
        message_ids = tuple(int(i) for i in logged.part_ids)
    except ValueError:  # not a Discord id: not a row this cog wrote
        return None
    return LatestReply(logged.message, asker_id, message_ids)


def _slow_down(seconds: float) -> str:
    return f"Slow down: try again in {max(1, math.ceil(seconds))}s."


@contextlib.asynccontextmanager
async def _typing(channel: discord.abc.Messageable) -> AsyncIterator[None]:
    """Show "typing…" while the block runs; a channel where the bot may not type just shows nothing."""
    typing = channel.typing()
    try:
        await typing.__aenter__()
    except discord.HTTPException as exc:
        log.debug("typing indicator failed: %s", exc)
        yield
        return
    try:
        yield
    finally:
        await typing.__aexit__(None, None, None)


async def setup(bot: FamiliarDiscordBot) -> None:
    await bot.add_cog(ChatCog(bot))
