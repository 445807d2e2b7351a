"""A worker process's heartbeat: a thread that records every few seconds that it is alive.

Each process that evaluates work units (a Celery pool process, the embedded worker's process)
runs one :class:`Heartbeat`. Its thread writes the process's row in ``workers`` every
``FRANKENSWEEP_HEARTBEAT_SECONDS``: when it was last seen, the unit it holds and what it evaluates
now. The API's reconciler hands a unit to another worker once its holder has been silent for
``FRANKENSWEEP_HEARTBEAT_GRACE`` (``worker/dispatch.py``); a live worker's unit is never taken,
however long it runs. A failed write (the database restarting) is retried on the next beat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psutil
from sqlalchemy.orm import Session, sessionmaker

from frankensweep.db.models import utcnow
from frankensweep.db.workers import Holding, beat, forget, live_workers, namesakes

__all__ = ["Heartbeat", "Holding"]

log = logging.getLogger(__name__)


class Heartbeat:
    """The liveness of this process as worker ``name``; ``start`` it, then ``hold`` units."""

    def __init__(
        self, sessions: sessionmaker[Session], name: str, every: float, grace: float
    ) -> None:
        self.sessions, self.name, self.every, self.grace = sessions, name, every, grace
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._holding: Holding | None = None
        self._activity: str | None = None
        self._lock = threading.Lock()  # one beat at a time (the thread, and hold/release)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="frankensweep-heartbeat")
        self._thread.daemon = True

    def start(self) -> Heartbeat:
        """Beat now and every ``every`` seconds; forget rows of this name and host whose
        process is gone (a worker restarted under the same name)."""
        try:
            with self.sessions() as s:
                for row in namesakes(s, self.name, self.host):
                    if row.pid != self.pid and not psutil.pid_exists(row.pid):
                        forget(s, self.name, row.pid)
        except Exception:  # the database may be down: the reconciler drops stale rows later
            log.warning("rows of earlier %s processes not dropped", self.name)
        self.beat()
        self._thread.start()
        return self

    @contextmanager
    def holding(self, holding: Holding, activity: str | None = None) -> Iterator[None]:
        """This process holds ``holding`` until the block ends; both recorded at once."""
        self._holding, self._activity = holding, activity
        self.beat()
        try:
            yield
        finally:
            self._holding = self._activity = None
            self.beat()

    def doing(self, activity: str) -> None:
        """What the held unit evaluates now (written with the next beat)."""
        self._activity = activity

    def beat(self) -> bool:
        """Write the row now; False if the database could not be reached."""
        with self._lock:
            try:
                with self.sessions() as s:
                    beat(s, self.name, self.host, self.pid, self._holding, self._activity)
            except Exception:  # the database may be restarting: the next beat tries again
                log.warning("heartbeat of %s (pid %d) not written", self.name, self.pid)
                return False
        return True

    def held_elsewhere(self, claimant: str) -> bool:
        """Whether another live process holds ``claimant`` (the broker delivered a unit again
        while its first worker still evaluates it: a unit running past the visibility timeout).

        Live: seen within the grace, and, on this host, its process still exists.
        """
        since = utcnow() - timedelta(seconds=self.grace)
        with self.sessions() as s:
            rows = [w for w in live_workers(s, since) if w.claimant == claimant]
        return any(
            (w.host, w.pid) != (self.host, self.pid)
            and (w.host != self.host or psutil.pid_exists(w.pid))
            for w in rows
        )

    def stop(self) -> None:
        """Stop beating and delete the row (a clean shutdown: nothing is held any more)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.every + 5)
        try:
            with self.sessions() as s:
                forget(s, self.name, self.pid)
        except Exception:
            log.warning("heartbeat row of %s (pid %d) not deleted", self.name, self.pid)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()
