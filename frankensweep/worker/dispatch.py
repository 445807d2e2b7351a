"""Dispatch: who evaluates a sweep's work units. Embedded: a thread here; scaled: Celery."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from frankensweep.core.config import Settings
from frankensweep.db import Candidate, CandidateStatus, Sweep, Worker
from frankensweep.db.models import utcnow
from frankensweep.db.store import (
    pending_candidates,
    release_running,
    rowcount,
    status_counts,
    unfinished_sweeps,
)
from frankensweep.db.workers import (
    drop_stale,
    end_claim,
    idle_workers,
    live_workers,
    release_holder,
    silent_claims,
    workers_of_claimants,
)
from frankensweep.sweeps.rounds import advance
from frankensweep.worker.heartbeat import Heartbeat, Holding
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
        name = f"embedded@{socket.gethostname()}"
        self.heartbeat = Heartbeat(
            sessions, name, settings.heartbeat_seconds, settings.heartbeat_grace
        ).start()
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
        self.heartbeat.stop()

    def _loop(self) -> None:
        while (sweep_id := self._queue.get()) is not None:
            try:
                self._run_sweep(sweep_id)
            except Exception:
                log.exception("sweep %s: worker error", sweep_id)

    def _run_sweep(self, sweep_id: int) -> None:
        run_sweep(
            self.sessions, self.settings, sweep_id, self.claimant, self.models, self.heartbeat
        )


def run_sweep(
    sessions: sessionmaker[Session],
    settings: Settings,
    sweep_id: int,
    claimant: str,
    models: ModelCache = MODELS,
    heartbeat: Heartbeat | None = None,
    on_round: Callable[[], None] | None = None,
) -> None:
    """Evaluate a stored sweep in this process, round after round, until its strategy proposes
    no more (the embedded worker, whose ``heartbeat`` shows what it holds; benchmarks too, which
    look at the sweep at the start of each round with ``on_round``)."""
    while True:
        if on_round is not None:
            on_round()
        with sessions() as s:
            units = plan_units(pending_candidates(s, sweep_id), settings.unit_size)
        for unit in units:
            held = Holding(claimant, sweep_id, tuple(unit))
            with heartbeat.holding(held) if heartbeat else nullcontext():
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
                    activity=heartbeat.doing if heartbeat else None,
                )
        if advance(sessions, sweep_id) is None:
            return


class CeleryDispatcher:
    """Sends each work unit to the ``gpu`` queue; the broker keeps them across restarts.

    Workers store and send the next round themselves; a reconciler thread here repairs what a
    fault left undone: a unit whose worker went silent (handed to another worker), a round never
    sent (the broker was down), a round whose last unit died before storing the next, units the
    broker lost (sent long ago, never claimed).
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
            send_round(self.sessions, self.celery, sweep_id, self.settings)
        except Exception as exc:  # broker down: stored all the same, the reconciler sends it
            log.warning("sweep %s stored, not sent yet (%s); will retry", sweep_id, exc)

    def resume(self) -> None:
        """Hand over silent workers' units; store rounds whose predecessor ended unseen, send
        unsent or lost ones."""
        hand_over(self.sessions, self.celery, self.settings)
        with self.sessions() as s:
            ids = [sw.id for sw in unfinished_sweeps(s)]
            for sweep in lost_rounds(s, self.settings):
                sweep.dispatched_at = None  # sent again below
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


def alive(session: Session, settings: Settings) -> list[Worker]:
    """Worker processes heard from within the heartbeat grace."""
    return live_workers(session, utcnow() - timedelta(seconds=settings.heartbeat_grace))


def send_units(
    celery, sweep_id: int, candidates: Sequence[Candidate], settings: Settings, workers: int
) -> None:
    """Send these candidates to the ``gpu`` queue as work units sized to ``workers``."""
    for unit in plan_units(candidates, settings.unit_size, workers):
        celery.send_task("frankensweep.run_unit", args=[sweep_id, unit], queue="gpu")


def send_round(sessions: sessionmaker[Session], celery, sweep_id: int, settings: Settings) -> None:
    """Send the current round's units to the ``gpu`` queue, once: ``dispatched_at`` is set by
    compare-and-set in the transaction that sends (concurrent callers, the API's request and
    its reconciler or a worker, wait on the row and find it set; a failed send leaves it
    unset). Units are sized so that every live worker gets one when there are candidates enough.
    """
    with sessions() as s:
        mark = update(Sweep).where(Sweep.id == sweep_id, Sweep.dispatched_at.is_(None))
        if not rowcount(s.execute(mark.values(dispatched_at=utcnow()))):
            return  # sent already (or no such sweep)
        send_units(
            celery, sweep_id, pending_candidates(s, sweep_id), settings, len(alive(s, settings))
        )
        s.commit()


def lost_rounds(session: Session, settings: Settings) -> list[Sweep]:
    """Unfinished sweeps whose current round was sent but whose pending candidates cannot be
    in the queue: sent more than the heartbeat grace ago while a worker alive has held nothing
    for the grace (it would have taken a queued unit), or sent more than the broker's
    visibility timeout ago with none of the sweep running. The broker lost them (a Redis
    restarted without its append-only file, a message gone missing); sending the pending
    candidates again is harmless if it did not (claims)."""
    now = utcnow()
    grace = timedelta(seconds=settings.heartbeat_grace)
    idle = idle_workers(session, now - grace)
    lost = []
    for sweep in unfinished_sweeps(session):
        if sweep.dispatched_at is None:
            continue
        counts = status_counts(session, sweep.id)
        if not counts[CandidateStatus.pending]:
            continue
        idled = idle and sweep.dispatched_at < now - grace
        expired = sweep.dispatched_at < now - timedelta(seconds=settings.redelivery_seconds)
        if idled or (expired and not counts[CandidateStatus.running]):
            why = f"{idle[0].name} (pid {idle[0].pid}) idled" if idled else "time passed"
            log.warning(
                "sweep %s: %d candidates sent at %s never taken (%s): sending them again",
                sweep.id,
                counts[CandidateStatus.pending],
                f"{sweep.dispatched_at:%H:%M:%S}",
                why,
            )
            lost.append(sweep)
    return lost


def hand_over(sessions: sessionmaker[Session], celery, settings: Settings) -> int:
    """Units whose holder has been silent for the heartbeat grace go to other workers: the
    silent claim ends (its candidates pending again, attempts kept) and they are sent again as
    new units. Should the silent worker come back, its results are written once all the same
    (claims and result upserts make the duplicate harmless). Returns the candidates handed over.
    """
    now = utcnow()
    silent_since = now - timedelta(seconds=settings.heartbeat_grace)
    handed = 0
    with sessions() as s:
        drop_stale(s, now - timedelta(seconds=max(3600.0, 10 * settings.heartbeat_grace)))
        s.commit()
        claims = silent_claims(s, silent_since)
        if not claims:
            return 0
        holders = {w.claimant: w for w in workers_of_claimants(s, list(claims))}
        workers = len(alive(s, settings))
        for claimant, (sweep_id, ids) in claims.items():
            if not end_claim(s, claimant, ids):
                continue
            holder = holders.get(claimant)
            who = f"worker {holder.name} (pid {holder.pid})" if holder else "a worker"
            last = holder.last_seen if holder else None
            silent = f"silent since {last:%H:%M:%S} UTC" if last else "never heard from"
            release_holder(s, claimant, f"{silent}: its unit went to another worker")
            candidates = list(s.scalars(select(Candidate).where(Candidate.id.in_(ids))))
            send_units(celery, sweep_id, candidates, settings, workers)
            # just sent: not a round the broker lost (see lost_rounds)
            s.execute(update(Sweep).where(Sweep.id == sweep_id).values(dispatched_at=now))
            log.warning(
                "sweep %s: %s holding candidates %s is %s: sent to another worker",
                sweep_id,
                who,
                ids,
                silent,
            )
            handed += len(ids)
        s.commit()  # after sending: a send that fails leaves the claim to the next try
    return handed


def make_dispatcher(sessions: sessionmaker[Session], settings: Settings) -> Dispatcher:
    if settings.embedded:
        return EmbeddedDispatcher(sessions, settings)
    return CeleryDispatcher(sessions, settings)
