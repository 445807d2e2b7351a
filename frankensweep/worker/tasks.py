"""Celery tasks. A worker process loads each base model once and keeps it."""

from __future__ import annotations

from functools import lru_cache

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from frankensweep.core.config import get_settings
from frankensweep.db import make_engine, make_sessionmaker
from frankensweep.db.session import DATABASE_DOWN
from frankensweep.sweeps.rounds import advance
from frankensweep.sweeps.status import fail_claimed
from frankensweep.worker.dispatch import send_round
from frankensweep.worker.loading import MODELS
from frankensweep.worker.runner import run_unit


@lru_cache
def _sessions():
    return make_sessionmaker(make_engine(get_settings().database_url))


@shared_task(
    name="frankensweep.run_unit",
    bind=True,
    # the database went away: the unit is sent again with the same task id, so it resumes its
    # own claims, and the results it stored stay (upserts are no-ops)
    autoretry_for=DATABASE_DOWN,
    retry_backoff=1,  # 1, 2, 4, 8, 16, then 30 s between attempts
    retry_backoff_max=30,
    retry_jitter=False,
    max_retries=120,  # about an hour of a database that stays down, then the unit fails
)
def run_unit_task(self, sweep_id: int, candidate_ids: list[int]) -> dict:
    """Evaluate one work unit; the claimant is the task id, so a redelivery resumes it."""
    settings = get_settings()
    claimant = f"celery:{self.request.id}"
    try:
        report = run_unit(
            _sessions(),
            sweep_id,
            candidate_ids,
            claimant=claimant,
            models=MODELS,
            device=settings.device,
            dtype=settings.dtype,
            memory_budget=settings.prefix_memory_budget,
            max_attempts=settings.max_attempts,
        )
    except SoftTimeLimitExceeded:  # what is left of the unit fails, the sweep goes on
        reason = (
            f"time limit exceeded: the work unit ran over {settings.task_time_limit} s "
            "(FRANKENSWEEP_TASK_TIME_LIMIT; or lower FRANKENSWEEP_UNIT_SIZE)"
        )
        with _sessions()() as s:
            fail_claimed(s, sweep_id, claimant, reason)
        report = None
    # if this unit ended its round, store the next; send it unless sent (also after a redelivery)
    advance(_sessions(), sweep_id)
    send_round(_sessions(), self.app, sweep_id, settings.unit_size)
    return report.__dict__ if report else {"timed_out": True}
