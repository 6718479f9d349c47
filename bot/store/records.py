"""The values the store hands to its callers: a conversation-log row, a write's outcome, the store's error.

Kept free of database code so features can build and inspect records without opening a database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, get_args

Platform = Literal["discord", "twitch", "console"]
Role = Literal["user", "assistant", "narrator", "system"]

PLATFORMS: frozenset[str] = frozenset(get_args(Platform))
ROLES: frozenset[str] = frozenset(get_args(Role))
RATINGS: frozenset[int] = frozenset({-1, 1})


class StoreError(RuntimeError):
    """A database problem a person can act on (schema too new, store closed, writer failed); the message says what."""


@dataclass(frozen=True)
class WriteResult:
    """What one committed write statement did: rows changed and, for an INSERT, the new row's id."""

    rowcount: int
    lastrowid: int | None


@dataclass(frozen=True, kw_only=True)
class MessageRecord:
    """One line of the conversation log, as stored in `messages` (the row id is the database's business).

    `conversation_id` is the memory key ("discord:123", "discord:thread:456", "twitch:channelname",
    "console:local"). `channel_id` is the channel the message was posted in and `thread_id` the thread inside it,
    if any. `reply_to_id` is our row id of the message answered, `reply_to_platform_id` the platform's id of it.
    """

    platform: Platform
    channel_id: str
    conversation_id: str
    author_id: str
    author_name: str
    role: Role
    content: str
    guild_id: str | None = None
    thread_id: str | None = None
    platform_message_id: str | None = None
    reply_to_id: int | None = None
    reply_to_platform_id: str | None = None
    created_at: float = field(default_factory=time.time)
    model_version: str | None = None
    latency_ms: int | None = None
    rating: int | None = None
    held: bool = False  # a viewer message whose reply the moderation step held: never learnt, never re-read

    def __post_init__(self) -> None:
        # Checked here, at the caller, because `ConversationLog.log` is fire-and-forget: a bad value caught by the
        # database's CHECK constraint would only show up as a line in the writer's log.
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {sorted(PLATFORMS)}, not {self.platform!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, not {self.role!r}")
        if self.rating is not None and self.rating not in RATINGS:
            raise ValueError(f"rating must be +1, -1 or None, not {self.rating!r}")
