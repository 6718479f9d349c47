"""The character's model lifecycle, free of any platform: the one object the platforms use (`ModelService`).

It is both halves of the lifecycle, each in its own file with its own state: the served version
(`cogs/admin/serving.py`: activate, rollback, following a pointer moved elsewhere) and retraining
(`cogs/admin/retraining.py`: dataset, job, worker, gate, promotion, interruption and resume, cancel). Retraining
uses the serving half only through `ModelServing`'s registry, `served_adapter`, `served_name()` and `activate()`;
the serving half knows nothing of retraining. What needs both lives here: a running retrain holds off a rollback and
the pointer check (it swaps by itself when it promotes), and `status` tells of both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.config import Config
from bot.store import Store
from cogs.admin.retraining import Retraining
from cogs.admin.serving import ModelServing
from cogs.common.actor import Actor
from cogs.privacy.service import PrivacyService
from models.loader import LoadedModel, ModelSpec
from models.persona import Card


class ModelService(ModelServing, Retraining):
    """Serving and retraining the character's model, as the platforms, the CLI and the dashboard see it."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        privacy: PrivacyService,
        card: Card,
        backend: Any = None,
        serving_adapter: str | None = None,
        loader: Callable[[ModelSpec], LoadedModel] | None = None,  # default: models.loader.load_model
    ) -> None:
        ModelServing.__init__(
            self, config=config, backend=backend, serving_adapter=serving_adapter, loader=loader
        )
        Retraining.__init__(self, config=config, store=store, privacy=privacy, card=card, serving=self)

    async def follow_pointer(self) -> str | None:
        """`ModelServing.follow_pointer`, except while a retrain runs here: it swaps by itself when it promotes."""
        if self.running:
            return None
        return await super().follow_pointer()

    async def rollback(self, actor: Actor, name: str | None = None) -> str:
        """`ModelServing.rollback`, refused to an admin while a retrain runs (it may be about to promote)."""
        if actor.is_admin and self.running:
            return "A retrain is running; cancel it or wait before rolling back."
        return await super().rollback(actor, name)

    def status(self) -> list[str]:
        """`model status`: what is served, the retrain running (or the last one, or one interrupted), the versions."""
        return [*self.serving_lines(), *self.retrain_lines(), *self.version_lines()]
