"""Privacy, free of any platform: training consent, `forget`, `export` and log retention.

A person is ``(platform, user_id)``. Whether their messages may be learnt depends on the platform's mode
(``privacy.<platform>_consent``): *opt-in* (only after ``consent on``), *opt-out* (unless ``consent off``) or *all*.
``consent on`` counts the messages the person writes from that moment (``since``); what they wrote before stays out
unless they explicitly include it (``include_history``). Saying ``on`` again never narrows what already counts.
An unlisted person on an opt-out platform counts fully, earlier messages included.

``forget`` deletes every log row the person wrote and, in the same transaction, runs the registered hooks that
remove or anonymise what other features keep about them (poll and story votes are built in; a feature adds its
own with :meth:`PrivacyService.register_hook`). Their consent is set to *off* so an opt-out platform does not start
learning from them again. Poll and story ballots are re-keyed, not just renamed (`cogs/polls/ballots.py`,
`cogs/story/ballots.py`, both on `cogs/common/ballot_keys.py`): in a poll or story vote still open the person's vote
keeps counting once, under a keyed hash, and a new vote of theirs replaces it; a story write-in on an open scene is
kept the same way, so its one-per-person rule still holds. Who started, decided or ended a story
(`cogs/story/actors.py`) becomes a random token and "someone". After the commit, `on_forgotten`
listeners drop what the process holds in memory or on disk about the person.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.config import PrivacyConfig
from bot.store import Store, WriteTx
from cogs.common.ballot_keys import FORGOTTEN_NAME
from cogs.polls import ballots
from cogs.story import actors as story_actors
from cogs.story import ballots as story_ballots

log = logging.getLogger(__name__)

ConsentMode = Literal["opt-in", "opt-out", "all"]
EXPORT_MAX_ROWS = 50_000  # log rows in one export file
PRUNE_BATCH = 5_000  # rows deleted per write, so retention never holds the writer for long
ANONYMOUS_NAME = FORGOTTEN_NAME  # what a forgotten person is called: one name across features
ALL_MESSAGES = -math.inf  # "usable from" meaning every message, earlier ones included

ForgetFn = Callable[[WriteTx, str, str, str], Awaitable[int]]  # (tx, platform, user_id, anonymous id) -> rows
ExportFn = Callable[[Store, str, str], Awaitable[list[dict[str, Any]]]]  # (store, platform, user_id) -> rows
ForgottenListener = Callable[[str, str], Awaitable[None]]  # (platform, user_id), after the commit


@dataclass(frozen=True)
class PrivacyHook:
    """What one feature keeps about a person: how to anonymise it on `forget` and how to export it."""

    name: str
    forget: ForgetFn
    export: ExportFn | None = None


@dataclass(frozen=True)
class ForgetReport:
    messages: int
    anonymised: dict[str, int] = field(default_factory=dict)
    conversations: tuple[str, ...] = ()  # where they spoke: chat memory caches to drop

    def summary(self) -> str:
        extra = "".join(f", {count} {name}" for name, count in self.anonymised.items() if count)
        return f"deleted {self.messages} logged message(s){extra}"


async def _table_exists(db: Any, table: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))


def table_hook(
    name: str, table: str, set_sql: str, where_sql: str, *, export_sql: str | None = None
) -> PrivacyHook:
    """A hook for a table that may not exist (its feature may be absent): ``where_sql`` binds (platform, user_id),
    ``set_sql`` binds (anonymous id) once per ``?``."""

    async def forget(tx: WriteTx, platform: str, user_id: str, anonymous: str) -> int:
        if not await _table_exists(tx, table):
            return 0
        placeholders = set_sql.count("?")
        result = await tx.execute(
            f"UPDATE {table} SET {set_sql} WHERE {where_sql}",
            (*([anonymous] * placeholders), platform, user_id),
        )
        return result.rowcount

    async def export(store: Store, platform: str, user_id: str) -> list[dict[str, Any]]:
        if export_sql is None or not await _table_exists(store, table):
            return []
        return [dict(row) for row in await store.fetchall(export_sql, (platform, user_id))]

    return PrivacyHook(name=name, forget=forget, export=export)


BUILTIN_HOOKS: tuple[PrivacyHook, ...] = (
    PrivacyHook("poll votes", forget=ballots.POLL_BALLOTS.forget_hook, export=ballots.POLL_BALLOTS.export),
    PrivacyHook("polls created", forget=ballots.forget_creator, export=ballots.export_creator),
    PrivacyHook(
        "story votes",
        forget=story_ballots.STORY_BALLOTS.forget_hook,
        export=story_ballots.STORY_BALLOTS.export,
    ),
    PrivacyHook("story write-ins", forget=story_ballots.forget_writer, export=story_ballots.export_writer),
    PrivacyHook("stories started", forget=story_actors.forget_starter, export=story_actors.export_starter),
    PrivacyHook("story decisions", forget=story_actors.forget_decider, export=story_actors.export_decider),
    PrivacyHook("stories ended", forget=story_actors.forget_ender, export=story_actors.export_ender),
)


@dataclass(frozen=True)
class Consent:
    """A person's recorded choice. On: their messages from `since` count, or all of them with `include_history`.
    Off: none count (`since` is when they withdrew)."""

    training: bool
    since: float
    include_history: bool


@dataclass(frozen=True)
class ConsentWords:
    """The commands a person types on one platform, so that the answers name ones that exist there."""

    include_history: str  # consent on, earlier messages included
    off: str
    forget: str


CONSENT_WORDS: dict[str, ConsentWords] = {
    "discord": ConsentWords(
        "`/privacy consent choice:on include_history:True`",
        "`/privacy consent choice:off`",
        "`/privacy forget`",
    ),
    "twitch": ConsentWords("`!consent history`", "`!consent off`", "`!forget`"),
    "console": ConsentWords("`/consent on history`", "`/consent off`", "`/forget`"),
}
GENERIC_WORDS = ConsentWords("`consent on` with earlier history", "`consent off`", "forget")
# `consent history`, `consent on all`: on, earlier messages included
HISTORY_WORDS = frozenset({"history", "all"})


def parse_choice(text: str) -> tuple[str, bool] | None:
    """A typed consent command's words as (``on``/``off``/``status``, include history); None when not understood.

    ``on``, ``off``, ``status`` (or nothing), ``history``/``all`` (on, earlier messages included) and
    ``on history``/``on all``.
    """
    words = text.lower().split()
    if not words:
        return "status", False
    if len(words) == 1 and words[0] in ("on", "off", "status"):
        return words[0], False
    if (len(words) == 1 and words[0] in HISTORY_WORDS) or (
        len(words) == 2 and words[0] == "on" and words[1] in HISTORY_WORDS
    ):
        return "on", True
    return None


class PrivacyService:
    def __init__(
        self,
        *,
        store: Store,
        config: PrivacyConfig,
        hooks: tuple[PrivacyHook, ...] = BUILTIN_HOOKS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._hooks: list[PrivacyHook] = list(hooks)
        self._forgotten: list[ForgottenListener] = []
        self._clock = clock

    def register_hook(self, hook: PrivacyHook) -> None:
        """Let a feature anonymise (and export) what it keeps about a person; runs inside `forget`'s transaction."""
        if any(h.name == hook.name for h in self._hooks):
            raise ValueError(f"a privacy hook named {hook.name!r} is already registered")
        self._hooks.append(hook)

    def on_forgotten(self, listener: ForgottenListener) -> None:
        """`await listener(platform, user_id)` after each committed `forget`: drop copies kept outside the database."""
        self._forgotten.append(listener)

    # ----------------------------------------------------------------------------------------------- consent
    def mode(self, platform: str) -> ConsentMode:
        return getattr(self._config, f"{platform}_consent", "opt-in")

    async def consent(self, platform: str, user_id: str) -> Consent | None:
        """What the person said, and since when; None if they never said."""
        row = await self._store.fetchone(
            "SELECT training, since, include_history FROM consent WHERE platform = ? AND user_id = ?",
            (platform, user_id),
        )
        return None if row is None else _consent(row)

    async def choice(self, platform: str, user_id: str) -> bool | None:
        """What the person said (True on, False off), None if they never said."""
        found = await self.consent(platform, user_id)
        return None if found is None else found.training

    async def usable_from(self, platform: str, user_id: str) -> float | None:
        """From when the person's messages may be learnt: `ALL_MESSAGES`, a time, or None (not at all)."""
        return _usable_from(self.mode(platform), await self.consent(platform, user_id))

    async def may_train(self, platform: str, user_id: str) -> bool:
        """Whether any of the person's messages (at least those they write from now on) may be learnt."""
        return await self.usable_from(platform, user_id) is not None

    async def set_consent(
        self,
        platform: str,
        user_id: str,
        on: bool,
        *,
        include_history: bool = False,
        words: ConsentWords | None = None,
    ) -> str:
        """Record the person's choice; returns the sentence to show them (naming `words`' commands).

        `on` counts the messages they write from now on, and with `include_history` their earlier ones too. Saying
        `on` when their messages already count keeps what counts (an earlier start, their history); to narrow it they
        say `off` and then `on` again. `off` (and `forget`) stop every use: the next retrain leaves them out.
        """
        w = words or CONSENT_WORDS.get(platform, GENERIC_WORDS)
        mode = self.mode(platform)
        # What counted before, by what the person said (in an opt-out place, not saying counts fully). In an "all"
        # place everything counts whatever they say; their own choice is still recorded, for if the owner changes it.
        said_mode = "opt-in" if mode == "all" else mode
        now = self._clock()

        async def run(tx: WriteTx) -> tuple[float | None, Consent | None]:
            row = await tx.fetchone(
                "SELECT training, since, include_history FROM consent WHERE platform = ? AND user_id = ?",
                (platform, user_id),
            )
            before = None if row is None else _consent(row)
            counted = _usable_from(said_mode, before)
            if not on:
                since, history = now, False
            elif counted is None:
                since, history = now, include_history
            elif counted == ALL_MESSAGES:
                since, history = (before.since if before is not None and before.training else now), True
            else:
                since, history = counted, include_history
            await tx.execute(
                "INSERT INTO consent (platform, user_id, training, updated_at, since, include_history) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, user_id) DO UPDATE SET "
                "training = excluded.training, updated_at = excluded.updated_at, since = excluded.since, "
                "include_history = excluded.include_history",
                (platform, user_id, int(on), now, since, int(history)),
            )
            return counted, before

        counted, before = await self._store.transaction(run)
        if mode == "all":
            return (
                "Noted, but the owner set this place to learn from every conversation, earlier ones included. "
                f"Use {w.forget} to delete everything logged from you."
            )
        if not on:
            return (
                "Done: your messages will not be used to teach me any more, earlier ones included: the next retrain "
                f"leaves them all out. (Use {w.forget} to delete what is logged.)"
            )
        undo = f"{w.off} undoes it."
        if counted == ALL_MESSAGES:
            why = f" (this place learns from everyone who has not said {w.off})" if before is None else ""
            return f"Your messages here were already used to teach me, earlier ones included{why}, and still are. {undo}"
        if include_history:
            return f"Thank you! Your messages may be used to teach me, earlier ones included. {undo}"
        keep_out = f"Your earlier messages stay out; use {w.include_history} to include them."
        if counted is not None:
            return (
                f"You already said yes on {_when(counted)}: your messages from then on may be used to teach me. "
                f"{keep_out} {undo}"
            )
        return f"Thank you! From now on your messages may be used to teach me. {keep_out} {undo}"

    async def status(self, platform: str, user_id: str, *, words: ConsentWords | None = None) -> str:
        w = words or CONSENT_WORDS.get(platform, GENERIC_WORDS)
        found = await self.consent(platform, user_id)
        mode = self.mode(platform)
        start = _usable_from(mode, found)
        if found is None:
            said = "you have not chosen"
        elif not found.training:
            said = "you said off"
        elif found.include_history:
            said = "you said on, earlier messages included"
        else:
            said = f"you said on at {_when(found.since)}"
        if start is None:
            used = "your messages are not used"
        elif start == ALL_MESSAGES:
            used = "your messages are used, earlier ones included"
        else:
            used = f"your messages from {_when(start)} on are used; earlier ones are not ({w.include_history} adds them)"
        return f"Training consent here is {mode}; {said}, so {used}."

    async def allowed_predicate(self) -> Callable[[str, str, float], bool]:
        """A fast ``(platform, user_id, created_at) -> bool`` (may this message be learnt?) over a snapshot of every
        choice, for building a dataset."""
        rows = await self._store.fetchall(
            "SELECT platform, user_id, training, since, include_history FROM consent"
        )
        modes = {p: self.mode(p) for p in ("discord", "twitch", "console")}
        unlisted = {p: _usable_from(mode, None) for p, mode in modes.items()}
        starts = {
            (r["platform"], r["user_id"]): _usable_from(modes.get(r["platform"], "opt-in"), _consent(r))
            for r in rows
        }

        def allowed(platform: str, user_id: str, created_at: float) -> bool:
            key = (platform, user_id)
            start = starts[key] if key in starts else unlisted.get(platform)
            return start is not None and created_at >= start

        return allowed

    # ----------------------------------------------------------------------------------------------- forget/export
    async def forget(self, platform: str, user_id: str) -> ForgetReport:
        """Delete the person's log rows, anonymise their traces elsewhere, withdraw consent: all or nothing."""
        anonymous = f"forgotten-{uuid.uuid4().hex[:12]}"
        hooks = list(self._hooks)
        now = self._clock()

        async def run(tx: WriteTx) -> ForgetReport:
            rows = await tx.fetchall(
                "SELECT DISTINCT conversation_id FROM messages WHERE platform = ? AND author_id = ?",
                (platform, user_id),
            )
            deleted = await tx.execute(
                "DELETE FROM messages WHERE platform = ? AND author_id = ?", (platform, user_id)
            )
            counts = {hook.name: await hook.forget(tx, platform, user_id, anonymous) for hook in hooks}
            await tx.execute(
                "INSERT INTO consent (platform, user_id, training, updated_at, since, include_history) "
                "VALUES (?, ?, 0, ?, ?, 0) ON CONFLICT (platform, user_id) DO UPDATE SET training = 0, "
                "updated_at = excluded.updated_at, since = excluded.since, include_history = 0",
                (platform, user_id, now, now),
            )
            return ForgetReport(
                messages=deleted.rowcount,
                anonymised=counts,
                conversations=tuple(r["conversation_id"] for r in rows),
            )

        report = await self._store.transaction(run)
        log.info("forget %s:%s: %s", platform, user_id, report.summary())
        for listener in list(self._forgotten):
            try:
                await listener(platform, user_id)
            except Exception:  # the deletion is committed; a stale copy elsewhere must not undo the answer
                log.exception("forget %s:%s: a listener failed", platform, user_id)
        return report

    async def export(self, platform: str, user_id: str) -> dict[str, Any]:
        """Everything kept about the person, as JSON-ready data."""
        rows = await self._store.fetchall(
            "SELECT id, platform, guild_id, channel_id, thread_id, conversation_id, platform_message_id, author_name, "
            "role, content, created_at, rating FROM messages WHERE platform = ? AND author_id = ? "
            "ORDER BY created_at LIMIT ?",
            (platform, user_id, EXPORT_MAX_ROWS),
        )
        data: dict[str, Any] = {
            "platform": platform,
            "user_id": user_id,
            "exported_at": self._clock(),
            "training_consent": _consent_export(self.mode(platform), await self.consent(platform, user_id)),
            "messages": [dict(row) for row in rows],
            "messages_truncated": len(rows) >= EXPORT_MAX_ROWS,
        }
        for hook in self._hooks:
            if hook.export is not None:
                found = await hook.export(self._store, platform, user_id)
                if found:
                    data[hook.name.replace(" ", "_")] = found
        return data

    # ----------------------------------------------------------------------------------------------- retention
    async def prune(self, now: float | None = None) -> int:
        """Delete log rows older than `retention_days` (nothing when it is 0); returns rows deleted."""
        days = self._config.retention_days
        if days <= 0:
            return 0
        cutoff = (now if now is not None else self._clock()) - days * 86_400
        total = 0
        while True:
            result = await self._store.write(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < ? LIMIT ?)",
                (cutoff, PRUNE_BATCH),
            )
            total += result.rowcount
            if result.rowcount < PRUNE_BATCH:
                break
        if total:
            log.info("retention: deleted %d log rows older than %d days", total, days)
        return total


def _consent(row: Any) -> Consent:
    return Consent(
        training=bool(row["training"]),
        since=float(row["since"]),
        include_history=bool(row["include_history"]),
    )


def _usable_from(mode: str, consent: Consent | None) -> float | None:
    """From when a person's messages may be learnt (`ALL_MESSAGES`, a time) or None, by the mode and their choice."""
    if mode == "all":
        return ALL_MESSAGES
    if consent is None:
        return ALL_MESSAGES if mode == "opt-out" else None
    if not consent.training:
        return None
    return ALL_MESSAGES if consent.include_history else consent.since


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _consent_export(mode: str, consent: Consent | None) -> dict[str, Any]:
    start = _usable_from(mode, consent)
    if start is None:
        used = "none"
    elif start == ALL_MESSAGES:
        used = "all, earlier ones included"
    else:
        used = f"those written from {_when(start)} on"
    return {
        "mode": mode,
        "choice": None if consent is None else consent.training,
        "since": None if consent is None else consent.since,  # when the choice was made (for off: withdrawn)
        "include_history": None if consent is None else consent.include_history,
        "used_for_training": start is not None,
        "messages_used": used,
    }
