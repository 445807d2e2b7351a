"""SQLAlchemy models: sweeps, their candidates, and results shared across sweeps.

A *result* is the score of one (base model, plan, eval settings) triple. Candidates do not own
results: a candidate's scores are the results whose triple matches it, so identical candidates of
different sweeps reuse one evaluation, and writing a result twice is a no-op (idempotent upsert).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from frankensweep.core.status import (
    CandidateStatus,
    SweepStatus,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware datetime stored as UTC (SQLite keeps no offset: it is re-attached)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict] = {dict[str, Any]: JSON, list[Any]: JSON}


class Sweep(Base):
    """One submitted search: base model (and source models) + space + evals + strategy."""

    __tablename__ = "sweeps"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never given out twice

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(1000))
    # what its results are stored under: the model and a digest of its files (sweeps/config.py)
    model_key: Mapped[str] = mapped_column(String(1000), default="")
    # how workers load the model (models/load.py LoadOptions); NULL: stored before load options
    load_options: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # what model_key digests: each model's fingerprint and the keyed load options (workers
    # tell which model changed since submission); NULL for sweeps stored before
    identity: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # the memory planner's estimate of a worker's peak at submission (sweeps/memory.py):
    # estimate_bytes, limit_bytes, peak, parts, ...; NULL for sweeps stored before
    memory: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    num_layers: Mapped[int] = mapped_column(Integer)
    # named source models (name -> HF directory, hub id or .gguf) its plans may take slices from
    models: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    space: Mapped[dict[str, Any]]
    evals: Mapped[list[Any]]
    strategy: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=SweepStatus.queued, index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # when the current round's work units were sent to the broker (scaled mode); NULL: to send
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # evaluation round in progress (strategies propose one round at a time, see strategies/)
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the strategy has nothing more to propose after the last round: the sweep is done
    search_finished: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    candidates: Mapped[list[Candidate]] = relationship(
        back_populates="sweep",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Candidate.ordinal",
    )


class Candidate(Base):
    """One plan inside a sweep, with its status; the base model's own plan is the reference."""

    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("sweep_id", "digest", name="uq_candidate_sweep_digest"),
        {"sqlite_autoincrement": True},  # ids are never given out twice
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    plan: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[dict[str, Any]]
    is_reference: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=CandidateStatus.pending, index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # fidelity level reached (index into the strategy's ladder; the top level = the full evals)
    fidelity: Mapped[int | None] = mapped_column(Integer, default=0)
    # the round it was last evaluated in
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    trial: Mapped[int | None] = mapped_column(Integer, default=None)  # Optuna trial number
    pruned_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # claims by workers over every fidelity level (a worker that died mid-evaluation adds one)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # claims at its current fidelity level (a promotion starts again at 0): the give-up rule's count
    level_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(String(200), default=None)  # task id
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    sweep: Mapped[Sweep] = relationship(back_populates="candidates")


class Result(Base):
    """The score of one (model, plan, eval settings): written once, read by every sweep.

    ``model`` holds the sweep's model key (the model and a digest of its files), so a rewritten
    checkpoint never reuses the scores of the old one.
    """

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("model", "plan_digest", "eval_key", name="uq_result_triple"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(1000))
    plan_digest: Mapped[str] = mapped_column(String(16))
    plan: Mapped[str] = mapped_column(Text)
    eval_key: Mapped[str] = mapped_column(String(64))  # eval kind + digest of its settings
    eval_kind: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]]  # e.g. {"perplexity": 17.47, "nll": ..., "scored_tokens": ...}
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # raw answers
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Worker(Base):
    """A worker process's heartbeat: alive when ``last_seen`` is recent; what it holds.

    Written every few seconds by a thread of the process evaluating (``worker/heartbeat.py``).
    A unit whose holder has been silent longer than the grace is handed to another worker.
    """

    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("name", "pid", name="uq_worker_name_pid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # Celery node name (w1@host), or embedded@host
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # the unit it holds: claimant (task id), sweep, candidate ids, what it evaluates right now
    claimant: Mapped[str | None] = mapped_column(String(200), default=None)
    sweep_id: Mapped[int | None] = mapped_column(Integer, default=None)
    candidates: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    activity: Mapped[str | None] = mapped_column(Text, default=None)
    # when it began holding what it holds now, or began to idle (an idle worker's queue is empty)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
