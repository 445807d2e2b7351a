"""Dispatch: who evaluates a sweep's work units. Embedded: a thread here; scaled: Celery."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from frankensweep.core.config import Settings
from frankensweep.db import CandidateStatus, Sweep
from frankensweep.db.models import utcnow
from frankensweep.db.store import (
    pending_candidates,
    release_running,
    status_counts,
    unfinished_sweeps,
)
from frankensweep.sweeps.rounds import advance
from frankensweep.worker.loading import MODELS, ModelCache
from frankensweep.worker.runner import plan_units, run_unit

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def submit(self, sweep_id: int) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...


class EmbeddedDispatcher:
    """One in-process worker thread; sweeps run one after another, in submission order."""

    claimant = "embedded"

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.models = MODELS
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="frankensweep-worker", daemon=True)
        self._thread.start()

    def submit(self, sweep_id: int) -> None:
        self._queue.put(sweep_id)

    def resume(self) -> None:
        """After a restart: candidates left running by the dead process go back to pending."""
        with self.sessions() as s:
            released = release_running(s)
            ids = [sweep.id for sweep in unfinished_sweeps(s)]
        if ids:
            log.info("resuming sweeps %s (%d candidates released)", ids, released)
        for sweep_id in ids:
            self.submit(sweep_id)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (sweep_id := self._queue.get()) is not None:
            try:
                self._run_sweep(sweep_id)
            except Exception:
                log.exception("sweep %s: worker error", sweep_id)

    def _run_sweep(self, sweep_id: int) -> None:
        run_sweep(self.sessions, self.settings, sweep_id, self.claimant, self.models)


def run_sweep(
    sessions: sessionmaker[Session],
    settings: Settings,
    sweep_id: int,
    claimant: str,
    models: ModelCache = MODELS,
) -> None:
    """Evaluate a stored sweep in this process, round after round, until its strategy proposes
    no more (the embedded worker; benchmarks too)."""
    while True:
        with sessions() as s:
            units = plan_units(pending_candidates(s, sweep_id), settings.unit_size)
        for unit in units:
            run_unit(
                sessions,
                sweep_id,
                unit,
                claimant,
                models,
                device=settings.device,
                dtype=settings.dtype,
                memory_budget=settings.prefix_memory_budget,
                max_attempts=settings.max_attempts,
            )
        if advance(sessions, sweep_id) is None:
            return


class CeleryDispatcher:
    """Sends each work unit to the ``gpu`` queue; the broker keeps them across restarts.

    Workers store and send the next round themselves; a reconciler thread here repairs what a
    fault left undone: a round never sent (the broker was down), a round whose last unit died
    before storing the next, units the broker lost (sent long ago, never claimed).
    """

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        from frankensweep.worker.celery_app import make_celery

        self.sessions = sessions
        self.settings = settings
        self.celery = make_celery(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._reconcile_loop, name="frankensweep-reconciler", daemon=True
        )
        self._thread.start()

    def submit(self, sweep_id: int) -> None:
        try:
            send_round(self.sessions, self.celery, sweep_id, self.settings.unit_size)
        except Exception as exc:  # broker down: stored all the same, the reconciler sends it
            log.warning("sweep %s stored, not sent yet (%s); will retry", sweep_id, exc)

    def resume(self) -> None:
        """Store rounds whose predecessor ended unseen, send unsent or lost ones."""
        with self.sessions() as s:
            sweeps = unfinished_sweeps(s)
            ids = [sw.id for sw in sweeps]
            stale = utcnow().timestamp() - self.settings.redelivery_seconds
            lost = [
                sw
                for sw in sweeps
                if sw.dispatched_at is not None
                and sw.dispatched_at.timestamp() < stale
                and not status_counts(s, sw.id)[CandidateStatus.running]
            ]
            if lost:  # sent before the broker's own redelivery deadline and nobody took them
                for sweep in lost:
                    sweep.dispatched_at = None
                s.commit()
        for sweep_id in ids:
            advance(self.sessions, sweep_id)
            self.submit(sweep_id)

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_seconds):
            try:
                self.resume()
            except Exception:  # the database may be down: try again next time
                log.warning("reconciling sweeps failed; retrying", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.celery.close()


def send_round(sessions: sessionmaker[Session], celery, sweep_id: int, unit_size: int) -> None:
    """Send the current round's units to the ``gpu`` queue, once (``dispatched_at`` marks it)."""
    with sessions() as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or sweep.dispatched_at is not None:
            return
        for unit in plan_units(pending_candidates(s, sweep_id), unit_size):
            celery.send_task("frankensweep.run_unit", args=[sweep_id, unit], queue="gpu")
        sweep.dispatched_at = utcnow()
        s.commit()


def make_dispatcher(sessions: sessionmaker[Session], settings: Settings) -> Dispatcher:
    if settings.embedded:
        return EmbeddedDispatcher(sessions, settings)
    return CeleryDispatcher(sessions, settings)
