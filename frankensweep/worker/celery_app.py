"""The Celery app of scaled mode: queue ``gpu`` on Redis, late acks, one task at a time."""

from __future__ import annotations

from celery import Celery

from frankensweep.core.config import Settings, get_settings


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if not settings.broker_url:
        raise RuntimeError("FRANKENSWEEP_BROKER_URL is not set: scaled mode needs a Redis URL")
    app = Celery("frankensweep", broker=settings.broker_url, include=["frankensweep.worker.tasks"])
    limit = settings.task_time_limit
    app.conf.update(
        task_default_queue="gpu",
        task_acks_late=True,  # a unit is acknowledged only once evaluated
        task_reject_on_worker_lost=True,  # a killed worker process puts its unit back at once
        worker_prefetch_multiplier=1,  # a GPU worker holds one unit at a time
        # none by default: an honest long unit is never failed for being long
        task_time_limit=limit,
        # a minute before the hard limit, or a quarter of a short limit (tests use ~30 s)
        task_soft_time_limit=None if limit is None else limit - min(60, limit // 4),
        broker_transport_options={
            # a message whose worker vanished unacknowledged goes back to the queue after this:
            # a guard against broker-level loss only (a silent worker's unit is handed over
            # after the heartbeat grace, see worker/dispatch.py::hand_over)
            "visibility_timeout": settings.redelivery_seconds,
            # look for such units every 10 s (kombu's default scans every 10th tick: 100 s)
            "unacked_restore_throttle": 1,
        },
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # a worker whose broker went away keeps reconnecting (after 2, 4, 6 ... s) instead of
        # exiting after 100 tries; the units it was running finish and are acknowledged
        broker_connection_max_retries=None,
        # and keeps its running unit meanwhile: pinned, Celery 6 flips the default to cancel it
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
    )
    return app


celery_app = make_celery() if get_settings().broker_url else None
