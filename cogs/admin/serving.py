"""The served model version: validate, load, point the registry at it and hot-swap the engine; free of any platform.

A move (a promotion, a rollback) validates the adapter, loads it in a thread, moves the registry's pointer, then
`Engine.swap_model` — the engine finishes its running batch on the old weights. A corrupt or unloadable version is
refused and the serving model kept.

The pointer may also move from another process (`familiar retrain` or `familiar model rollback` while the bot
runs): `follow_pointer`, run every `training.pointer_check_s` on the runtime's scheduler, notices and swaps to what
it names through the same checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.config import Config
from cogs.common.actor import Actor
from models.bundled import adopt_bundled, tuned_for
from models.loader import LoadedModel, ModelLoadError, ModelSpec, load_model
from models.persona import CardError, default_card_path, load_card
from models.registry import BASE, Registry, RegistryError, validate_adapter
from models.threads import in_own_thread
from models.training.gate import GateDecision

log = logging.getLogger(__name__)

VERSIONS_SHOWN = 5  # in `model status`


class ModelServing:
    """Which adapter version this process serves, and the moves between versions (one load-and-swap at a time)."""

    def __init__(
        self,
        *,
        config: Config,
        backend: Any = None,
        serving_adapter: str | None = None,
        loader: Callable[[ModelSpec], LoadedModel] | None = None,  # default: models.loader.load_model
    ) -> None:
        self._config = config
        self._backend = (
            backend  # an Engine (hot swap) or anything else (the pointer changes; restart to serve)
        )
        self._loader = loader if loader is not None else load_model
        self.registry = Registry(config.data_dir / "adapters")
        self._serving_adapter = serving_adapter
        self._swap_lock = asyncio.Lock()  # one load-and-swap at a time: rollback, promotion, pointer check
        self._refused_pointer: str | None = None  # a pointer value already refused: logged once, not retried

    @property
    def served_adapter(self) -> str | None:
        """The adapter folder served now (None = the base model)."""
        return self._serving_adapter

    def served_name(self) -> str:
        return Path(self._serving_adapter).name if self._serving_adapter else "base"

    async def activate(
        self, name: str | None, *, action: str = "activate", by: str = "", detail: str = ""
    ) -> str:
        """Validate, load, point the registry at ``name`` (None = base) and hot-swap; raises RegistryError.

        The pointer change goes into the registry's history as ``action`` by ``by``.
        """
        async with self._swap_lock:
            adapter, loaded = await self._load(name)
            self.registry.activate(name, action=action, by=by, detail=detail)
            self._refused_pointer = None  # a pointer moved here again later is checked afresh
            return await self._serve(adapter, loaded)

    async def follow_pointer(self) -> str | None:
        """Serve what the registry's pointer names if another process moved it; None when nothing changed.

        The scheduled check (every `training.pointer_check_s`). It reads one small file, so it is cheap; a version
        that fails validation or loading is refused once (logged) and the serving model kept.
        """
        if not self.follows_pointer:
            return None
        async with self._swap_lock:
            try:
                name = self.registry.active_name()
            except OSError as exc:
                log.warning("could not read the model pointer: %s", exc)
                return None
            wanted = str(self.registry.root / name) if name else None
            if wanted == self._serving_adapter or (name or BASE) == self._refused_pointer:
                return None
            try:
                adapter, loaded = await self._load(name)
            except RegistryError as exc:
                self._refused_pointer = name or BASE
                log.error(
                    "the model pointer now names %s, which is refused: %s; still serving %s",
                    name or "base",
                    exc,
                    self.served_name(),
                )
                return None
            self._refused_pointer = None
            message = await self._serve(adapter, loaded)
        log.info("the model pointer moved to %s (changed outside this process): %s", name or "base", message)
        return message

    @property
    def follows_pointer(self) -> bool:
        """Whether this process serves the registry's pointer (a local engine, no pinned `model.adapter`)."""
        return self._can_swap() and not self._config.model.adapter

    async def _load(self, name: str | None) -> tuple[str | None, LoadedModel | None]:
        """Validate ``name`` (None = base) and load it when this process can swap; raises RegistryError."""
        version = self.registry.get(name) if name else None
        if version is not None:
            validate_adapter(version.path)
        adapter = str(version.path) if version else None
        if not self._can_swap():
            return adapter, None
        m = self._config.model
        spec = ModelSpec(
            source=m.source,
            adapter=adapter,
            device=m.device,
            dtype=m.dtype,
            int4_small_batches=m.int4_small_batches,
        )
        try:
            # A thread that ends afterwards: the engine's stays the only one with a torch thread pool.
            return adapter, await in_own_thread(lambda: self._loader(spec), name="familiar-load")
        except ModelLoadError as exc:
            raise RegistryError(f"{name} could not be loaded, the serving model is kept: {exc}") from exc

    async def _serve(self, adapter: str | None, loaded: LoadedModel | None) -> str:
        self._serving_adapter = adapter
        if loaded is not None:
            await self._backend.swap_model(loaded)
            return f"Now serving {loaded.version}."
        every = self._config.training.pointer_check_s
        if every > 0:
            return f"The pointer is updated; a running bot switches to it within {every:g} s."
        return "The pointer is updated; restart the bot to serve it (training.pointer_check_s is 0)."

    def _can_swap(self) -> bool:
        return self._backend is not None and hasattr(self._backend, "swap_model")

    async def rollback(self, actor: Actor, name: str | None = None) -> str:
        """Serve ``name`` (``base`` = no adapter), or the previously promoted version when omitted."""
        if not actor.is_admin:
            return "Only an admin can change the character's model."
        target = name if name else self.registry.previous()
        if target == "base":
            target = None
        if target is not None and target == self.registry.active_name():
            return f"{target} is already active."
        try:
            swapped = await self.activate(target, action="rollback", by=actor.name)
        except RegistryError as exc:
            return f"Refused: {exc}"
        return f"Rolled back to {target or 'the base model'}. {swapped}"

    def serving_lines(self) -> list[str]:
        """The head of `model status`: what this process serves and what the registry points at."""
        serving = getattr(self._backend, "model_version", None) or "(not loaded in this process)"
        return [f"Serving: {serving}", f"Registry points at: {self.registry.active_name() or 'base'}"]

    def version_lines(self) -> list[str]:
        """The tail of `model status`: the latest trained versions, newest first, with their figures."""
        versions = self.registry.versions()[-VERSIONS_SHOWN:]
        if not versions:
            return ["No trained versions yet."]
        lines = []
        for v in reversed(versions):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.meta.get("created_at", 0)))
            state = "promoted" if v.promoted else "not promoted"
            decision = GateDecision.from_meta(v.meta)
            figures = decision.figures() if decision is not None else "no gate figures"
            dataset: dict[str, Any] = v.meta["dataset"] if isinstance(v.meta.get("dataset"), dict) else {}
            if dataset.get("summary"):
                figures += f"; learnt from {dataset['summary']}"
            elif "train_examples" in dataset:  # trained before runs kept a summary
                figures += f"; {dataset['train_examples']} examples"
            lines.append(f"  {v.name} ({when}, {state}): {figures}")
        return lines


def serving_adapter(config: Config) -> str | None:
    """The adapter to serve at start: `model.adapter` when set, else the registry's active version if it is sound.

    A corrupt active version is refused (logged) and the base model served instead.
    """
    if config.model.adapter:
        return config.model.adapter
    registry = Registry(config.data_dir / "adapters")
    card_file = Path(config.bot.persona) if config.bot.persona else default_card_path()
    try:
        card_name = load_card(card_file).name
    except CardError:
        card_name = ""  # the runtime refuses the card with its own message before anything is served
    try:
        if config.model.bundled_adapter and card_name:
            adopt_bundled(registry, card_file, card_name, config.model.source)
        active = registry.active()
        if active is None:
            if card_name and not registry.versions():
                log.warning(
                    "%s is not tuned yet: the model plays it from the card alone; `familiar tune` (or /admin tune) "
                    "teaches it from its card and dialogue files",
                    card_name,
                )
            return None
        validate_adapter(active.path)
    except RegistryError as exc:
        log.error("not serving the registry's active adapter: %s; serving the base model", exc)
        return None
    other = tuned_for(active)
    if other and card_name and other != card_name:
        log.warning(
            "the active adapter %s was tuned for %s, not %s: serving the untuned model; run `familiar tune` to "
            "tune %s",
            active.name, other, card_name, card_name,
        )  # fmt: skip
        return None
    return str(active.path)
