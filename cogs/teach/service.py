"""Teaching the character, free of any platform: a moderator gives the reply it should have given.

A teaching names one logged reply of the character: by the platform's id of a message showing it (Discord's "Teach"
menu on a reply) or as the latest reply in a conversation (`!teach` on Twitch, `/teach` in the console). It is
stored (table `teachings`, migration 0012) with its own copy of the context the model answered (the conversation's
turns before the reply, at most `CONTEXT_TURNS`, back to a `/reset`), the original reply and the taught one, and who
taught it. The lookup, the context and the insert run in one write transaction, so a `forget` running at the same
time either comes first (and the person's turns are not copied) or deletes the new teaching too
(`cogs/teach/privacy.py`). A second teaching of the same reply replaces the first: one reply, one correction.

`load_teachings(store)` is what the tuning dataset builder reads. Consent is the builder's to apply, as for the log:
every turn carries its author's id, and `Teaching.people` lists everyone in it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from bot.store import Platform, Store, WriteTx
from cogs.chat.service import RESET_MARKER, normalize_input
from cogs.common.actor import Actor

log = logging.getLogger(__name__)

MAX_TAUGHT_CHARS: Final = 1000  # a taught reply, after control characters are stripped
CONTEXT_TURNS: Final = 8  # conversation turns kept before the taught reply
CONTEXT_SCAN_ROWS: Final = 32  # log rows read back from the reply to find them (system rows are skipped)
LOAD_MAX: Final = 50_000  # teachings one `load_teachings` call returns, oldest first
CONTEXT_ROLES: Final = frozenset({"user", "assistant"})

_REPLY_COLUMNS = "id, platform, conversation_id, role, content, created_at"
# The log row a platform message shows: by its own id, or as one part of a longer reply (see bot/store/log.py).
_REPLY_BY_MESSAGE = (
    f"SELECT {_REPLY_COLUMNS} FROM messages WHERE id IN ("
    "SELECT id FROM messages WHERE platform = ? AND platform_message_id = ? "
    "UNION SELECT message_id FROM message_parts WHERE platform = ? AND platform_message_id = ?)"
)
_LATEST_REPLY = (
    f"SELECT {_REPLY_COLUMNS} FROM messages WHERE conversation_id = ? AND role = 'assistant' "
    "ORDER BY created_at DESC, id DESC LIMIT 1"
)
_BEFORE_REPLY = (
    "SELECT role, author_id, author_name, content FROM messages "
    # A message the moderation step held (messages.held) is no context to learn from.
    "WHERE conversation_id = ? AND held = 0 AND (created_at < ? OR (created_at = ? AND id < ?)) "
    "ORDER BY created_at DESC, id DESC LIMIT ?"
)
_COLUMNS = "id, platform, conversation_id, reply_row_id, context, original, taught, teacher_id, teacher_name, created_at"


class TeachStatus(StrEnum):
    TAUGHT = "taught"
    NOT_ALLOWED = "not-allowed"  # not a moderator
    EMPTY = "empty"  # nothing left after stripping: the adapter shows its usage line
    TOO_LONG = "too-long"
    SAME = "same"  # the taught reply is what the character already said
    NO_REPLY = "no-reply"  # no reply of the character there (yet), or not one it logged


@dataclass(frozen=True)
class TeachResult:
    status: TeachStatus
    message: str  # what to show the moderator
    teaching_id: int | None = None
    replaced: bool = False  # an earlier teaching of the same reply was replaced

    @property
    def ok(self) -> bool:
        return self.status is TeachStatus.TAUGHT


@dataclass(frozen=True)
class ContextTurn:
    """One turn the model saw before the taught reply, as the log had it."""

    role: str  # "user" or "assistant"
    author_id: str  # the platform's user id ("familiar" for the character)
    name: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "author_id": self.author_id, "name": self.name, "content": self.content}


@dataclass(frozen=True)
class Teaching:
    """One reply a moderator taught: what the character should have said after `context`."""

    id: int
    platform: Platform
    conversation_id: str
    context: tuple[ContextTurn, ...]  # oldest first
    original: str  # what the character said
    taught: str  # what it should have said
    teacher_id: str
    teacher_name: str
    created_at: float
    reply_row_id: int | None = None  # the log row of the original reply, while it exists

    @property
    def people(self) -> frozenset[tuple[str, str]]:
        """(platform, user_id) of the teacher and of everyone who speaks in the context."""
        speakers = {(self.platform, t.author_id) for t in self.context if t.role == "user"}
        return frozenset({*speakers, (self.platform, self.teacher_id)})


def clean_taught(text: str) -> str:
    """The taught reply as stored: invisible and control characters dropped (newlines kept), ends trimmed."""
    return normalize_input(text.replace("\r\n", "\n"))


class TeachService:
    def __init__(self, *, store: Store, character: str, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.character = character  # the name the answers use ("Wick")
        self._clock = clock

    async def teach(
        self,
        actor: Actor,
        text: str,
        *,
        conversation_id: str | None = None,
        reply_message_id: str | None = None,
    ) -> TeachResult:
        """Store `text` as the reply the character should have given, on `actor`'s platform.

        The reply is the one shown by the platform message `reply_message_id`, or else the latest one in
        `conversation_id`. Only moderators (and admins) may teach.
        """
        if (conversation_id is None) == (reply_message_id is None):
            raise ValueError("give exactly one of conversation_id and reply_message_id")
        who = self.character
        if not (actor.is_moderator or actor.is_admin):
            return TeachResult(TeachStatus.NOT_ALLOWED, f"Only moderators can teach {who}.")
        taught = clean_taught(text)
        if not taught:
            return TeachResult(TeachStatus.EMPTY, f"Write the reply {who} should have given.")
        if len(taught) > MAX_TAUGHT_CHARS:
            return TeachResult(
                TeachStatus.TOO_LONG,
                f"That reply is {len(taught)} characters long; a taught reply can have at most "
                f"{MAX_TAUGHT_CHARS}.",
            )
        now = self._clock()

        async def store_teaching(tx: WriteTx) -> TeachResult:
            if reply_message_id is not None:
                found = await tx.fetchone(
                    _REPLY_BY_MESSAGE, (actor.platform, reply_message_id, actor.platform, reply_message_id)
                )
                missing = (
                    f"That message is not one of {who}'s chat replies in the log (or it was deleted since)."
                )
            else:
                found = await tx.fetchone(_LATEST_REPLY, (conversation_id,))
                missing = f"{who} has not replied here yet."
            if found is None or found["role"] != "assistant" or found["platform"] != actor.platform:
                return TeachResult(TeachStatus.NO_REPLY, missing)
            if _same(found["content"], taught):
                return TeachResult(
                    TeachStatus.SAME,
                    f"That is what {who} already said; write the reply it should have given.",
                )
            context = await _context_before(tx, found)
            replaced = await tx.execute("DELETE FROM teachings WHERE reply_row_id = ?", (found["id"],))
            row = await tx.execute(
                "INSERT INTO teachings (platform, conversation_id, reply_row_id, context, original, taught, "
                "teacher_id, teacher_name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    found["platform"],
                    found["conversation_id"],
                    found["id"],
                    json.dumps([t.as_dict() for t in context], ensure_ascii=False),
                    found["content"],
                    taught,
                    actor.user_id,
                    actor.name,
                    now,
                ),
            )
            speakers = sorted({t.author_id for t in context if t.role == "user"})
            await tx.executemany(
                "INSERT INTO teaching_people (platform, user_id, teaching_id) VALUES (?, ?, ?)",
                [(found["platform"], user_id, row.lastrowid) for user_id in speakers],
            )
            message = f"Thanks — {who} will learn that reply at the next tune."
            if replaced.rowcount:
                message += " (It replaces the earlier correction of that reply.)"
            return TeachResult(TeachStatus.TAUGHT, message, row.lastrowid, replaced=bool(replaced.rowcount))

        result = await self._store.transaction(store_teaching)
        if result.ok:
            log.info(
                "teaching %s stored: %s:%s corrected a reply in %s",
                result.teaching_id,
                actor.platform,
                actor.user_id,
                conversation_id or f"message {reply_message_id}",
            )
        return result

    async def reply_text(self, platform: str, message_id: str) -> str | None:
        """The logged text of the character's reply shown by this platform message, None if it is not one.

        For an adapter to refuse early (and prefill a form) before the moderator writes anything.
        """
        row = await self._store.fetchone(_REPLY_BY_MESSAGE, (platform, message_id, platform, message_id))
        if row is None or row["role"] != "assistant":
            return None
        return str(row["content"])


async def load_teachings(store: Store) -> list[Teaching]:
    """Every stored teaching, oldest first (at most `LOAD_MAX`): what the tuning dataset builder reads."""
    rows = await store.fetchall(f"SELECT {_COLUMNS} FROM teachings ORDER BY id LIMIT ?", (LOAD_MAX,))
    return [teaching_from_row(row) for row in rows]


def teaching_from_row(row: Any) -> Teaching:
    """A `teachings` row (all of `_COLUMNS`) as a `Teaching`."""
    return Teaching(
        id=row["id"],
        platform=row["platform"],
        conversation_id=row["conversation_id"],
        context=tuple(ContextTurn(**turn) for turn in json.loads(row["context"])),
        original=row["original"],
        taught=row["taught"],
        teacher_id=row["teacher_id"],
        teacher_name=row["teacher_name"],
        created_at=row["created_at"],
        reply_row_id=row["reply_row_id"],
    )


async def _context_before(tx: WriteTx, reply: Any) -> list[ContextTurn]:
    """The conversation's turns before `reply`, oldest first: at most `CONTEXT_TURNS`, none from before a reset."""
    rows: Sequence[Any] = await tx.fetchall(
        _BEFORE_REPLY,
        (reply["conversation_id"], reply["created_at"], reply["created_at"], reply["id"], CONTEXT_SCAN_ROWS),
    )
    turns: list[ContextTurn] = []
    for row in rows:  # newest first
        if row["role"] == "system" and row["content"] == RESET_MARKER:
            break
        if row["role"] in CONTEXT_ROLES:
            turns.append(ContextTurn(row["role"], row["author_id"], row["author_name"], row["content"]))
            if len(turns) == CONTEXT_TURNS:
                break
    turns.reverse()
    return turns


def _same(original: str, taught: str) -> bool:
    return " ".join(original.split()) == " ".join(taught.split())
