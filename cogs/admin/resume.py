"""When an interrupted retrain may be resumed, and what the admin is told about it.

A resumed run trains on the interrupted job's own dataset snapshot, from its last checkpoint. That snapshot is only
used while it is still fair to: not after someone withdrew consent or was forgotten (it may hold their messages)
or gave it counting only later messages (it may hold earlier ones),
not once it is old (today's log is what should be learnt), and not when the training recipe or the character
changed (the checkpoint was made under other settings).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

from models.training.settings import TrainSettings

if TYPE_CHECKING:
    from bot.store import Store
    from cogs.admin.jobs import Job, JobRecord

RESUME_MAX_AGE_S = 7 * 86_400  # an interrupted job older than this starts over on today's log
STOPPED = "the bot stopped while it was training"
# Settings that may differ between a stopped run and its resumption (paths, threads); any other change starts over.
RESUME_FREE_SETTINGS = frozenset(
    {"train_file", "eval_file", "dialogue_eval_file", "general_file", "out_dir", "serving_adapter", "device",
     "torch_threads", "checkpoint_dir", "checkpoint_every_s", "resume_from", "extra"}
)  # fmt: skip


def recipe(settings: TrainSettings) -> dict[str, Any]:
    """The settings that decide what a run learns, as JSON reads them back (tuples as lists)."""
    kept = {k: v for k, v in dataclasses.asdict(settings).items() if k not in RESUME_FREE_SETTINGS}
    return dict(json.loads(json.dumps(kept)))


async def unusable(job: Job, record: JobRecord, *, store: Store, now: TrainSettings) -> str | None:
    """Why an interrupted job may not be resumed (its snapshot trained on) any more; None when it may.

    `now` is what a new run would be given today, to compare the recipe with.
    """
    if not job.has_snapshot():
        return "its dataset snapshot is gone"
    if time.time() - record.started_at > RESUME_MAX_AGE_S:
        return f"it is more than {RESUME_MAX_AGE_S // 86_400} days old"
    # A withdrawal (a forget withdraws too) after the snapshot was taken: it may hold that person's messages.
    if await store.fetchval(
        "SELECT 1 FROM consent WHERE training = 0 AND updated_at >= ? LIMIT 1", (record.started_at,)
    ):
        return "someone withdrew consent or asked to be forgotten since its data was taken"
    # Consent given since without history counts only later messages. After an `off` the snapshot may hold earlier
    # ones taken while they still counted; a first consent cannot be told apart from that, so it starts over too.
    if await store.fetchval(
        "SELECT 1 FROM consent WHERE training = 1 AND include_history = 0 AND since >= ? LIMIT 1",
        (record.started_at,),
    ):
        return "someone's consent changed since its data was taken (only their later messages count now)"
    try:
        saved = TrainSettings.from_file(job.settings_path)
    except (OSError, ValueError) as exc:
        return f"its settings cannot be read ({exc})"
    if recipe(saved) != recipe(now):
        return "the training settings or the character changed since"
    return None


def notice(record: JobRecord) -> str:
    """The line that tells the admin about an interrupted job (log at start, `model status`, the dashboard)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.started_at))
    return (
        f"The retrain started {when} by {record.started_by} was interrupted at {record.progress()} "
        f"({record.reason}). Retrain again to resume it on the same data; retrain fresh starts over."
    )
