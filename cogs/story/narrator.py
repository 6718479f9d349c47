"""The narrator: asks the model for each scene and reads its answer robustly, and keeps long stories in the prompt.

A scene that does not parse is asked for again (its choices alone when only those are missing), then completed with
generic choices, so a turn is never broken. The last `recent_scenes` scenes are re-read word for word; older ones
become one-line recap entries (by the model when `summarize_with_model` is on, else extractive).

Everything the model writes here reaches the story through the moderation step (`cogs/common/safety.py`): a scene
(narration and choices) the moderator holds is written again once with a nudge, and held again it becomes a plain
scene of the narrator's own (`held_scene`); a held recap line becomes the extractive one.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from typing import Any, Final

from bot.config import GenerationConfig, PromptConfig, StoryConfig
from cogs.common.held import Place
from cogs.common.safety import SafeGenerator, Written
from cogs.story import prompt as story_prompt
from cogs.story.errors import NarratorBusy
from cogs.story.parser import (
    MIN_CHOICES,
    ParsedScene,
    parse_choices,
    parse_scene,
    trim_narration,
    with_fallback_choices,
)
from cogs.story.repo import StoryRepo
from cogs.story.state import Game, Option, Turn
from models.engine import EngineError, Generation, GenerationRequest
from models.persona import Card
from models.prompt import PromptBudget

log = logging.getLogger(__name__)

SUMMARY_MAX_NEW_TOKENS: Final = 48
CHOICES_MAX_NEW_TOKENS: Final = 60
STOP_STRINGS: Final = ("<|im_start|>", "<|im_end|>", "\nUser:", "\nThe audience chose", "\nAudience:")


@dataclass(frozen=True)
class Scene:
    narration: str
    choices: tuple[str, ...]
    model_version: str | None
    attempts: int
    fallback: bool

    def options(self) -> list[Option]:
        """The scene's choices as the ballot's first options."""
        return [Option(i, "choice", c) for i, c in enumerate(self.choices, 1)]


class Narrator:
    def __init__(
        self,
        *,
        backend: SafeGenerator,
        card: Card,
        config: StoryConfig,
        generation: GenerationConfig,
        prompt: PromptConfig,
    ) -> None:
        self.config = config
        self._backend = backend
        self._card = story_prompt.narrator_card(card, config.narrator, config.narrator_style)
        self._generation = generation
        self._budget = PromptBudget(
            total_tokens=prompt.context_tokens,
            reserve_for_reply=min(config.max_new_tokens, prompt.context_tokens // 2),
            examples_max_tokens=0,  # the card's chat examples pull a small model out of narrating
        )

    @property
    def name(self) -> str:
        return self._card.char_name

    async def write_scene_or_fail(self, **kwargs: Any) -> Scene:
        """`write_scene` for a command: a busy or failing model is a `NarratorBusy` for the person who asked."""
        try:
            return await self.write_scene(**kwargs)
        except EngineError as exc:
            log.warning("narrator unavailable: %s", exc)
            raise NarratorBusy(
                f"{self.name} is busy with many voices right now; try again in a moment."
            ) from exc

    async def write_scene(
        self,
        *,
        premise: str,
        recent: list[story_prompt.SceneRecord],
        recap_text: str,
        action: str,
        opening: bool,
        place: Place,
    ) -> Scene:
        """Ask the model for a scene; when it does not parse, ask once more, then fall back. Never a broken scene.

        `place` is the story's channel (a held scene is recorded there). A scene the moderator holds twice is
        `held_scene`: nothing the model wrote is shown.
        """
        messages = story_prompt.scene_messages(
            self._card,
            premise=premise,
            recap_text=recap_text,
            recent=recent,
            action=action,
            opening=opening,
            count_tokens=self._backend.count_tokens,
            budget=self._budget,
        )
        g = self._generation
        request = GenerationRequest(
            messages=messages,
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=g.top_p,
            repetition_penalty=g.repetition_penalty,
            stop=STOP_STRINGS,
        )
        place = replace(place, kind="story")
        first = await self._scene(request, place)
        if first.value is None:
            return self.held_scene(first.generation.model_version)
        parsed = first.value
        if parsed.ok:
            return Scene(parsed.narration, parsed.choices, first.generation.model_version, 1, False)
        log.info("scene did not parse (%s); asking again", ", ".join(parsed.problems))
        if parsed.problems == (f"{len(parsed.choices)} usable choice(s)",):
            # Good narration without choices (the usual way a small model fails): ask for the choices alone.
            answer = await self._backend.write(
                GenerationRequest(
                    messages=story_prompt.choices_messages(parsed.narration),
                    max_new_tokens=CHOICES_MAX_NEW_TOKENS,
                    temperature=max(0.7, self.config.temperature),
                    top_p=g.top_p,
                    repetition_penalty=g.repetition_penalty,
                    stop=STOP_STRINGS,
                ),
                read=_choices,
                text_of="\n".join,
                place=place,
                timeout=self.config.timeout_s,
            )
            choices = answer.value or ()  # held twice: the generic choices below
            fallback = len(choices) < MIN_CHOICES
            if fallback:
                choices = with_fallback_choices(tuple(dict.fromkeys((*parsed.choices, *choices))))
            return Scene(parsed.narration, choices, first.generation.model_version, 2, fallback)
        again = replace(request, temperature=max(0.8, self.config.temperature), seed=random.randrange(2**31))
        written = await self._scene(again, place)
        second = written.generation
        reparsed = written.value if written.value is not None else parse_scene("")
        if reparsed.ok:
            return Scene(reparsed.narration, reparsed.choices, second.model_version, 2, False)
        log.info("scene did not parse again (%s); using what can be used", ", ".join(reparsed.problems))
        narration = reparsed.narration or parsed.narration
        if len(narration) < 12:
            narration = self._fallback_narration(premise, action, opening)
        best = max((reparsed.choices, parsed.choices), key=len)
        choices = best if len(best) >= 2 else with_fallback_choices(best)
        return Scene(trim_narration(narration), choices, second.model_version, 2, True)

    async def _scene(self, request: GenerationRequest, place: Place) -> Written[ParsedScene]:
        """One scene request through the moderation step: the parsed scene as it would be posted, checked."""
        return await self._backend.write(
            request, read=_parsed, text_of=_scene_text, place=place, timeout=self.config.timeout_s
        )

    def held_scene(self, model_version: str | None) -> Scene:
        """The scene told instead of one the moderator held twice: the narrator's own words and generic choices."""
        narration = (
            f"{self.name} pauses, thinks better of what came to mind, and the tale takes a gentler turn. "
            "What happens next is up to you."
        )
        return Scene(narration, with_fallback_choices(()), model_version, 2, True)

    def _fallback_narration(self, premise: str, action: str, opening: bool) -> str:
        if opening:
            about = f" {premise.rstrip('.')}." if premise else ""
            return f"{self.name} clears their throat, and the tale begins.{about} What happens next is up to you."
        return f"And so: {action.rstrip('.')}. The story holds its breath as the next moment unfolds."

    # ----------------------------------------------------------------------------------------------- recap
    async def summarize_aging(self, game: Game, repo: StoryRepo) -> None:
        """Give a recap line to each scene about to leave the verbatim window (model first, extractive fallback)."""
        aging = game.turns[: max(0, len(game.turns) - self.config.recent_scenes)]
        for i, turn in enumerate(aging):
            if turn.summary:
                continue
            nxt = game.turns[i + 1].action if i + 1 < len(game.turns) else ""
            fallback = story_prompt.extractive_summary(turn.narration, nxt)
            summary = fallback
            if self.config.summarize_with_model:
                try:
                    # A held recap line is the extractive one: it is shown in `story status`, and re-read.
                    def read(g: Generation, fallback: str = fallback) -> str:
                        return story_prompt.clean_summary(g.text, fallback)

                    result = await self._backend.write(
                        GenerationRequest(
                            messages=story_prompt.summary_messages(turn.narration, nxt),
                            max_new_tokens=SUMMARY_MAX_NEW_TOKENS,
                            temperature=0.0,
                            stop=STOP_STRINGS,
                        ),
                        read=read,
                        text_of=str,
                        place=Place("story", game.platform, game.channel_id),
                        timeout=self.config.timeout_s,
                        regenerate=False,
                    )
                    summary = result.value or fallback
                except EngineError as exc:
                    log.info("summary by model failed (%s); extractive summary instead", exc)
            turn.summary = summary
            await repo.set_summary(turn.id, summary)

    def recap(self, game: Game, *, upto: int) -> str:
        """Recap lines of the scenes before the verbatim window among the first `upto` live scenes."""
        turns = game.turns[:upto]
        older = turns[: max(0, len(turns) - self.config.recent_scenes)]
        lines = []
        for i, t in enumerate(older):
            nxt = turns[i + 1].action if i + 1 < len(turns) else ""
            lines.append(t.summary or story_prompt.extractive_summary(t.narration, nxt))
        return story_prompt.recap(lines, self._backend.count_tokens, self.config.recap_tokens)

    def recent_records(self, turns: list[Turn]) -> list[story_prompt.SceneRecord]:
        """The scenes the narrator re-reads word for word: the last `recent_scenes` of `turns`."""
        recent = turns[-self.config.recent_scenes :] if self.config.recent_scenes else []
        return [
            story_prompt.SceneRecord(
                action="" if t.action_kind == "start" else t.action,
                narration=t.narration,
                choices=tuple(o.label for o in t.options if o.kind == "choice"),
            )
            for t in recent
        ]


def _parsed(generation: Generation) -> ParsedScene:
    return parse_scene(generation.text)


def _scene_text(parsed: ParsedScene) -> str:
    """What a parsed scene would post: its narration and its choices."""
    return (
        story_prompt.scene_text(parsed.narration, parsed.choices)
        if parsed.narration or parsed.choices
        else ""
    )


def _choices(generation: Generation) -> tuple[str, ...]:
    return parse_choices(generation.text)
