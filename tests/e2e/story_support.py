"""What the story games' end-to-end tests share: a narrator that numbers its scenes, and a runtime to play in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.config import config_from_dict
from bot.runtime import Runtime, open_runtime
from tests.fakes import ScriptedBackend

# A vote closes by majority or by command, never by its timer, while a test runs; summaries need no model.
STORY = {"vote_seconds": 600, "majority": 0.5, "summarize_with_model": False}


class Narrator(ScriptedBackend):
    """Writes scene n as `template.format(n=n)` (the template carries the scene's numbered choices)."""

    def __init__(self, template: str) -> None:
        super().__init__(respond=self._scene)
        self.template = template
        self.n = 0

    def _scene(self, request: Any) -> str:
        self.n += 1
        return self.template.format(n=self.n)


@asynccontextmanager
async def story_runtime(
    data_dir: str, backend: Any, platform: dict[str, Any], **story: Any
) -> AsyncIterator[Runtime]:
    """A runtime with `platform`'s config section (e.g. {"twitch": {...}}), playing stories with `STORY`."""
    raw = {"bot": {"data_dir": data_dir}, **platform, "story": {**STORY, **story}}
    async with open_runtime(config_from_dict(raw, source="<test>"), backend=backend) as runtime:
        yield runtime
