"""Chat in Twitch: answer `@botname ...` and the configured command (default `!ask ...`) in character.

Each directed message becomes a pacer `Job`; the reply is composed only when the bot may send again, and goes out as
a reply to the viewer's message. Moderators' deletions (one message, or all of a user's) are removed from the log.
A reply the moderation step held comes as the deflection (never logged as a reply); one Twitch AutoMod would not
permit (`[safety] twitch_automod_check`) is replaced by the deflection the same way.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final

from twitchio.ext import commands

from bot.platforms.twitch.pacing import TWITCH_MAX_CHARS, Job
from bot.platforms.twitch.rights import is_elevated
from cogs.chat.service import ChatMessage, ChatReply, Outcome

if TYPE_CHECKING:
    import twitchio

    from bot.platforms.twitch.client import FamiliarTwitchBot

log = logging.getLogger(__name__)

PLATFORM: Final = "twitch"


def conversation_id(channel_login: str) -> str:
    """All of a channel's chat is one conversation: the character remembers the room, not each viewer."""
    return f"twitch:{channel_login.lower()}"


def directed_text(
    text: str,
    *,
    bot_login: str,
    command: str,
    answer_mentions: bool,
    mentioned: bool = False,
    char_name: str = "",
) -> str | None:
    """What the viewer asked the bot, or None when the message is not for the bot.

    `!ask what now?` -> "what now?"; `@bot hi` -> "hi"; `so @bot, hi` -> "so Wick, hi" (the mention becomes the
    character's name). `mentioned` is True when Twitch marked a mention of the bot in the message's fragments.
    """
    stripped = text.strip()
    if command:
        head, _, rest = stripped.partition(" ")
        if head.casefold() == command.casefold():
            return rest.strip()
    if not answer_mentions or not bot_login:
        return None
    pattern = re.compile(rf"@{re.escape(bot_login)}\b[,:]?", re.IGNORECASE)
    if not (mentioned or pattern.search(stripped)):
        return None
    if pattern.match(stripped):
        stripped = pattern.sub("", stripped, count=1)
    return pattern.sub(char_name, stripped).strip()


class _Answer:
    """One directed message on its way through the pacer: compose the reply, then log it once sent."""

    def __init__(self, component: TwitchChat, message: ChatMessage) -> None:
        self._component = component
        self._message = message
        self._reply: ChatReply | None = None

    async def compose(self) -> str | None:
        reply = await self._component.chat.respond(self._message, limit=TWITCH_MAX_CHARS)
        if reply.outcome is Outcome.COOLDOWN:
            return None  # a chat line saying "wait" would cost a send slot: stay quiet
        if reply.outcome in (Outcome.REPLIED, Outcome.BUSY, Outcome.HELD) and reply.text:
            self._reply = reply
            return reply.text
        return None

    async def on_held(self, text: str) -> str | None:
        """Twitch AutoMod would not permit the reply (the pacer recorded it): the deflection instead, once."""
        reply, self._reply = self._reply, None
        if reply is None or reply.outcome is not Outcome.REPLIED:
            return None
        held = await self._component.chat.hold_sent(reply, reasons=(), source="twitch-automod")
        return held.text or None

    async def on_sent(self, message_id: str | None, text: str) -> None:
        if self._reply is not None:  # only a REPLIED reply is logged (record_sent checks)
            await self._component.chat.record_sent(self._reply, platform_message_id=message_id, text=text)


class TwitchChat(commands.Component):
    """Chat with the character in Twitch: mention the bot, or use the chat command."""

    def __init__(self, bot: FamiliarTwitchBot) -> None:
        self.bot = bot
        self.chat = bot.runtime.chat
        self.settings = bot.settings
        self._ignored = frozenset(u.lower() for u in self.settings.ignore_users)

    @commands.Component.listener()
    async def event_message(self, payload: twitchio.ChatMessage) -> None:
        try:
            with self.bot.handlers.track() as accepted:
                if accepted:  # not while the bot is stopping
                    self._on_message(payload)
        except Exception:
            log.exception(
                "Twitch: handling message %s in %s failed",
                getattr(payload, "id", "?"),
                payload.broadcaster.name,
            )

    def _on_message(self, payload: twitchio.ChatMessage) -> None:
        chatter = payload.chatter
        channel_id = payload.broadcaster.id
        if chatter.id == self.bot.bot_id:
            # Our own message echoed back: its badges tell whether we may send 100 per window here instead of 20.
            self.bot.pacer.set_elevated(channel_id, is_elevated(payload.badges))
            return
        if not self.bot.chats_in(payload):
            return  # a channel we do not chat in, or shared chat from another channel
        if (chatter.name or "").lower() in self._ignored:
            return  # another bot
        text = payload.text or ""
        reply = payload.reply
        if reply is not None:
            # Twitch puts "@parent " in front of a reply; a reply to the bot is a message for the bot.
            if reply.parent_user.id == self.bot.bot_id:
                text = re.sub(
                    rf"^@{re.escape(reply.parent_user.name or '')}\s*", "", text, flags=re.IGNORECASE
                )
                text = f"@{self.bot.bot_login} {text}"
            else:
                text = text.removeprefix(f"@{reply.parent_user.name} ")
        mentioned = any(
            f.type == "mention" and f.mention is not None and f.mention.id == self.bot.bot_id
            for f in payload.fragments
        )
        content = directed_text(
            text,
            bot_login=self.bot.bot_login,
            command=self.settings.command,
            answer_mentions=self.settings.answer_mentions,
            mentioned=mentioned,
            char_name=self.chat.card.name,
        )
        if content is None:
            return
        message = ChatMessage(
            platform=PLATFORM,
            conversation_id=conversation_id(payload.broadcaster.name or channel_id),
            channel_id=channel_id,
            author_id=chatter.id,
            author_name=chatter.display_name or chatter.name or chatter.id,
            content=content,
            platform_message_id=payload.id,
            reply_to_platform_id=reply.parent_message_id if reply is not None else None,
        )
        answer = _Answer(self, message)
        self.bot.pacer.submit(
            Job(
                channel_id=channel_id,
                compose=answer.compose,
                reply_to=payload.id,
                author_id=chatter.id,
                author_login=chatter.name,
                on_sent=answer.on_sent,
                on_held=answer.on_held,
            )
        )

    @commands.Component.listener()
    async def event_message_delete(self, payload: twitchio.ChatMessageDelete) -> None:
        """A moderator removed one message: forget it (and do not answer it if it is still waiting)."""
        with self.bot.handlers.track():  # counted so a stop waits for it (a deletion is never refused)
            await self._on_delete(payload)

    async def _on_delete(self, payload: twitchio.ChatMessageDelete) -> None:
        try:
            self.bot.pacer.discard(payload.broadcaster.id, reply_to=payload.message_id)
            removed = await self.bot.runtime.log.delete_platform_message(PLATFORM, payload.message_id)
            self.chat.forget_conversation_cache(
                conversation_id(payload.broadcaster.name or payload.broadcaster.id)
            )
            log.info(
                "Twitch: message deleted in %s; %d log row(s) removed", payload.broadcaster.name, removed
            )
        except Exception:
            log.exception("Twitch: removing a deleted message from the log failed")

    @commands.Component.listener()
    async def event_chat_clear_user(self, payload: twitchio.ChannelChatClearUserMessages) -> None:
        """A moderator cleared a user's messages (timeout or ban): forget what they wrote in this channel."""
        with self.bot.handlers.track():
            await self._on_clear_user(payload)

    async def _on_clear_user(self, payload: twitchio.ChannelChatClearUserMessages) -> None:
        try:
            channel_id = payload.broadcaster.id
            self.bot.pacer.discard(channel_id, author_id=payload.user.id)
            removed = await self.bot.runtime.log.delete_user_messages(PLATFORM, payload.user.id, channel_id)
            self.chat.forget_conversation_cache(conversation_id(payload.broadcaster.name or channel_id))
            log.info(
                "Twitch: user %s cleared in %s; %d log row(s) removed", payload.user.id, channel_id, removed
            )
        except Exception:
            log.exception("Twitch: removing a cleared user's messages from the log failed")


async def setup(bot: FamiliarTwitchBot) -> None:
    await bot.add_component(TwitchChat(bot))
