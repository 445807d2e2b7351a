"""Database models and sessions, shared by the API and the workers (no FastAPI, no torch)."""

from frankensweep.core.status import (
    FINISHED_CANDIDATE,
    FINISHED_SWEEP,
    CandidateStatus,
    SweepStatus,
)
from frankensweep.db.models import Base, Candidate, Result, Sweep, Worker
from frankensweep.db.session import make_engine, make_sessionmaker, upgrade

__all__ = [
    "FINISHED_CANDIDATE",
    "FINISHED_SWEEP",
    "Base",
    "Candidate",
    "CandidateStatus",
    "Result",
    "Sweep",
    "SweepStatus",
    "Worker",
    "make_engine",
    "make_sessionmaker",
    "upgrade",
]
