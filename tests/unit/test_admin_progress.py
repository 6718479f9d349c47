"""The Discord retrain progress message: throttled edits that never lose the latest line."""

from __future__ import annotations

import asyncio
from unittest import mock

import discord

from cogs.admin.discord_cog import ProgressMessage


def recording_message():
    message = mock.create_autospec(discord.Message, instance=True, spec_set=True)
    edits: list[str] = []

    async def edit(*, content, **_):
        edits.append(content)
        return message

    message.edit.side_effect = edit
    return message, edits


async def test_lines_within_the_interval_fold_into_one_trailing_edit():
    message, edits = recording_message()
    progress = ProgressMessage(message, "T", interval_s=0.2)
    await progress.update("one")
    await asyncio.sleep(0.01)
    await progress.update("two")
    await progress.update("three")
    await asyncio.sleep(0.05)
    assert edits == ["T\none"]  # at once; the others wait out the interval
    await asyncio.sleep(0.3)
    assert edits == ["T\none", "T\nthree"]  # the latest line, not dropped, and "two" skipped
    await asyncio.sleep(0.3)
    assert len(edits) == 2  # nothing new: no edit


async def test_final_line_is_shown_at_once_and_ends_updates():
    message, edits = recording_message()
    progress = ProgressMessage(message, "T", interval_s=10)
    await progress.update("one")
    await asyncio.sleep(0.01)
    await progress.update("two")  # would wait 10 s
    await asyncio.sleep(0.01)
    await progress.update("done", final=True)
    await progress.update("late")
    await asyncio.sleep(0.05)
    assert edits == ["T\none", "T\ndone"]


async def test_no_message_means_no_edits():
    progress = ProgressMessage(None, "T")
    await progress.update("one")
    await progress.update("done", final=True)
