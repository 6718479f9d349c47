"""Retraining the character, free of any platform: dataset, training job, worker, progress, gate, promotion.

One retrain at a time: build the dataset from the log (consent applied), train a LoRA adapter in a child process,
gate it against the serving model on the same held-out set, keep it as a new version, and — if it passed — have
the serving side (`cogs/admin/serving.py`) point the registry at it and hot-swap the engine. The bot keeps answering
throughout: training runs in another process with few threads, and the swap waits for nothing.

A stop while the worker trains does not lose the run: the job is recorded as interrupted (`cogs/admin/jobs.py`)
with its dataset snapshot and the worker's latest checkpoint, the next start tells the admin (log, `model status`),
and the next retrain resumes from that checkpoint on the same snapshot — unless asked to start fresh, or the
snapshot may no longer be used (`cogs/admin/resume.py`: someone withdrew consent or was forgotten since, the
settings changed, too old). Shutdown never waits for training: the worker is stopped at once (SIGTERM, then SIGKILL
after a short grace).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Config
from bot.store import Store
from cogs.admin import resume
from cogs.admin.jobs import DIALOGUE_EVAL_FILE, Job, JobRecord, find_interrupted
from cogs.admin.progress import TrainingProgress, describe_event, progress_fields
from cogs.admin.resume import STOPPED
from cogs.admin.tuning_data import GENERAL_REFERENCE, character_data, persona_payload, taught_replies
from cogs.common.actor import Actor
from cogs.common.prompting import prompt_budget
from cogs.privacy.service import PrivacyService
from models import quality
from models.dataset import Dataset, DatasetLimits, DatasetStats, build_dataset, load_log_rows
from models.persona import Card
from models.training.gate import GateDecision, decide
from models.training.job import TrainingCancelled, TrainingFailed, TrainingProcess
from models.training.settings import TrainSettings
from models.training.trainer import default_threads
from models.tuning.builder import TuneDataset, build_tune_dataset

if TYPE_CHECKING:
    from cogs.admin.serving import ModelServing

log = logging.getLogger(__name__)

MAX_JOB_DIRS = (
    5  # finished job folders (settings + worker log) kept for diagnosis; datasets are deleted at once
)
SCHEDULER_ACTOR = Actor(platform="console", user_id="scheduler", name="schedule", is_admin=True)

Progress = Callable[[str], Awaitable[None] | None]


def _dropped(stats: DatasetStats) -> str:
    """The sentence naming what the data-quality step dropped, per reason; "" when it dropped nothing."""
    dropped = stats.candidates - stats.examples
    if not dropped:
        return ""
    return (
        f" The data-quality step dropped {dropped} of {stats.candidates} candidate examples "
        f"({quality.describe(stats.quality_dropped)})."
    )


def _learnt_from(record: JobRecord) -> str:
    """The sentence naming what the run learnt from (the job's dataset summary); "" for a job recorded without
    one (a resumed job started by an older Familiar)."""
    summary = record.dataset.get("summary") if isinstance(record.dataset, dict) else None
    return f" Learnt from {summary}." if summary else ""


class TrainingInterrupted(RuntimeError):
    """The bot stopped while the worker trained; the job is recorded for a resume. The message says so."""


@dataclass(frozen=True)
class RetrainResult:
    status: str  # promoted | rejected | failed | cancelled | interrupted | refused | busy
    message: str
    version: str | None = None
    decision: GateDecision | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("promoted", "rejected")


class Retraining:
    """The retrain loop and its one job at a time.

    From the serving side (`ModelServing`) it uses only: `registry` (to keep candidates), `served_adapter` and
    `served_name()` (what the gate compares with) and `activate()` (to promote a candidate that passed).
    """

    def __init__(
        self, *, config: Config, store: Store, privacy: PrivacyService, card: Card, serving: ModelServing
    ) -> None:
        self._config = config
        self._store = store
        self._privacy = privacy
        self._card = card
        self._serving = serving
        self._lock = asyncio.Lock()
        self._process: TrainingProcess | None = None
        self._job: Job | None = None  # the job whose worker runs now
        self._jobs_root = config.data_dir / "training"
        self._stopping = False
        self._progress: TrainingProgress | None = None
        self.last_result: RetrainResult | None = None
        # An interrupted job's snapshot holds people's messages: a forgotten person's must not wait for a resume.
        privacy.on_forgotten(self.forgotten)

    @property
    def running(self) -> bool:
        return self._lock.locked()

    @property
    def progress(self) -> TrainingProgress | None:
        """The running retrain's progress; None when none is running."""
        return self._progress if self.running else None

    # ----------------------------------------------------------------------------------------------- dataset
    def dataset_limits(self) -> DatasetLimits:
        t, p = self._config.training, self._config.prompt
        return DatasetLimits(
            max_context_turns=t.max_context_turns,
            max_message_chars=t.max_message_chars,
            eval_fraction=t.eval_fraction,
            budget=prompt_budget(p),
            quality=quality.QualityLimits(max_share_per_person=t.max_share_per_person),
        )

    async def build_dataset(self) -> Dataset:
        """The dataset as the next retrain would see it (consent and exclusions applied)."""
        await self._store.flush()
        allowed = await self._privacy.allowed_predicate()
        rows = await load_log_rows(self._store)
        return await asyncio.to_thread(
            build_dataset, rows, card=self._card, allowed=allowed, limits=self.dataset_limits()
        )

    # ----------------------------------------------------------------------------------------------- retrain
    async def tune(
        self, actor: Actor, on_progress: Progress | None = None, *, fresh: bool = False
    ) -> RetrainResult:
        """`retrain`, without needing a log: the card, its dialogue files and the teachings are enough."""
        return await self.retrain(actor, on_progress, fresh=fresh, need_log=False)

    async def retrain(
        self, actor: Actor, on_progress: Progress | None = None, *, fresh: bool = False, need_log: bool = True
    ) -> RetrainResult:
        """Train, gate and (maybe) promote; `on_progress` gets human-readable lines while it runs.

        Every run learns from the character's whole material (card, dialogue files, teachings) plus the consenting
        log; a retrain (`need_log`) refuses to run without enough of the log, a tune uses the log when it has enough.

        A job interrupted by a stop is resumed from its last checkpoint on its own dataset snapshot, unless `fresh`
        asks to start over (or the snapshot may no longer be used: the lines then say why it starts over).
        """
        if not actor.is_admin:
            what = "retrain" if need_log else "tune"
            return RetrainResult("refused", f"Only an admin can {what} the character.")
        if self._config.model.backend != "local":
            return RetrainResult(
                "refused", 'Retraining needs the local model backend (model.backend = "local").'
            )
        if self._lock.locked():
            return RetrainResult("busy", self.busy_message())
        async with self._lock:
            self._progress = TrainingProgress(
                phase="starting", line="starting", started_by=actor.name, started_at=time.time()
            )
            try:
                result = await self._retrain(actor, on_progress, fresh=fresh, need_log=need_log)
            except TrainingInterrupted as exc:
                result = RetrainResult("interrupted", str(exc))
            except TrainingCancelled:
                result = RetrainResult("cancelled", "Retrain cancelled; the serving model is unchanged.")
            except TrainingFailed as exc:
                result = RetrainResult("failed", f"Retrain failed, the serving model is unchanged: {exc}")
            except Exception as exc:
                log.exception("retrain failed")
                result = RetrainResult("failed", f"Retrain failed, the serving model is unchanged: {exc}")
            finally:
                self._process = None
                self._progress = None
            self.last_result = result
            log.info("retrain by %s: %s", actor.name, result.message)
            return result

    async def _retrain(
        self, actor: Actor, on_progress: Progress | None, *, fresh: bool, need_log: bool
    ) -> RetrainResult:
        async def say(line: str, **changes: Any) -> None:
            if self._progress is not None:
                self._progress = dataclasses.replace(self._progress, line=line, **changes)
            if on_progress is not None:
                outcome = on_progress(line)
                if asyncio.iscoroutine(outcome):
                    await outcome

        t, registry = self._config.training, self._serving.registry
        registry.clean_staging()
        prepared = await self._prepare(actor, say, fresh=fresh, need_log=need_log)
        if isinstance(prepared, RetrainResult):
            return prepared
        job, record, settings, resumed = prepared
        try:
            result = await self._run_worker(job, say)
        finally:
            job.release()
        decision = decide(
            result,
            min_improvement=t.min_improvement,
            general_tolerance=t.general_tolerance,
            persona_tolerance=t.persona_tolerance,
        )
        if self._progress is not None:
            self._progress = dataclasses.replace(self._progress, phase="gate", line="checking the gate…")
        metrics: dict[str, Any] = {k: v for k, v in result.items() if k not in ("event", "out_dir")}
        meta = {
            "base_model": self._config.model.source,
            "card": self._card.name,
            "learnt_from": record.dataset.get("summary", ""),
            "parent": self._serving.served_name(),
            "dataset": record.dataset,
            "metrics": metrics,
            "gate": decision.as_dict(),
            "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("train_file", "eval_file",
                                                      "out_dir", "extra", "checkpoint_dir", "resume_from",
                                                      "persona_checks")},
            "created_at": time.time(),
            "requested_by": actor.name,
            "promoted": False,
        }  # fmt: skip
        if resumed:
            meta["resumed"] = {"started_by": record.started_by, "started_at": record.started_at,
                               "from_step": int(result.get("resumed_from_step", 0))}  # fmt: skip
        version = registry.commit(Path(settings.out_dir), meta)
        learnt = _learnt_from(record)
        if not decision.promote:
            registry.prune_rejected()
            return RetrainResult(
                "rejected", f"{version.name} trained but not promoted — {decision.summary()}.{learnt}",
                version=version.name, decision=decision, metrics=metrics,
            )  # fmt: skip
        await say(f"{version.name} passed the gate; switching to it…", phase="swapping")
        swapped = await self._serving.activate(
            version.name, action="promote", by=actor.name, detail=decision.summary()
        )
        registry.mark(registry.get(version.name), promoted=True, promoted_at=time.time())
        return RetrainResult(
            "promoted",
            f"{version.name} is live — {decision.summary()}.{learnt} {swapped}",
            version=version.name,
            decision=decision,
            metrics=metrics,
        )

    async def _prepare(
        self, actor: Actor, say: Callable[..., Awaitable[None]], *, fresh: bool, need_log: bool
    ) -> tuple[Job, JobRecord, TrainSettings, bool] | RetrainResult:
        """The job to run, claimed and recorded as running, its settings, and whether it resumes; or a refusal."""
        t = self._config.training
        resumed = await self._resumable(say, fresh=fresh)
        if resumed is None:
            started = await self._new_job(actor, say, need_log=need_log)
            if isinstance(started, RetrainResult):
                return started
            job, record, settings = started
        else:
            job, record, resume_from = resumed
            settings = dataclasses.replace(
                TrainSettings.from_file(job.settings_path), resume_from=resume_from
            )
            record = dataclasses.replace(record, resumes=record.resumes + 1)
            job.claim()
        try:
            settings = dataclasses.replace(
                settings,
                out_dir=str(self._serving.registry.new_staging_dir()),
                serving_adapter=self._serving.served_adapter,  # the gate compares with what is served now
                checkpoint_dir=str(job.checkpoint_dir),
                checkpoint_every_s=t.checkpoint_every_s,
            )
            job.settings_path.write_text(settings.to_json(), encoding="utf-8")
            record = job.write(dataclasses.replace(record, state="running"))
        except BaseException:
            job.release()
            if resumed is None:
                job.finish("failed", "it could not be started")
            raise
        return job, record, settings, resumed is not None

    async def _new_job(
        self, actor: Actor, say: Callable[..., Awaitable[None]], *, need_log: bool
    ) -> tuple[Job, JobRecord, TrainSettings] | RetrainResult:
        """A new job — claimed, recorded, its dataset snapshot written — or the refusal to start."""
        t = self._config.training
        await say("building the dataset…", phase="dataset")
        dataset = await self.build_dataset()
        junk = self.quality_refusal(dataset)  # a mostly-junk log is refused here, before any training
        if need_log and junk:
            return RetrainResult("refused", junk, metrics={"dataset": dataset.stats.as_dict()})
        log_ok = not junk and len(dataset.train) >= t.min_examples and bool(dataset.eval)
        if need_log and not log_ok:
            s = dataset.stats
            return RetrainResult(
                "refused",
                f"Not enough to learn from: {len(dataset.train)} training and {len(dataset.eval)} held-out examples "
                f"from {s.conversations} conversation(s) (need {t.min_examples} and at least one held-out "
                f"conversation). {s.excluded_no_consent} replies were left out for lack of consent.{_dropped(s)} "
                "`tune` trains on the character's own material without a log.",
                metrics={"dataset": s.as_dict()},
            )
        tune = await self.build_tune_dataset(dataset if log_ok else None)
        if not tune.train or not tune.held_out:
            return RetrainResult(
                "refused",
                f"Nothing to tune on: {tune.summary()}. Add a dialogue file next to the card "
                "(see docs/training.md) or keep `training.learn_from_card` on.",
            )
        await say(f"learning from {tune.summary()}…", phase="dataset")
        job = Job(self._new_job_dir())
        job.claim()  # before the record says running, so that nobody takes it for a crash's leftover
        snapshot = tune.as_dataset()
        record = JobRecord(
            state="running",
            started_at=time.time(),
            started_by=actor.name,
            dataset={
                "train_examples": len(tune.train),
                "eval_examples": len(tune.held_out),
                "sha256": snapshot.sha256,
                "stats": dataset.stats.as_dict(),
                "sources": tune.sources,
                "summary": tune.summary(),
            },
        )
        try:
            job.write(record)  # before the data: from here on, however the process ends, a record leads to it
            snapshot.write(job.train_path, job.eval_path)
            tune.write_part("eval_dialogue", job.dialogue_eval_path)
        except BaseException:
            job.release()
            job.finish("failed", "its dataset could not be written")
            raise
        return job, record, self._settings(job.train_path, job.eval_path, Path())

    def quality_refusal(self, dataset: Dataset) -> str | None:
        """Why the log is too junky to train on: the data-quality step kept less than `min_quality_share` of the
        candidate examples. None when it kept enough (too few examples left is the usual refusal's business)."""
        s, least = dataset.stats, self._config.training.min_quality_share
        if not s.candidates or s.examples >= least * s.candidates:
            return None
        return (
            f"Not training: {s.candidates - s.examples} of {s.candidates} candidate examples were dropped by the "
            f"data-quality step ({quality.describe(s.quality_dropped)}); the {s.examples} left "
            f"({s.examples / s.candidates:.0%}) are under training.min_quality_share ({least:.0%}). "
            "`familiar export-dataset` writes what would be kept."
        )

    async def build_tune_dataset(self, log: Dataset | None) -> TuneDataset:
        """The character's material (card, dialogue files, teachings) plus ``log``, as one dataset."""
        from cogs.teach.service import load_teachings

        material = await asyncio.to_thread(character_data, self._config, self._card)
        allowed = await self._privacy.allowed_predicate()
        taught = taught_replies(await load_teachings(self._store), allowed)
        budget = self.dataset_limits().budget
        return await asyncio.to_thread(
            build_tune_dataset,
            self._card,
            dialogue=material.dialogue,
            card_derived=material.card_derived,
            teachings=taught,
            log=log,
            liked=log.liked if log is not None else (),
            budget=budget,
        )

    async def _run_worker(self, job: Job, say: Callable[..., Awaitable[None]]) -> dict[str, Any]:
        """Run the job's worker; record how it ended (interrupted by a stop: data kept; otherwise: data deleted)."""
        t = self._config.training

        async def relay(event: dict[str, Any]) -> None:
            # At most every checkpoint_every_s: how far a crash would find the job got.
            if event.get("event") == "checkpoint":
                step = int(event["step"])
                job.update(step=step, total_steps=int(event["total_steps"]), checkpoint_step=step)
            line = describe_event(event)
            if line:
                await say(line, **progress_fields(event))

        self._process = TrainingProcess(
            job.settings_path, launcher=t.launcher, threads=t.torch_threads or default_threads()
        )
        self._job = job
        if self._stopping:  # the stop came while the job was being prepared: do not start a worker now
            self._job = None
            raise TrainingInterrupted(self._interrupt(job))
        try:
            result = await self._process.run(relay)
        except TrainingCancelled:
            if self._stopping:
                raise TrainingInterrupted(self._interrupt(job)) from None
            job.finish("cancelled", "cancelled by an admin")
            raise
        except asyncio.CancelledError:  # the platform's retrain task was cancelled: the bot is stopping
            self._interrupt(job)
            raise
        except Exception as exc:
            job.finish("failed", str(exc))
            raise
        finally:
            self._job = None
        job.finish("finished")  # the examples are personal data: kept no longer than the run needs them
        return result

    def _interrupt(self, job: Job) -> str:
        """Record, durably, that the stop interrupted the job (its data stays for a resume); returns the line."""
        _, saved = job.latest_checkpoint()
        progress = self._progress
        old = job.read()
        first = old is None or old.state != "interrupted"  # close() records it, then the run's end does again
        step = max(saved, old.step if old else 0, (progress.step or 0) if progress else 0)
        total = (progress.total_steps if progress else None) or (old.total_steps if old else 0)
        record = job.update(
            state="interrupted", reason=STOPPED, step=step, total_steps=total, checkpoint_step=saved
        )
        where = record.progress() if record else "an unknown step"
        if first:
            log.warning(
                "retrain job %s interrupted by the stop at %s; the next retrain resumes it",
                job.path.name,
                where,
            )
        return f"Retrain interrupted by the stop at {where}; the serving model is unchanged. Retrain again to resume."

    async def _resumable(
        self, say: Callable[..., Awaitable[None]], *, fresh: bool
    ) -> tuple[Job, JobRecord, str] | None:
        """The interrupted job to resume (job, record, checkpoint path or ""), or None: start a new one."""
        found = find_interrupted(self._jobs_root)
        if found is None:
            return None
        job, record = found
        today = self._settings(job.train_path, job.eval_path, Path())
        why = (
            "a fresh start was asked for"
            if fresh
            else await resume.unusable(job, record, store=self._store, now=today)
        )
        if why:
            job.finish("discarded", why)
            log.info("retrain job %s discarded: %s", job.path.name, why)
            await say(f"not resuming the interrupted retrain: {why}; starting over…")
            return None
        path, _ = job.latest_checkpoint()
        await say(
            f"resuming the retrain interrupted at {record.progress()}, on the same data…", phase="resuming"
        )
        return job, record, str(path) if path else ""

    async def forgotten(self, platform: str, user_id: str) -> None:
        """Privacy listener: an interrupted job's snapshot may hold the person's messages, so it is deleted."""
        found = find_interrupted(self._jobs_root)
        if found is not None:
            found[0].finish("discarded", "someone asked to be forgotten")
            log.info("retrain job %s discarded: someone asked to be forgotten", found[0].path.name)

    def interrupted_notice(self) -> str | None:
        """What to tell the admin about a retrain a stop (or a crash) interrupted; None when there is none."""
        if self.running:
            return None
        found = find_interrupted(self._jobs_root)
        return None if found is None else resume.notice(found[1])

    def _settings(self, train_path: Path, eval_path: Path, out_dir: Path) -> TrainSettings:
        t, m, g = self._config.training, self._config.model, self._config.generation
        material = character_data(self._config, self._card)
        dialogue_eval = train_path.with_name(DIALOGUE_EVAL_FILE)
        return TrainSettings(
            source=m.source,
            device=m.device,
            serving_adapter=self._serving.served_adapter,
            lora_r=t.lora_r,
            lora_alpha=t.lora_alpha,
            lora_dropout=t.lora_dropout,
            target_modules=tuple(t.target_modules),
            learning_rate=t.learning_rate,
            epochs=t.epochs,
            max_steps=t.max_steps,
            min_steps=t.min_steps,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            warmup_ratio=t.warmup_ratio,
            max_seq_tokens=t.max_seq_tokens,
            seed=t.seed,
            torch_threads=t.torch_threads,
            persona_checks=persona_payload(self._config, self._card, material.checks),
            persona_char=self._card.char_name,
            persona_samples=t.persona_samples,
            persona_temperature=g.temperature,
            persona_top_p=g.top_p,
            persona_repetition_penalty=g.repetition_penalty,
            train_file=str(train_path),
            eval_file=str(eval_path),
            dialogue_eval_file=str(dialogue_eval) if dialogue_eval.is_file() else "",
            general_file=str(GENERAL_REFERENCE) if t.general_tolerance >= 0 else "",
            general_examples=t.general_examples,
            out_dir=str(out_dir),
        )

    def _new_job_dir(self) -> Path:
        root = self._jobs_root
        root.mkdir(parents=True, exist_ok=True)
        jobs = sorted(p for p in root.iterdir() if p.is_dir())
        for old in jobs[: max(0, len(jobs) - MAX_JOB_DIRS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        path = root / time.strftime("%Y%m%d-%H%M%S")
        while path.exists():
            path = path.with_name(path.name + "x")
        path.mkdir()
        return path

    async def cancel(self, actor: Actor) -> str:
        if not actor.is_admin:
            return "Only an admin can cancel a retrain."
        process = self._process
        if process is None:
            return "No retrain is running."
        await process.cancel()
        return "Retrain cancelled; the serving model is unchanged."

    async def close(self) -> None:
        """The bot is stopping: record a running job as interrupted, then stop its process (bounded, no waiting)."""
        self._stopping = True
        if self._job is not None:
            self._interrupt(self._job)  # first: a stop cut short later still leaves the record
        if self._process is not None:
            await self._process.cancel()

    async def scheduled_retrain(self) -> None:
        """The cron job's entry point."""
        result = await self.retrain(SCHEDULER_ACTOR)
        log.info("scheduled retrain: %s", result.message)

    def busy_message(self) -> str:
        """What to tell someone who asks for a retrain while one runs."""
        progress = self.progress
        if progress is None:
            return "A retrain is already running."
        return f"A retrain is already running (started by {progress.started_by}): {progress.line}"

    def retrain_lines(self) -> list[str]:
        """The middle of `model status`: the running retrain, or how the last one ended and one left interrupted."""
        progress = self.progress
        if progress is not None:
            return [f"Retrain running (started by {progress.started_by}): {progress.line}"]
        lines = []
        if self.last_result is not None:
            lines.append(f"Last retrain: {self.last_result.message}")
        interrupted = self.interrupted_notice()
        if interrupted:
            lines.append(interrupted)
        return lines
