"""The layer prior of a loaded base model: read from the database, or computed once and stored."""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from frankensweep.evals.prior import LayerPrior, PriorSpec, compute_prior
from frankensweep.models import LoadOptions
from frankensweep.search import Plan
from frankensweep.sweeps.priors import store_prior, stored_prior
from frankensweep.worker.loading import BaseModel
from frankensweep.worker.views import build_view

__all__ = ["prior_of", "stored_prior_of"]

log = logging.getLogger(__name__)


def stored_prior_of(
    sessions: sessionmaker[Session],
    model: str,
    num_layers: int,
    spec: PriorSpec,
    load: LoadOptions | None = None,
) -> LayerPrior | None:
    """The stored prior of the named model (loaded with ``load``) with these settings, or None
    (nothing is loaded)."""
    with sessions() as s:
        return stored_prior(s, model, num_layers, spec, load)


def prior_of(
    sessions: sessionmaker[Session],
    base: BaseModel,
    spec: PriorSpec,
    load: LoadOptions | None = None,
) -> tuple[LayerPrior, bool]:
    """The prior of ``base`` with these settings and whether it was computed now (else stored),
    kept under ``load``, the load options it was asked with (a sweep's, as its scores are).

    It is computed on a view of ``0-N``, whose own layer objects carry the hooks, so the base
    model never gets one (another thread may be running it).
    """
    found = stored_prior_of(sessions, base.spec, base.num_layers, spec, load)
    if found is not None:
        return found, False
    start = time.perf_counter()
    view = build_view(base.model, Plan.base(base.num_layers))
    prior = compute_prior(view, base.tokenizer, spec)
    seconds = time.perf_counter() - start
    with sessions() as s:
        store_prior(s, base.spec, spec, prior, seconds, load)
        s.commit()
    log.info("layer prior of %s computed in %.1f s", base.spec, seconds)
    return prior, True
