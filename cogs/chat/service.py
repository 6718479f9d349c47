"""The chat feature, free of any platform: who gets an answer, what the character remembers, what gets logged.

Platform adapters turn an event into a `ChatMessage`, call `respond`, send the text, then call `record_sent` with the
platform's id of the sent message so the log can later honour deletions and ratings.

Every reply comes through the moderation step (`cogs/common/safety.py`): a message the moderator flags is not
answered (or gets the deflection, with `safety.on_flagged_input = "refuse"`), not logged and not remembered; a reply
it holds twice becomes the deflection (`Outcome.HELD`), which is posted but never logged as a reply, and the message
that led to it is marked held in the log (no dataset learns from it) and leaves the memory.
"""

from __future__ import annotations

import logging
import random
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from bot.config import ChatConfig, GenerationConfig, PromptConfig
from bot.metrics import Metrics
from bot.store import ConversationLog, MessageRecord, Platform, Role
from cogs.chat.memory import ConversationMemory, MemoryStore
from cogs.common.held import HeldKind, Place
from cogs.common.prompting import prompt_budget
from cogs.common.safety import SafeGenerator, Safety
from models.backend import GenerationBackend
from models.cleaning import FALLBACK_REPLIES, clean_reply, trim_to_limit
from models.engine import EngineBusy, EngineError, Generation, GenerationRequest
from models.persona import Card
from models.prompt import Turn, build_messages

log = logging.getLogger(__name__)

MAX_NAME_STOPS = 5  # speakers' names used as stop strings (the engine accepts 8 stop strings in all)
MAX_COOLDOWN_ENTRIES = 10_000  # people remembered for the cooldown; the oldest are forgotten first
REGENERATE_MIN_TEMPERATURE = (
    0.8  # a regenerated reply samples at least this hot, or it would repeat the first
)
RESET_MARKER = "[conversation reset]"  # a system row in the log: history before it is not re-read
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


class Outcome(StrEnum):
    REPLIED = "replied"
    IGNORED = "ignored"  # from a bot, or nothing left after cleaning: no answer at all
    COOLDOWN = "cooldown"  # the same person again too soon
    BUSY = "busy"  # the engine's queue is full or it failed: a short in-character apology
    HELD = "held"  # the moderation step held the message or the reply: `text` is the deflection (or "": say nothing)


@dataclass(frozen=True)
class ChatMessage:
    platform: Platform
    conversation_id: str
    channel_id: str
    author_id: str
    author_name: str
    content: str
    guild_id: str | None = None
    thread_id: str | None = None
    platform_message_id: str | None = None
    reply_to_platform_id: str | None = None
    author_is_bot: bool = False


@dataclass(frozen=True)
class ChatReply:
    outcome: Outcome
    text: str = ""
    note: str | None = None  # something the person should know, e.g. that their message was cut
    generation: Generation | None = None
    message: ChatMessage | None = None
    retry_after_s: float = 0.0
    # The message's log row: marked held when the platform's own moderation refuses the reply (`hold_sent`).
    asked: MessageRecord | None = None


@dataclass(frozen=True)
class LoggedReply:
    """A conversation's latest reply as the log knows it: the message it answered and the platform's ids of the
    messages that show it (several when it was split), so it can be regenerated after a restart."""

    message: ChatMessage
    part_ids: tuple[str, ...]


def normalize_input(text: str) -> str:
    """Drop invisible and control characters that carry no meaning but can confuse prompt and logs."""
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return text.strip()


class ChatService:
    def __init__(
        self,
        *,
        backend: GenerationBackend,
        card: Card,
        log_: ConversationLog,
        chat: ChatConfig,
        generation: GenerationConfig,
        prompt: PromptConfig,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        safety: Safety | None = None,
    ) -> None:
        self.safety = safety if safety is not None else Safety.rules_only(card.char_name)
        # Generation reaches this service read and checked, never raw.
        self.backend = SafeGenerator(backend, self.safety)
        self._metrics = (
            metrics if metrics is not None else Metrics()
        )  # the dashboard's requests/min and latency
        self.card = card
        self._log = log_
        self._chat = chat
        self._generation = generation
        self._budget = prompt_budget(prompt)
        self._clock = clock
        self._memory = MemoryStore(
            max_conversations=chat.max_conversations,
            max_turns=chat.memory_turns,
            max_tokens=chat.memory_tokens,
            count_tokens=backend.count_tokens,
        )
        self._last_seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    # ----------------------------------------------------------------------------------------------- public API
    def greeting(self, user_name: str) -> str:
        return self.card.greeting(user_name)

    async def respond(
        self,
        msg: ChatMessage,
        *,
        limit: int | None = None,
        cooldown: bool = True,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> ChatReply:
        """Answer one message in character, or say why not (see `Outcome`).

        `cooldown=False` is for the local console, where one person types and piped lines arrive at once.
        `on_text`, when the backend can stream, is awaited with the cleaned reply so far as it is written (a live
        preview; the returned text is the final word, trimmed to `limit`).
        """
        if msg.author_is_bot:
            return ChatReply(Outcome.IGNORED, message=msg)
        content = normalize_input(msg.content)
        if not content:
            return ChatReply(Outcome.IGNORED, message=msg)
        wait = self._cooldown_left(msg.platform, msg.author_id) if cooldown else 0.0
        if wait > 0:
            return ChatReply(Outcome.COOLDOWN, message=msg, retry_after_s=wait)
        if not (await self.safety.check_input(content, _place(msg))).allowed:
            # Not answered, not logged, not remembered: nothing can quote it or learn from it.
            refusal = self.safety.deflection if self.safety.refuses_flagged_input else ""
            return ChatReply(Outcome.HELD if refusal else Outcome.IGNORED, text=refusal, message=msg)
        note = None
        if len(content) > self._chat.max_input_chars:
            content = content[: self._chat.max_input_chars].rstrip() + " …"
            note = (
                f"(your message was long, so I read only its first {self._chat.max_input_chars} characters)"
            )
        msg = replace(msg, content=content)

        memory = await self._memory_for(msg.conversation_id)
        asked = Turn(role="user", name=msg.author_name, content=content)
        memory.add(asked)
        record = self._record(msg, role="user", content=content)
        await self._log.log(record)

        try:
            generation, text = await self._generate(memory, msg, on_text=on_text)
        except EngineBusy:
            log.warning("engine busy; %s in %s gets the busy answer", msg.author_id, msg.conversation_id)
            self._metrics.request_failed()
            return ChatReply(Outcome.BUSY, text=self.busy_text(), note=note, message=msg)
        except EngineError:
            log.exception("generation failed for %s", msg.conversation_id)
            self._metrics.request_failed()
            return ChatReply(Outcome.BUSY, text=self.busy_text(), note=note, message=msg)
        self._metrics.request_done(generation.latency_s)
        if text is None:  # held twice: the deflection instead; the message that led there is not learnt
            memory.remove(asked)
            await self._log.mark_held(record)
            return ChatReply(Outcome.HELD, text=self.safety.deflection, note=note, message=msg)
        if limit is not None:
            text = trim_to_limit(text, limit)
        memory.add(Turn(role="assistant", name=self.card.char_name, content=text))
        return ChatReply(
            Outcome.REPLIED, text=text, note=note, generation=generation, message=msg, asked=record
        )

    async def hold_sent(self, reply: ChatReply, *, reasons: Sequence[str], source: str) -> ChatReply:
        """The platform's own moderation refused a reply (Twitch AutoMod, Discord AutoMod): it was not posted.

        The reply leaves the memory and the message it answered is marked held, as when the moderator holds it
        here; the held text is recorded unless `source` already did (`reasons` empty). Returns the deflection
        reply to post instead (never logged as a reply).
        """
        msg = reply.message
        if msg is None or reply.outcome is not Outcome.REPLIED:
            return ChatReply(Outcome.HELD, message=msg)
        if reasons:
            await self.safety.hold(_place(msg, kind="reply"), reply.text, reasons, source)
        memory = self._memory.get(msg.conversation_id)
        if memory is not None:
            memory.remove(Turn(role="assistant", name=self.card.char_name, content=reply.text))
            memory.remove(Turn(role="user", name=msg.author_name, content=msg.content))
        if reply.asked is not None:
            await self._log.mark_held(reply.asked)
        return ChatReply(Outcome.HELD, text=self.safety.deflection, note=reply.note, message=msg)

    async def regenerate(
        self,
        msg: ChatMessage,
        *,
        limit: int | None = None,
        requested_by: str | None = None,
        cooldown: bool = True,
    ) -> ChatReply:
        """Answer `msg` again, replacing the conversation's latest reply in memory (a "regenerate" button).

        `msg` is the message that reply answered (`ChatReply.message` of the first answer). IGNORED when that
        reply is no longer the latest turn (someone spoke since, or the conversation was reset); the cooldown
        counts against `requested_by` (default: the author). The log is the caller's business: it knows which
        platform message is replaced.
        """
        memory = await self._memory_for(msg.conversation_id)
        turns = memory.turns
        if len(turns) < 2 or turns[-1].role != "assistant" or turns[-2].role != "user":
            return ChatReply(Outcome.IGNORED, message=msg)
        if turns[-2].content != msg.content:
            return ChatReply(Outcome.IGNORED, message=msg)
        wait = self._cooldown_left(msg.platform, requested_by or msg.author_id) if cooldown else 0.0
        if wait > 0:
            return ChatReply(Outcome.COOLDOWN, message=msg, retry_after_s=wait)
        old = memory.pop_last_assistant()
        try:
            generation, text = await self._generate(
                memory, msg, seed=random.randrange(2**31), min_temperature=REGENERATE_MIN_TEMPERATURE
            )
        except EngineError:
            log.warning("regenerate failed in %s; the first reply stays", msg.conversation_id)
            self._metrics.request_failed()
            if old is not None:
                memory.add(old)
            return ChatReply(Outcome.BUSY, text=self.busy_text(), message=msg)
        self._metrics.request_done(generation.latency_s)
        if text is None:  # held twice: the first reply stays (it passed), nothing new is said
            if old is not None:
                memory.add(old)
            return ChatReply(Outcome.HELD, message=msg)
        if limit is not None:
            text = trim_to_limit(text, limit)
        memory.add(Turn(role="assistant", name=self.card.char_name, content=text))
        return ChatReply(Outcome.REPLIED, text=text, generation=generation, message=msg)

    def cooldown_left(self, platform: str, author_id: str) -> float:
        """Seconds before this person is answered again (0 = now), without counting this look as a message."""
        if self._chat.cooldown_s <= 0:
            return 0.0
        last = self._last_seen.get((platform, author_id))
        if last is None:
            return 0.0
        return max(0.0, self._chat.cooldown_s - (self._clock() - last))

    async def record_sent(
        self,
        reply: ChatReply,
        *,
        platform_message_id: str | None,
        text: str | None = None,
        parts: Sequence[str] = (),
    ) -> None:
        """Log the character's reply once the platform accepted it (with the platform's id, for deletions).

        `parts`: when the reply took several messages, all their ids in order (`platform_message_id` is the last),
        so deleting or rating any of them reaches the reply.
        """
        if reply.message is None or reply.outcome is not Outcome.REPLIED:
            return
        msg = reply.message
        gen = reply.generation
        await self._log.log(
            MessageRecord(
                platform=msg.platform,
                guild_id=msg.guild_id,
                channel_id=msg.channel_id,
                thread_id=msg.thread_id,
                conversation_id=msg.conversation_id,
                platform_message_id=platform_message_id,
                author_id="familiar",
                author_name=self.card.char_name,
                role="assistant",
                content=text if text is not None else reply.text,
                reply_to_platform_id=msg.platform_message_id,
                model_version=gen.model_version if gen else None,
                latency_ms=round(gen.latency_s * 1000) if gen else None,
            ),
            parts=parts,
        )

    async def latest_reply(
        self, platform: str, conversation_id: str, platform_message_id: str
    ) -> LoggedReply | None:
        """The conversation's latest reply from the log, if the message `platform_message_id` shows it.

        For a regenerate button after a restart, when the adapter no longer remembers the reply: None unless that
        reply is the conversation's last logged row and answers the user message just before it (the same rule
        `regenerate` applies to memory, which is re-read from the same log).
        """
        rows = await self._log.recent(conversation_id, 2)
        if len(rows) < 2:
            return None
        asked, answered = rows
        if asked.role != "user" or answered.role != "assistant" or answered.platform != platform:
            return None
        parts = await self._log.message_parts(platform, platform_message_id)
        if not parts or parts[-1] != answered.platform_message_id:
            return None
        message = ChatMessage(
            platform=asked.platform,
            conversation_id=asked.conversation_id,
            channel_id=asked.channel_id,
            author_id=asked.author_id,
            author_name=asked.author_name,
            content=asked.content,
            guild_id=asked.guild_id,
            thread_id=asked.thread_id,
            platform_message_id=asked.platform_message_id,
            reply_to_platform_id=asked.reply_to_platform_id,
        )
        return LoggedReply(message, tuple(parts))

    async def reset(self, conversation_id: str, *, platform: Platform, channel_id: str) -> None:
        """Forget the conversation's history; the log keeps it, with a marker so a restart does not bring it back."""
        self._memory.drop(conversation_id)
        self._memory.create(conversation_id)
        await self._log.log(
            MessageRecord(
                platform=platform,
                channel_id=channel_id,
                conversation_id=conversation_id,
                author_id="familiar",
                author_name=self.card.char_name,
                role="system",
                content=RESET_MARKER,
            )
        )

    def forget_conversation_cache(self, conversation_id: str) -> None:
        """Drop cached memory so the next message re-reads the log (after deletions)."""
        self._memory.drop(conversation_id)

    def busy_text(self) -> str:
        return f"*{self.card.char_name} is juggling a lot of voices right now. Ask again in a moment!*"

    # ----------------------------------------------------------------------------------------------- internals
    def _cooldown_left(self, platform: str, author_id: str) -> float:
        if self._chat.cooldown_s <= 0:
            return 0.0
        now = self._clock()
        key = (platform, author_id)
        last = self._last_seen.get(key)
        if last is not None and now - last < self._chat.cooldown_s:
            return self._chat.cooldown_s - (now - last)
        self._last_seen[key] = now
        self._last_seen.move_to_end(key)
        while len(self._last_seen) > MAX_COOLDOWN_ENTRIES:
            self._last_seen.popitem(last=False)
        return 0.0

    async def _memory_for(self, conversation_id: str) -> ConversationMemory:
        memory = self._memory.get(conversation_id)
        if memory is not None:
            return memory
        # First use since start (or since eviction): continue where the log left off.
        rows = await self._log.recent(conversation_id, self._chat.memory_turns)
        turns: list[Turn] = []
        for row in rows:
            if row.role == "system" and row.content == RESET_MARKER:
                turns.clear()
            elif row.role in ("user", "assistant") and not row.held:  # a held message is not re-read
                turns.append(Turn(role=row.role, name=row.author_name, content=row.content))
        return self._memory.create(conversation_id, turns)

    async def _generate(
        self,
        memory: ConversationMemory,
        msg: ChatMessage,
        *,
        seed: int | None = None,
        min_temperature: float = 0.0,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> tuple[Generation, str | None]:
        """The reply to `msg`, cleaned and checked; None when the moderation step held it (twice)."""
        history = memory.turns
        # Every speaker's name marks an invented turn when it opens a line; the engine takes a few stop strings,
        # so the most recent speakers get them and `clean_reply` still cuts the rest.
        speakers = list(dict.fromkeys(t.name for t in reversed(history) if t.role == "user"))
        stop_names = speakers[:MAX_NAME_STOPS]
        messages = build_messages(
            self.card,
            history,
            user_name=msg.author_name,
            count_tokens=self.backend.count_tokens,
            budget=self._budget,
        )
        stops = ("<|im_start|>", "\nUser:", "\nYou:", *(f"\n{name[:60]}:" for name in stop_names))
        g = self._generation
        request = GenerationRequest(
            messages=messages,
            max_new_tokens=g.max_new_tokens,
            temperature=max(g.temperature, min_temperature),
            top_p=g.top_p,
            repetition_penalty=g.repetition_penalty,
            stop=stops,
            seed=seed,
        )

        def clean(generation: Generation) -> str:
            # A reply cut by the token limit may end mid-sentence: only then drop the dangling fragment.
            return clean_reply(
                generation.text,
                char_name=self.card.char_name,
                other_names=speakers,
                drop_dangling=generation.finish_reason == "length",
            )

        def preview(text: str) -> str:
            return clean_reply(text, char_name=self.card.char_name, other_names=speakers, drop_dangling=False)

        place = _place(msg, kind="reply")
        written = await self.backend.write(
            request,
            read=clean,
            text_of=str,
            place=place,
            preview=(preview, on_text) if on_text is not None else None,
        )
        if written.value == "":
            # One retry, a little hotter, before the fallback: a small model sometimes opens with a turn marker.
            retry = replace(request, temperature=max(0.8, request.temperature), seed=random.randrange(2**31))
            written = await self.backend.write(retry, read=clean, text_of=str, place=place)
        if written.value is None:
            return written.generation, None
        text = written.value or random.choice(FALLBACK_REPLIES).replace("{char}", self.card.char_name)
        return written.generation, text

    def _record(self, msg: ChatMessage, *, role: Role, content: str) -> MessageRecord:
        return MessageRecord(
            platform=msg.platform,
            guild_id=msg.guild_id,
            channel_id=msg.channel_id,
            thread_id=msg.thread_id,
            conversation_id=msg.conversation_id,
            platform_message_id=msg.platform_message_id,
            author_id=msg.author_id,
            author_name=msg.author_name,
            role=role,
            content=content,
            reply_to_platform_id=msg.reply_to_platform_id,
        )


def _place(msg: ChatMessage, *, kind: HeldKind = "input") -> Place:
    """Where a held text of this message (or of its reply) belongs, and whom it is about."""
    return Place(kind, msg.platform, msg.channel_id, msg.author_id, msg.author_name)
