"""The process's shared parts, built once and closed in reverse order.

Every platform (console, Discord, Twitch) receives the same `Runtime`: one store, one engine, one scheduler and
the feature services built over them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.config import Config, secret
from bot.metrics import Metrics
from bot.store import ConversationLog, Store
from cogs.admin.service import ModelService
from cogs.admin.serving import serving_adapter
from cogs.chat.service import ChatService
from cogs.common.held import HeldLog, export_held, forget_held
from cogs.common.safety import Safety
from cogs.polls.service import PollService
from cogs.privacy.service import PrivacyHook, PrivacyService
from cogs.story.service import StoryService
from cogs.teach.privacy import TEACHINGS_HOOK
from cogs.teach.service import TeachService
from models.backend import GenerationBackend
from models.engine import Engine
from models.loader import ModelSpec, load_model
from models.moderation import Moderator
from models.openai_backend import OpenAIBackend, OpenAISettings
from models.persona import Card, default_card_path, load_card
from models.threads import in_own_thread

log = logging.getLogger(__name__)

POINTER_CHECK_JOB = "model-pointer"  # the scheduler job that follows the model registry's pointer


@dataclass
class Runtime:
    config: Config
    store: Store
    log: ConversationLog
    backend: GenerationBackend
    card: Card
    chat: ChatService
    scheduler: AsyncIOScheduler
    polls: PollService
    story: StoryService
    privacy: PrivacyService
    models: ModelService
    teach: TeachService
    safety: Safety  # the moderation step every feature and platform shares (cogs/common/safety.py)
    metrics: Metrics = field(default_factory=Metrics)  # live numbers for the dashboard; platforms report here


def load_persona(config: Config) -> Card:
    path = Path(config.bot.persona) if config.bot.persona else default_card_path()
    return load_card(path)


async def open_backend(config: Config) -> Engine | OpenAIBackend:
    """The generation backend the config names, started."""
    if config.model.backend == "openai":
        o = config.openai
        remote = OpenAIBackend(
            OpenAISettings(
                base_url=o.base_url,
                model=o.model,
                api_key=secret(config.source, "openai.api_key_env", o.api_key_env, required=False),
                timeout_s=o.timeout_s,
                connect_timeout_s=o.connect_timeout_s,
                retries=o.retries,
                max_concurrency=o.max_concurrency,
                max_queue=o.max_queue,
                stream=o.stream,
                send_repetition_penalty=o.send_repetition_penalty,
            )
        )
        await remote.start()
        return remote
    spec = ModelSpec(
        source=config.model.source,
        adapter=serving_adapter(config),  # model.adapter, else the registry's active version
        device=config.model.device,
        dtype=config.model.dtype,
        int4_small_batches=config.model.int4_small_batches,
    )
    # Loading takes seconds (dequantizing the GGUF): keep the loop free for platforms that connect meanwhile, on a
    # thread that ends afterwards so that the engine's thread is the only one with a torch thread pool.
    loaded = await in_own_thread(lambda: load_model(spec), name="familiar-load")
    e = config.engine
    engine = Engine(
        loaded,
        max_batch=e.max_batch,
        batch_window_ms=e.batch_window_ms,
        max_queue=e.max_queue,
        default_timeout_s=e.timeout_s,
        torch_threads=e.torch_threads or None,
    )
    await engine.start()
    return engine


@asynccontextmanager
async def open_runtime(config: Config, *, backend: GenerationBackend | None = None) -> AsyncIterator[Runtime]:
    """Open everything the process shares; `backend` lets tests reuse one loaded model across runtimes."""
    card = load_persona(config)  # a broken card fails before the slow model load
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        store = await Store.open(config.database_path)
        stack.push_async_callback(store.close)
        if backend is None:
            opened = await open_backend(config)
            stack.push_async_callback(opened.close)
            backend = opened
        scheduler = AsyncIOScheduler()
        scheduler.start()
        stack.callback(scheduler.shutdown, wait=False)
        conversation_log = ConversationLog(store)
        metrics = Metrics()
        # The classifier's library takes a second to import: off the event loop, on a thread that ends.
        moderator = await in_own_thread(lambda: Moderator(config.safety), name="familiar-moderation")
        held = HeldLog(store, keep=config.safety.held_keep)
        await held.prune()  # `held_keep` may have been lowered since the last run
        safety = Safety(moderator, held, character=card.char_name)
        chat = ChatService(
            backend=backend,
            card=card,
            log_=conversation_log,
            chat=config.chat,
            generation=config.generation,
            prompt=config.prompt,
            metrics=metrics,
            safety=safety,
        )
        polls = PollService(
            store=store, scheduler=scheduler, config=config.polls, backend=backend, card=card, safety=safety
        )
        await polls.start()  # recreates closing jobs; closes polls whose deadline passed while down
        stack.push_async_callback(polls.close)
        story = StoryService(
            store=store,
            backend=backend,
            card=card,
            log_=conversation_log,
            config=config.story,
            generation=config.generation,
            prompt=config.prompt,
            scheduler=scheduler,
            safety=safety,
        )
        # Resumes games: reschedules open votes, closes those whose window ended while down.
        await story.start()
        stack.push_async_callback(story.close)
        privacy = PrivacyService(store=store, config=config.privacy)
        privacy.on_forgotten(polls.forgotten)  # open polls held in memory stop naming a forgotten creator
        privacy.on_forgotten(story.forgotten)  # open story votes held in memory: hashed key, no names
        privacy.register_hook(TEACHINGS_HOOK)  # forget deletes the teachings a person taught or speaks in
        # Forget deletes the held texts about a person (their flagged messages, replies held for them).
        privacy.register_hook(PrivacyHook("held texts", forget=forget_held, export=export_held))
        teach = TeachService(store=store, character=card.char_name)
        # Retention: once at start, then daily.
        scheduler.add_job(
            privacy.prune, IntervalTrigger(days=1), next_run_time=datetime.now(), id="privacy-prune"
        )
        models = ModelService(
            config=config,
            store=store,
            privacy=privacy,
            card=card,
            backend=backend,
            serving_adapter=serving_adapter(config),
        )
        stack.push_async_callback(models.close)  # a running retrain: recorded as interrupted, worker stopped
        interrupted = models.interrupted_notice()
        if interrupted:  # told at start; `model status` repeats it until it is resumed or dropped
            log.warning("%s", interrupted)
        if models.follows_pointer and config.training.pointer_check_s > 0:
            # `familiar retrain` / `familiar model rollback` in another process move the pointer: follow it.
            scheduler.add_job(
                models.follow_pointer,
                IntervalTrigger(seconds=config.training.pointer_check_s),
                id=POINTER_CHECK_JOB,
                max_instances=1,
                coalesce=True,
            )
        if config.training.schedule.strip():
            trigger = CronTrigger.from_crontab(config.training.schedule)
            scheduler.add_job(models.scheduled_retrain, trigger, id="retrain", max_instances=1)
        log.info("ready: character %s, model %s", card.name, backend.model_version)
        yield Runtime(
            config=config,
            store=store,
            log=conversation_log,
            backend=backend,
            card=card,
            chat=chat,
            scheduler=scheduler,
            polls=polls,
            story=story,
            privacy=privacy,
            models=models,
            teach=teach,
            safety=safety,
            metrics=metrics,
        )
