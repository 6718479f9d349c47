"""The character announces a poll's result in its own voice, or a plain template says it when the engine cannot.

The model is asked for flavour, not facts: platforms always show the exact results next to the announcement, so a
small model misreading a number never misinforms anyone. A busy queue, a slow engine (past a short timeout), an
error or an empty cleaned reply all fall back to the template at once, and so does an announcement the moderation
step holds twice (`cogs/common/safety.py`: the text is kept for moderators, never posted).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cogs.common.held import Place
from cogs.polls.model import PollStatus
from cogs.polls.results import Results
from models.cleaning import clean_reply, trim_to_limit
from models.engine import EngineBusy, EngineError, Generation, GenerationRequest
from models.prompt import Turn, build_messages

if TYPE_CHECKING:
    from cogs.common.safety import SafeGenerator
    from models.persona import Card

log = logging.getLogger(__name__)

ANNOUNCE_MAX_NEW_TOKENS = 60
ANNOUNCE_MAX_CHARS = 300  # fits a Twitch line next to the results and a Discord embed description
AUDIENCE_NAME = "Chat"


@dataclass(frozen=True)
class Announcement:
    text: str
    in_character: bool  # False: the plain template (engine busy, slow, failed, or nothing usable came back)


def template_announcement(results: Results) -> str:
    """The plain announcement: always correct, never in need of the engine."""
    poll = results.poll
    if poll.status is PollStatus.CANCELLED:
        return f"The poll “{poll.question}” was cancelled."
    if not results.winners:
        return f"The poll “{poll.question}” is closed. Nobody voted!"
    return f"The poll “{poll.question}” is closed! {results.outcome_line()}"


def _facts(results: Results) -> str:
    poll = results.poll
    lines = [f"A poll you ran for your audience has just closed. The question was: “{poll.question}”."]
    for label, count, pct in zip(poll.options, results.counts, results.percentages, strict=True):
        lines.append(f"- “{label}”: {count} vote{'s' if count != 1 else ''} ({pct:.0f}%)")
    lines.append(f"Outcome: {results.outcome_line()}")
    lines.append(
        "Announce the outcome to the audience in one or two short sentences, in character. "
        "Name the winning option exactly as written."
    )
    return "\n".join(lines)


class Announcer:
    def __init__(
        self,
        *,
        backend: SafeGenerator | None,
        card: Card | None,
        timeout_s: float,
        temperature: float = 0.7,
    ) -> None:
        self._backend = backend
        self._card = card
        self._timeout_s = timeout_s
        self._temperature = temperature

    async def announce(self, results: Results) -> Announcement:
        fallback = Announcement(template_announcement(results), in_character=False)
        if self._backend is None or self._card is None or results.poll.status is PollStatus.CANCELLED:
            return fallback
        try:
            text = await asyncio.wait_for(self._generate(results), timeout=self._timeout_s)
        except EngineBusy:
            log.info("poll #%d: engine busy, announcing with the template", results.poll.id)
            return fallback
        except (TimeoutError, EngineError) as exc:
            log.info("poll #%d: no in-character announcement (%s); using the template", results.poll.id, exc)
            return fallback
        if not text:
            return fallback
        return Announcement(trim_to_limit(text, ANNOUNCE_MAX_CHARS), in_character=True)

    async def _generate(self, results: Results) -> str:
        assert self._backend is not None and self._card is not None
        backend, card = self._backend, self._card
        messages = build_messages(
            card,
            [Turn(role="user", name=AUDIENCE_NAME, content="The poll is closed! What did we pick?")],
            user_name=AUDIENCE_NAME,
            count_tokens=backend.count_tokens,
            extra_system=_facts(results),
        )
        request = GenerationRequest(
            messages=messages,
            max_new_tokens=ANNOUNCE_MAX_NEW_TOKENS,
            temperature=self._temperature,
            stop=("<|im_start|>", "\nUser:", f"\n{AUDIENCE_NAME}:"),
        )

        def clean(generation: Generation) -> str:
            return clean_reply(
                generation.text,
                char_name=card.name,
                other_names=[AUDIENCE_NAME],
                drop_dangling=generation.finish_reason != "stop",
            )

        display = results.poll.displays[0] if results.poll.displays else None
        place = Place(
            "reply",
            display.platform if display else results.poll.creator_platform,
            display.channel_id if display else "",
        )
        written = await backend.write(request, read=clean, text_of=str, place=place, timeout=self._timeout_s)
        if written.value is None:
            log.info("poll #%d: the announcement was held; using the template", results.poll.id)
        return written.value or ""
