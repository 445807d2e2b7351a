"""Celery tasks. A worker process loads each base model once and keeps it.

Each pool process beats from the moment it starts (``worker_process_init``), idle or not: the
units of a round are sized to the workers alive, and a unit is handed to another worker once
its holder has been silent for the heartbeat grace (``worker/heartbeat.py``).
"""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

from frankensweep.core.config import get_settings
from frankensweep.db import make_engine, make_sessionmaker
from frankensweep.db.session import DATABASE_DOWN
from frankensweep.sweeps.rounds import advance
from frankensweep.sweeps.status import fail_claimed
from frankensweep.worker.dispatch import send_round
from frankensweep.worker.heartbeat import Heartbeat, Holding
from frankensweep.worker.loading import MODELS
from frankensweep.worker.runner import run_unit

log = logging.getLogger(__name__)

#: the Celery node name (``-n``), known in the main process before the pool processes fork
_node: str | None = None
#: this process's heartbeat (one per pool process)
_heartbeat: Heartbeat | None = None


@lru_cache
def _sessions():
    return make_sessionmaker(make_engine(get_settings().database_url))


def heartbeat(node: str | None = None) -> Heartbeat:
    """This process's heartbeat, started on first use (a forked process starts its own)."""
    global _heartbeat
    if _heartbeat is None or _heartbeat.pid != os.getpid():
        settings = get_settings()
        name = node or _node or f"celery@{socket.gethostname()}"
        every, grace = settings.heartbeat_seconds, settings.heartbeat_grace
        _heartbeat = Heartbeat(_sessions(), name, every, grace).start()
    return _heartbeat


@celeryd_after_setup.connect
def _remember_node(sender, **_kwargs) -> None:
    global _node
    _node = str(sender)


@worker_process_init.connect
def _start_heartbeat(**_kwargs) -> None:
    _sessions.cache_clear()  # a connection pool is never shared with the parent process
    heartbeat()


@worker_process_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    if _heartbeat is not None and _heartbeat.pid == os.getpid():
        _heartbeat.stop()


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
    beat = heartbeat(self.request.hostname)
    if beat.held_elsewhere(claimant):  # delivered again while its first worker still runs it
        log.info("unit %s is held by a live worker: left to it", claimant)
        return {"held_elsewhere": True}
    try:
        with beat.holding(Holding(claimant, sweep_id, tuple(candidate_ids))):
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
                activity=beat.doing,
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
    send_round(_sessions(), self.app, sweep_id, settings)
    return report.__dict__ if report else {"timed_out": True}
