"""The one moderation step between the model and every platform, and between people's text and the model.

Every feature that generates (chat replies, story scenes and choices, recap lines, poll announcements) asks a
`SafeGenerator` instead of the backend: it runs the request, reads the result the feature's way (cleaning,
parsing), checks the text that would be posted with the moderator (`models.moderation`), and hands back only text
that passed. A flagged text is kept for moderators (`cogs/common/held.py`) and written again once with a nudge (an
extra system line); flagged again, the feature gets nothing (`Written.value is None`) and says something safe of
its own: the chat its in-voice deflection (`Safety.deflection`), the narrator a plain scene, a poll its template.
A streamed reply is checked as it grows, and a preview that fails is not shown.

People's text goes through `Safety.check_input` (a chat message: not answered, not learnt, not quoted) and
`Safety.people_text` (poll questions and options, story write-ins and premises: cleaned with `clean_people_text`,
then checked, before the bot repeats them). Platform moderation (Twitch AutoMod, Discord AutoMod) reports what it
refused through `Safety.hold` too.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from cogs.common.actor import Actor
from cogs.common.held import HeldLog, Place
from models.backend import GenerationBackend, StreamingBackend
from models.engine import Generation, GenerationRequest
from models.moderation import Moderator, SafetySettings, Verdict, clean_people_text

log = logging.getLogger(__name__)

T = TypeVar("T")

NUDGE = (
    "Keep it friendly and clean: no insults, slurs, threats or sexual talk, "
    "and never repeat such words even when asked to."
)  # the extra system line of the one regeneration after a held text
REGENERATE_MIN_TEMPERATURE = 0.7  # the nudged attempt samples at least this hot, not to write the same again
STATUS_HELD = 5  # held texts `status_lines` lists

Preview = Callable[[str], str]  # raw text so far -> the cleaned text a preview would show
Show = Callable[[str], Awaitable[None]]  # shows a preview on the platform


@dataclass(frozen=True)
class Written(Generic[T]):
    """What a `SafeGenerator.write` produced: `value` passed the moderator, or is None when every attempt was held
    (the caller then says something safe of its own). `generation` is the last attempt's."""

    value: T | None
    generation: Generation
    held: int = 0  # attempts the moderator held


class Safety:
    """The moderator, the held texts and the process's safety settings, shared by every feature and platform."""

    def __init__(self, moderator: Moderator, held: HeldLog | None, *, character: str) -> None:
        self.moderator = moderator
        self.held = held
        self._character = character

    @classmethod
    def rules_only(cls, character: str, settings: SafetySettings | None = None) -> Safety:
        """The default for a service built without one (tests, benches): the rules, no classifier, no held table."""
        return cls(Moderator(settings or SafetySettings(), scorer=None), None, character=character)

    @property
    def settings(self) -> SafetySettings:
        return self.moderator.settings

    @property
    def deflection(self) -> str:
        """The short in-voice line posted instead of a held reply (and, with `refuse`, instead of an answer)."""
        return self.settings.deflection or default_deflection(self._character)

    @property
    def refuses_flagged_input(self) -> bool:
        return self.settings.on_flagged_input == "refuse"

    def verdict(self, text: str) -> Verdict:
        """The moderator's verdict on `text` (allowed when checks are off)."""
        return self.moderator.check(text)

    async def hold(self, place: Place, text: str, reasons: Sequence[str], source: str) -> None:
        """Keep a text that must not be posted (or answered) for moderators; never raises for the store."""
        if self.held is None:
            log.warning("safety: held a %s on %s (%s)", place.kind, place.platform, "; ".join(reasons))
            return
        try:
            await self.held.record(place, text, reasons, source)
        except Exception:  # the store is closing: the text is still not posted, which is what matters
            log.exception("safety: could not store a held %s", place.kind)

    async def check(self, text: str, place: Place) -> Verdict:
        """`verdict`, and a held record when it fails."""
        verdict = self.verdict(text)
        if not verdict.allowed:
            await self.hold(place, text, verdict.reasons, verdict.source)
        return verdict

    async def check_input(self, text: str, place: Place) -> Verdict:
        """A person's message before the character answers it; a flagged one is kept as a held input."""
        return await self.check(text, replace(place, kind="input"))

    async def people_text(self, text: str, max_chars: int, place: Place) -> tuple[str, Verdict]:
        """People's text the bot will repeat (a poll option, a write-in, a premise): cleaned, then checked.

        Returns the cleaned text ("" when nothing visible is left) and the verdict on it; a flagged text is held.
        """
        cleaned = clean_people_text(text, max_chars)
        if not cleaned:
            return "", Verdict(True)
        return cleaned, await self.check_input(cleaned, place)

    # ----------------------------------------------------------------------------------------------- moderators
    async def status_lines(self, *, show_text: bool = True, held: int = STATUS_HELD) -> list[str]:
        """The settings (`Moderator.describe`) and the last held texts, for `/admin safety`, `!safety`, `/safety`."""
        return [*self.moderator.describe(), *await self.held_lines(show_text=show_text, held=held)]

    async def held_lines(self, *, show_text: bool, held: int = STATUS_HELD) -> list[str]:
        """The last held texts, newest first. `show_text=False` for an answer everyone in a channel reads: when,
        what kind and who held each, never its words (nor the blocked term a reason names)."""
        if self.held is None:
            return ["Held texts are not kept."]
        recent = await self.held.recent(held)
        if not recent:
            return ["Nothing held so far."]
        return [f"Last {len(recent)} held (newest first):", *(h.line(show_text=show_text) for h in recent)]

    def block(self, actor: Actor, term: str) -> str:
        """A moderator blocks a word or phrase from now on (until a restart; the config keeps lasting ones)."""
        if not (actor.is_moderator or actor.is_admin):
            return "Only moderators can add blocked words."
        if not term.strip():
            return "Say which word to block: safety block <word>."
        try:
            self.moderator.add_blocked(term)
        except ValueError as exc:  # the reason, without repeating the term (a channel may read the answer)
            return f"Not added: it {str(exc).removeprefix(f'{term!r} ')}."
        log.info("safety: %s:%s added a blocked term", actor.platform, actor.user_id)
        return (
            "Added to the blocked words until the bot restarts (put lasting ones in [safety] blocked_terms)."
        )


def default_deflection(character: str) -> str:
    """The deflection when `safety.deflection` is empty: an action in the character's name and a change of subject."""
    name = character.strip() or "The character"
    return f"*{name} pauses* Let's talk about something else."


class SafeGenerator:
    """The backend as features see it: generation whose result is read, checked, and held or handed over."""

    def __init__(self, backend: GenerationBackend, safety: Safety) -> None:
        self._backend = backend
        self.safety = safety

    # The parts of the backend a feature may still use directly: prompt budgeting and bookkeeping.
    def count_tokens(self, text: str) -> int:
        return self._backend.count_tokens(text)

    @property
    def model_version(self) -> str:
        return self._backend.model_version

    @property
    def queue_depth(self) -> int:
        return self._backend.queue_depth

    @property
    def streams(self) -> bool:
        return isinstance(self._backend, StreamingBackend)

    async def write(
        self,
        request: GenerationRequest,
        *,
        read: Callable[[Generation], T],
        text_of: Callable[[T], str],
        place: Place,
        timeout: float | None = None,
        regenerate: bool = True,
        preview: tuple[Preview, Show] | None = None,
    ) -> Written[T]:
        """Generate, read the result with `read`, check `text_of(value)`; held: once more with the nudge.

        An empty `text_of` is not checked (nothing would be posted): the feature decides what to do with it.
        `preview` streams the first attempt (when the backend can): `Preview` cleans the text so far, `Show` posts
        it; a preview that fails the check is not shown, nor is anything after it. Raises the backend's errors.
        """
        attempts = [request]
        if regenerate:
            attempts.append(nudged(request))
        held = 0
        generation: Generation | None = None
        for i, attempt in enumerate(attempts):
            if i == 0 and preview is not None and isinstance(self._backend, StreamingBackend):
                generation = await self._stream(self._backend, attempt, preview, timeout)
            else:
                generation = await self._backend.generate(attempt, timeout=timeout)
            value = read(generation)
            text = text_of(value)
            if not text.strip():
                return Written(value, generation, held)
            verdict = self.safety.verdict(text)
            if verdict.allowed:
                return Written(value, generation, held)
            held += 1
            await self.safety.hold(place, text, verdict.reasons, verdict.source)
        assert generation is not None
        return Written(None, generation, held)

    async def _stream(
        self,
        backend: StreamingBackend,
        request: GenerationRequest,
        preview: tuple[Preview, Show],
        timeout: float | None,
    ) -> Generation:
        """Generate through `backend.stream`, showing checked previews; a stream carries no token counts."""
        clean, show = preview
        started = time.monotonic()
        parts: list[str] = []
        shown = ""
        blocked = False
        async for piece in backend.stream(request, timeout=timeout):
            parts.append(piece)
            if blocked:
                continue
            text = clean("".join(parts))
            if not text or text == shown:
                continue
            if not self.safety.verdict(text).allowed:
                blocked = True  # nothing more is shown; the final check decides what is posted
                continue
            shown = text
            await show(text)
        text = "".join(parts)
        new_tokens = backend.count_tokens(text)
        return Generation(
            text=text,
            finish_reason="length" if new_tokens >= request.max_new_tokens else "stop",
            prompt_tokens=sum(backend.count_tokens(m["content"]) for m in request.messages),
            new_tokens=new_tokens,
            queue_s=0.0,
            latency_s=time.monotonic() - started,
            model_version=backend.model_version,
        )


def nudged(request: GenerationRequest) -> GenerationRequest:
    """`request` with the nudge as a last system line, a little hotter and with a fresh seed."""
    return replace(
        request,
        messages=[*request.messages, {"role": "system", "content": NUDGE}],
        temperature=max(REGENERATE_MIN_TEMPERATURE, request.temperature),
        seed=random.randrange(2**31),
    )
