"""Safe senders: every message the bot posts goes through here, so nothing it writes can ping anyone.

`AllowedMentions.none()` is also the bot's default, but each call passes it again: a default can be changed by
accident, a keyword in the call cannot. Text over Discord's 2000-character limit is split at sentence boundaries.

A message the server's AutoMod refuses (HTTP 400, JSON code 200000 or 200001) raises `BlockedByAutoMod` (still a
`discord.HTTPException`, so every existing handler keeps working), carrying the refused text: the caller records it
as held and posts something else once, never the same text again. Nothing here retries it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence

import discord

from models.cleaning import split_message

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000  # characters in one Discord message
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_TITLE_LIMIT = 256
EMBED_FIELD_NAME_LIMIT = 256
EMBED_FIELD_VALUE_LIMIT = 1024
EMBED_FIELDS_LIMIT = 25
EMBED_TOTAL_LIMIT = 6000
MAX_CHUNKS = 5  # a reply longer than this many messages is cut: a wall of text helps nobody
QUOTE_CHARS = 120  # the asker's words shown above a /chat answer, at most

NO_MENTIONS = discord.AllowedMentions.none()
# Discord's JSON error codes for a message blocked by the server's AutoMod (its content; its title or embed).
AUTOMOD_CODES = frozenset({200000, 200001})
_MASS_MENTION = re.compile(r"@(everyone|here)\b", re.IGNORECASE)


class BlockedByAutoMod(discord.HTTPException):
    """The server's AutoMod refused a message the bot tried to post or edit; `text` is what it refused."""

    def __init__(self, original: discord.HTTPException, text: str) -> None:
        super().__init__(original.response, {"code": original.code, "message": original.text})
        self.text = text


def is_automod_block(exc: BaseException) -> bool:
    return isinstance(exc, discord.HTTPException) and exc.code in AUTOMOD_CODES


@contextlib.contextmanager
def automod_guard(text: str) -> Iterator[None]:
    """Turn an AutoMod refusal of `text` into `BlockedByAutoMod` (other errors pass unchanged)."""
    try:
        yield
    except BlockedByAutoMod:
        raise
    except discord.HTTPException as exc:
        if exc.code not in AUTOMOD_CODES:
            raise
        log.warning("Discord AutoMod refused a message (code %s); it is not sent again", exc.code)
        raise BlockedByAutoMod(exc, text) from None


def defang(text: str) -> str:
    """Break @everyone/@here with a zero-width space: belt and braces on top of the allowed-mentions setting."""
    return _MASS_MENTION.sub(lambda m: "@\u200b" + m[1], text)


def compose(
    text: str, note: str | None = None, *, quote: str | None = None, limit: int = MESSAGE_LIMIT
) -> list[str]:
    """The messages to post for a reply: the quote and the note (small print) first, then the text split at
    sentences. `quote` is one line the caller made safe to show (see `quote_line`)."""
    text = defang(text)
    chunks = [c for c in split_message(text, limit) if c.strip()] if text.strip() else []
    chunks = chunks[:MAX_CHUNKS]
    head = [truncate(f"-# {note}", limit)] if note else []
    if quote:
        head.insert(0, truncate(f"> {defang(quote)}", limit))
    for line in reversed(head):
        if chunks and len(line) + 1 + len(chunks[0]) <= limit:
            chunks[0] = f"{line}\n{chunks[0]}"
        else:
            chunks.insert(0, line)
    return chunks


def quote_line(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` as one short line to quote: whitespace collapsed, cut at `limit`, markdown and @everyone inert.

    Mentions (`<@id>`) should already be names (see the chat cog); nothing here can ping either way.
    """
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return defang(discord.utils.escape_markdown(discord.utils.escape_mentions(line)))


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


async def send_reply(
    message: discord.Message,
    text: str,
    *,
    note: str | None = None,
    view: discord.ui.View | None = None,
) -> list[discord.Message]:
    """Answer `message` in its channel: the first part replies to it (without pinging its author).

    The view (buttons) goes on the last part. A reply to a message deleted meanwhile is posted without the link.
    """
    return await send_chunks(message, compose(text, note), view=view)


async def send_chunks(
    message: discord.Message,
    chunks: Sequence[str],
    *,
    view: discord.ui.View | None = None,
    reply_first: bool = True,
) -> list[discord.Message]:
    """Post ready-made `chunks` (from `compose`) in `message`'s channel, mentions disabled: the first replies to
    `message` when `reply_first`, the view goes on the last."""
    sent: list[discord.Message] = []
    reference = message.to_reference(fail_if_not_exists=False) if reply_first else None
    for i, chunk in enumerate(chunks):
        kwargs: dict = {"allowed_mentions": NO_MENTIONS}
        if i == len(chunks) - 1 and view is not None:
            kwargs["view"] = view
        if i == 0 and reference is not None:
            kwargs["reference"] = reference
            kwargs["mention_author"] = False
        with automod_guard("\n".join(chunks)):
            sent.append(await message.channel.send(chunk, **kwargs))
    return sent


async def send_to(
    channel: discord.abc.Messageable,
    text: str,
    *,
    note: str | None = None,
    view: discord.ui.View | None = None,
) -> list[discord.Message]:
    """Post `text` to a channel, split as needed, mentions disabled."""
    chunks = compose(text, note)
    sent = []
    for i, chunk in enumerate(chunks):
        kwargs: dict = {"allowed_mentions": NO_MENTIONS}
        if view is not None and i == len(chunks) - 1:
            kwargs["view"] = view
        with automod_guard(text):
            sent.append(await channel.send(chunk, **kwargs))
    return sent


async def followup(
    interaction: discord.Interaction,
    text: str,
    *,
    note: str | None = None,
    view: discord.ui.View | None = None,
    ephemeral: bool = False,
    quote: str | None = None,
) -> list[discord.WebhookMessage]:
    """Follow up a deferred interaction; the first part replaces the "thinking…" message."""
    chunks = compose(text, note, quote=quote)
    sent = []
    for i, chunk in enumerate(chunks):
        kwargs: dict = {"allowed_mentions": NO_MENTIONS, "ephemeral": ephemeral, "wait": True}
        if view is not None and i == len(chunks) - 1:
            kwargs["view"] = view
        with automod_guard(text):
            sent.append(await interaction.followup.send(chunk, **kwargs))
    return sent


async def answer(
    interaction: discord.Interaction,
    text: str = "",
    *,
    ephemeral: bool = True,
    embed: discord.Embed | None = None,
) -> None:
    """Answer an interaction once, whether or not it was already answered or deferred; never raises for Discord."""
    text = truncate(defang(text), MESSAGE_LIMIT)
    kwargs: dict = {"allowed_mentions": NO_MENTIONS, "ephemeral": ephemeral}
    if text:
        kwargs["content"] = text
    if embed is not None:
        kwargs["embed"] = embed
    try:
        if interaction.response.is_done():
            await interaction.followup.send(**kwargs)
        else:
            await interaction.response.send_message(**kwargs)
    except discord.HTTPException as exc:  # expired (15 min) or the channel vanished: nothing more to do
        log.warning("could not answer interaction %s: %s", interaction.id, exc)


async def edit(
    message: discord.Message, text: str, *, view: discord.ui.View | None = None
) -> discord.Message:
    """Replace a message's text (one message: the text is cut at the limit), mentions disabled."""
    with automod_guard(text):
        return await message.edit(
            content=truncate(defang(text), MESSAGE_LIMIT), allowed_mentions=NO_MENTIONS, view=view
        )


def embed(
    *,
    title: str,
    description: str = "",
    fields: Sequence[tuple[str, str]] = (),
    colour: discord.Colour | None = None,
) -> discord.Embed:
    """An embed cut to Discord's limits (title, description, fields, total)."""
    e = discord.Embed(
        title=truncate(title, EMBED_TITLE_LIMIT),
        description=truncate(description, EMBED_DESCRIPTION_LIMIT) if description else None,
        colour=colour,
    )
    total = len(e.title or "") + len(e.description or "")
    for name, value in list(fields)[:EMBED_FIELDS_LIMIT]:
        name = truncate(name, EMBED_FIELD_NAME_LIMIT) or "\u200b"
        value = truncate(value, EMBED_FIELD_VALUE_LIMIT) or "\u200b"
        if total + len(name) + len(value) > EMBED_TOTAL_LIMIT:
            break
        total += len(name) + len(value)
        e.add_field(name=name, value=value, inline=False)
    return e
