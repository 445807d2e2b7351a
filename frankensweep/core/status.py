"""The states of sweeps and candidates, and which of them are final (the one place for both)."""

from __future__ import annotations

import enum

__all__ = ["FINISHED_CANDIDATE", "FINISHED_SWEEP", "CandidateStatus", "SweepStatus"]


class SweepStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    cancelled = "cancelled"
    failed = "failed"


class CandidateStatus(enum.StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    pruned = "pruned"
    cancelled = "cancelled"


#: a sweep in one of these states never changes again
FINISHED_SWEEP = frozenset({SweepStatus.done, SweepStatus.cancelled, SweepStatus.failed})
#: a candidate in one of these states is evaluated no further (a promotion makes it pending again)
FINISHED_CANDIDATE = frozenset(
    {
        CandidateStatus.done,
        CandidateStatus.failed,
        CandidateStatus.pruned,
        CandidateStatus.cancelled,
    }
)
