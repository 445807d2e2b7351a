"""The database contract, on SQLite and PostgreSQL alike, through the models directly.

Whatever the API and the workers assume of the database is pinned here, once per backend: cascade
deletes, uniqueness, JSON and timezone-aware datetimes coming back as they went in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from frankensweep.db import (
    Candidate,
    CandidateStatus,
    Result,
    Sweep,
    SweepStatus,
    make_engine,
    make_sessionmaker,
)

IST = timezone(timedelta(hours=5, minutes=30))  # an offset far from UTC, with half hours


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def new_sweep(name: str = "s", plans: tuple[str, ...] = ("0-8", "0-6,2-8", "0-5,3-8")) -> Sweep:
    sweep = Sweep(
        name=name,
        model="org/model",
        num_layers=8,
        space={"kind": "explicit", "plans": list(plans)},
        evals=[{"kind": "perplexity", "tokens": 2048, "ctx": 512}],
        strategy={"kind": "grid"},
    )
    sweep.candidates = [
        Candidate(
            ordinal=i,
            plan=plan,
            digest=f"d{i:015d}",
            params={"i": i},
            is_reference=i == 0,
        )
        for i, plan in enumerate(plans)
    ]
    return sweep


def new_result(model: str = "org/model", plan_digest: str = "d0", eval_key: str = "ppl:1"):
    return Result(
        model=model,
        plan_digest=plan_digest,
        plan="0-8",
        eval_key=eval_key,
        eval_kind="perplexity",
        metrics={"perplexity": 17.47},
    )


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_sweep_with_candidates_roundtrips_with_defaults(sessions):
    with sessions() as session:
        session.add(new_sweep())
        session.commit()
    with sessions() as session:
        sweep = session.scalars(select(Sweep)).one()
        assert sweep.status == SweepStatus.queued
        assert sweep.error is None and sweep.started_at is None and sweep.finished_at is None
        assert [c.plan for c in sweep.candidates] == ["0-8", "0-6,2-8", "0-5,3-8"]
        assert [c.ordinal for c in sweep.candidates] == [0, 1, 2]
        assert [c.is_reference for c in sweep.candidates] == [True, False, False]
        for candidate in sweep.candidates:
            assert candidate.status == CandidateStatus.pending
            assert candidate.attempts == 0 and candidate.fidelity == 0 and candidate.round == 0
            assert candidate.sweep_id == sweep.id


def test_candidates_come_back_in_ordinal_order(sessions):
    with sessions() as session:
        sweep = new_sweep()
        sweep.candidates.reverse()  # inserted last ordinal first
        session.add(sweep)
        session.commit()
    with sessions() as session:
        assert [c.ordinal for c in session.scalars(select(Sweep)).one().candidates] == [0, 1, 2]


def test_deleting_a_sweep_through_the_orm_deletes_its_candidates(sessions):
    with sessions() as session:
        session.add_all([new_sweep("a"), new_sweep("b")])
        session.commit()
    with sessions() as session:  # candidates not loaded: the database's ON DELETE CASCADE acts
        session.delete(session.scalars(select(Sweep).where(Sweep.name == "a")).one())
        session.commit()
    with sessions() as session:
        assert count(session, Sweep) == 1
        assert count(session, Candidate) == 3
        assert {c.sweep.name for c in session.scalars(select(Candidate))} == {"b"}


def test_deleting_a_sweep_in_sql_cascades(sessions):
    """A bulk DELETE bypasses the ORM: only the foreign key (PRAGMA foreign_keys on SQLite)."""
    with sessions() as session:
        session.add_all([new_sweep("a"), new_sweep("b")])
        session.commit()
        session.execute(delete(Sweep).where(Sweep.name == "a"))
        session.commit()
        assert count(session, Candidate) == 3


def test_candidate_of_a_missing_sweep_is_refused(sessions):
    with sessions() as session:
        session.add(Candidate(sweep_id=12345, ordinal=0, plan="0-8", digest="x", params={}))
        with pytest.raises(IntegrityError):
            session.commit()


def test_candidate_digest_is_unique_within_a_sweep(sessions):
    with sessions() as session:
        first, second = new_sweep("a"), new_sweep("b")  # same digests in two sweeps: fine
        session.add_all([first, second])
        session.commit()
        session.add(
            Candidate(sweep_id=first.id, ordinal=9, plan="0-8", digest=first.candidates[0].digest)
        )
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        assert count(session, Candidate) == 6


@pytest.mark.parametrize("differs", ["model", "plan_digest", "eval_key"])
def test_result_triple_is_unique(sessions, differs):
    with sessions() as session:
        session.add(new_result())
        session.commit()
        session.add(new_result(**{differs: "other"}))  # one part differs: a new result
        session.commit()
        session.add(new_result())
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        assert count(session, Result) == 2


def test_json_columns_roundtrip(sessions):
    space = {
        "kind": "overlap",
        "slice_size": [8, 14, 2],
        "nested": {"deep": [{"a": None}, True, False, -1, 2**40]},
        "text": 'naïve — 日本語 "quoted" \\ back\nslash',
        "empty": {},
        "list": [],
    }
    metrics = {"perplexity": 17.470000000000001, "nll": 2.8604, "tiny": 1e-300, "big": 1.5e300}
    with sessions() as session:
        sweep = new_sweep()
        sweep.space = space
        sweep.evals = [{"kind": "perplexity"}, {"kind": "eq_bench", "questions": [1, 2, 3]}]
        session.add(sweep)
        result = new_result()
        result.metrics = metrics
        result.details = {"answers": ["a", "b"], "scores": [0.5, 1.0]}
        session.add(result)
        session.add(new_result(plan_digest="no-details"))
        session.commit()
    with sessions() as session:
        sweep = session.scalars(select(Sweep)).one()
        assert sweep.space == space
        assert sweep.evals[1] == {"kind": "eq_bench", "questions": [1, 2, 3]}
        assert sweep.candidates[1].params == {"i": 1}
        stored = session.scalars(select(Result).where(Result.plan_digest == "d0")).one()
        assert stored.metrics == metrics
        assert stored.details == {"answers": ["a", "b"], "scores": [0.5, 1.0]}
        bare = session.scalars(select(Result).where(Result.plan_digest == "no-details")).one()
        assert bare.details is None
        # an absent `details` is SQL NULL (not JSON null), so IS NULL finds it
        assert session.scalar(select(func.count()).where(Result.details.is_(None))) == 1


def assert_same_instant(value: datetime | None, expected: datetime) -> None:
    assert value is not None
    assert value.tzinfo is not None and value.utcoffset() is not None, f"naive: {value!r}"
    assert value == expected  # aware datetimes compare as instants, whatever their offsets


def test_timezone_aware_datetimes_roundtrip(sessions):
    started = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=IST)
    finished = datetime(2026, 3, 29, 2, 0, 0, 999999, tzinfo=UTC)
    with sessions() as session:
        sweep = new_sweep()
        sweep.started_at, sweep.finished_at = started, finished
        sweep.candidates[0].started_at = started
        session.add(sweep)
        session.commit()
    with sessions() as session:
        sweep = session.scalars(select(Sweep)).one()
        assert_same_instant(sweep.started_at, started)
        assert_same_instant(sweep.finished_at, finished)
        assert_same_instant(sweep.candidates[0].started_at, started)
        assert sweep.finished_at - sweep.started_at == finished - started
        # ordering and filtering by time happen in the database: they must see the same instant
        before = started - timedelta(microseconds=1)
        assert session.scalar(select(func.count()).where(Sweep.started_at > before)) == 1
        assert session.scalar(select(func.count()).where(Sweep.started_at < finished)) == 1


def test_default_timestamps_are_aware_and_now(sessions):
    before = datetime.now(UTC)
    with sessions() as session:
        session.add(new_sweep())
        session.add(new_result())
        session.commit()
    after = datetime.now(UTC)
    with sessions() as session:
        for value in (
            session.scalars(select(Sweep)).one().created_at,
            session.scalars(select(Result)).one().created_at,
        ):
            assert value.tzinfo is not None, f"naive: {value!r}"
            assert before <= value <= after
