"""A Discord reply that appears while it is written (`[discord] stream_replies = true`).

The first text is posted as a reply; later text edits that message at most once every `EDIT_INTERVAL_S` (Discord
rate-limits edits, and a message that flickers every token helps nobody); `finish` makes the last edit with the
cleaned, final text, split into more messages if it grew past Discord's limit. The previews it is given were
checked by the moderation step; one the server's AutoMod refuses ends the previews (the final text decides).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import discord

from bot.platforms.discord import send

log = logging.getLogger(__name__)

EDIT_INTERVAL_S = 1.0  # a streaming reply is edited at most once per this many seconds
PREVIEW_SUFFIX = " …"  # marks a reply still being written


class LiveReply:
    """Show a reply to `message` as it grows. Call `update` with the whole text so far, then `finish`."""

    def __init__(self, message: discord.Message, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._message = message
        self._clock = clock
        self._posted: discord.Message | None = None
        self._last_write = 0.0
        self._shown = ""
        self._refused = False  # AutoMod refused a preview: no more previews, never the same text again

    @property
    def started(self) -> bool:
        """Whether a message has been posted (then `finish` edits it rather than sending a new one)."""
        return self._posted is not None

    async def update(self, text: str) -> None:
        """Post or edit with `text` unless the last write was under `EDIT_INTERVAL_S` ago (it then waits)."""
        preview = send.truncate(text, send.MESSAGE_LIMIT - len(PREVIEW_SUFFIX)) + PREVIEW_SUFFIX
        if not text.strip() or preview == self._shown or self._refused:
            return
        if self._posted is not None and self._clock() - self._last_write < EDIT_INTERVAL_S:
            return
        try:
            if self._posted is None:
                (self._posted,) = await send.send_reply(self._message, preview)
            else:
                await send.edit(self._posted, preview)
        except send.BlockedByAutoMod:
            self._refused = True
            return
        except discord.HTTPException as exc:  # a failed preview is not fatal: finish() still answers
            log.warning("streaming preview in channel %s failed: %s", self._message.channel.id, exc)
            return
        self._last_write = self._clock()
        self._shown = preview

    async def finish(
        self, text: str, *, note: str | None = None, view: discord.ui.View | None = None
    ) -> list[discord.Message]:
        """The final reply: the posted message edited to the first part, later parts sent after it."""
        if self._posted is None:
            return await send.send_reply(self._message, text, note=note, view=view)
        chunks = send.compose(text, note) or [send.truncate(self._shown, send.MESSAGE_LIMIT)]
        wait = EDIT_INTERVAL_S - (self._clock() - self._last_write)
        if wait > 0:
            await asyncio.sleep(wait)
        first = await send.edit(self._posted, chunks[0], view=view if len(chunks) == 1 else None)
        return [first, *await send.send_chunks(self._message, chunks[1:], view=view, reply_first=False)]
