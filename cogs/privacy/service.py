"""Privacy, free of any platform: training consent, `forget`, `export` and log retention.

A person is ``(platform, user_id)``. Whether their messages may be learnt depends on the platform's mode
(``privacy.<platform>_consent``): *opt-in* (only after ``consent on``), *opt-out* (unless ``consent off``) or *all*.

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

    async def choice(self, platform: str, user_id: str) -> bool | None:
        """What the person said (True on, False off), None if they never said."""
        value = await self._store.fetchval(
            "SELECT training FROM consent WHERE platform = ? AND user_id = ?", (platform, user_id)
        )
        return None if value is None else bool(value)

    async def may_train(self, platform: str, user_id: str) -> bool:
        return _decide(self.mode(platform), await self.choice(platform, user_id))

    async def set_consent(self, platform: str, user_id: str, on: bool) -> str:
        """Record the person's choice; returns the sentence to show them."""
        await self._store.write(
            "INSERT INTO consent (platform, user_id, training, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (platform, user_id) DO UPDATE SET training = excluded.training, "
            "updated_at = excluded.updated_at",
            (platform, user_id, int(on), self._clock()),
        )
        mode = self.mode(platform)
        if mode == "all":
            return (
                "Noted, but the owner set this place to learn from every conversation. "
                "Use forget to delete everything logged from you."
            )
        if on:
            return "Thank you! Your conversations with me from now on may be used to teach me. `consent off` undoes it."
        return "Done: your messages will not be used to teach me. (Use forget to delete what is logged.)"

    async def status(self, platform: str, user_id: str) -> str:
        choice = await self.choice(platform, user_id)
        mode = self.mode(platform)
        learnt = _decide(mode, choice)
        said = {None: "you have not chosen", True: "you said on", False: "you said off"}[choice]
        return f"Training consent here is {mode}; {said}, so your messages {'are' if learnt else 'are not'} used."

    async def allowed_predicate(self) -> Callable[[str, str], bool]:
        """A fast ``(platform, user_id) -> bool`` over a snapshot of every choice, for building a dataset."""
        rows = await self._store.fetchall("SELECT platform, user_id, training FROM consent")
        choices = {(r["platform"], r["user_id"]): bool(r["training"]) for r in rows}
        modes = {p: self.mode(p) for p in ("discord", "twitch", "console")}

        def allowed(platform: str, user_id: str) -> bool:
            return _decide(modes.get(platform, "opt-in"), choices.get((platform, user_id)))

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
                "INSERT INTO consent (platform, user_id, training, updated_at) VALUES (?, ?, 0, ?) "
                "ON CONFLICT (platform, user_id) DO UPDATE SET training = 0, updated_at = excluded.updated_at",
                (platform, user_id, now),
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
            "training_consent": {
                "mode": self.mode(platform),
                "choice": await self.choice(platform, user_id),
                "used_for_training": await self.may_train(platform, user_id),
            },
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


def _decide(mode: str, choice: bool | None) -> bool:
    if mode == "all":
        return True
    if mode == "opt-out":
        return choice is not False
    return choice is True
