"""Layer priors in the database: one per base model (by its files' fingerprint) and settings.

A prior (``evals/prior.py``) is stored as a result of the model's own plan ``0-N``: ``model`` is
``fingerprint:<model_fingerprint>`` (so every sweep of the model, whatever its source models and
whatever name it is given by, shares it), followed by ``+<quantization>/<dtype>`` when the load
options change the numbers (as scores are kept apart, ``sweeps/config.py``); ``eval_key`` is
``prior_key`` of the settings, ``details`` the statistics. Written once, like every result.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from frankensweep.db.store import results_for, upsert_result
from frankensweep.evals.prior import PRIOR_KIND, LayerPrior, PriorSpec, prior_key
from frankensweep.models import LoadOptions, model_fingerprint
from frankensweep.search import Plan

__all__ = ["prior_owner", "store_prior", "stored_prior"]


def prior_owner(model: str, load: LoadOptions | None = None) -> str:
    """What a model's priors are stored under: the fingerprint of its files as they are now,
    and the load options that change its numbers (quantization, dtype) unless the defaults."""
    owner = f"fingerprint:{model_fingerprint(model)}"
    if load is not None and load.keyed:
        owner += f"+{load.quantization}/{load.dtype}"
    return owner


def stored_prior(
    session: Session,
    model: str,
    num_layers: int,
    spec: PriorSpec,
    load: LoadOptions | None = None,
) -> LayerPrior | None:
    """The stored prior of ``model`` loaded with ``load`` with these settings, or None."""
    key = prior_key(spec)
    digest = Plan.base(num_layers).digest
    found = results_for(session, prior_owner(model, load), [digest], [key]).get((digest, key))
    return LayerPrior.from_json(found.details) if found is not None and found.details else None


def store_prior(
    session: Session,
    model: str,
    spec: PriorSpec,
    prior: LayerPrior,
    seconds: float,
    load: LoadOptions | None = None,
) -> None:
    """Store ``prior`` of ``model`` loaded with ``load`` (not committed); a prior stored
    meanwhile is kept."""
    base = Plan.base(prior.num_layers)
    upsert_result(
        session,
        model=prior_owner(model, load),
        plan=str(base),
        plan_digest=base.digest,
        eval_key=prior_key(spec),
        eval_kind=PRIOR_KIND,
        metrics={"layers": float(prior.num_layers), "tokens": float(prior.tokens)},
        details=prior.to_json(),
        seconds=seconds,
    )
