"""Candidates: details with every result, the mergekit recipe and the GGUF download."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import PlainTextResponse, StreamingResponse

from frankensweep.api.deps import RowId, SessionDep
from frankensweep.api.routes import StrictJSONRoute
from frankensweep.api.schemas import CandidatePublic
from frankensweep.core.errors import UserError
from frankensweep.db import Candidate
from frankensweep.export.gguf import prepare_gguf
from frankensweep.search import DTYPES, Plan, plan_to_recipe
from frankensweep.sweeps.config import sweep_config
from frankensweep.sweeps.leaderboard import candidate_scores

router = APIRouter(prefix="/api/candidates", tags=["candidates"], route_class=StrictJSONRoute)


class YAMLResponse(PlainTextResponse):
    media_type = "application/yaml"


#: OpenAPI schema of the recipe document (a YAML mapping, not a string)
RECIPE_SCHEMA = {
    "type": "object",
    "required": ["slices", "merge_method", "dtype"],
    "properties": {
        "slices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sources"],
                "properties": {
                    "sources": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["model", "layer_range"],
                            "properties": {
                                "model": {"type": "string"},
                                "layer_range": {
                                    "type": "array",
                                    "items": {"type": "integer"},
                                    "minItems": 2,
                                    "maxItems": 2,
                                },
                            },
                        },
                    },
                    "parameters": {
                        "type": "object",
                        "description": "scale with o_proj / down_proj filters (a scaled slice)",
                    },
                },
            },
        },
        "merge_method": {"const": "passthrough"},
        "base_model": {
            "type": "string",
            "description": "the base model, when slices come from other models too",
        },
        "dtype": {"enum": list(DTYPES)},
    },
}


def get_candidate(session, candidate_id: int) -> Candidate:
    candidate = session.get(Candidate, candidate_id)
    if candidate is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"candidate {candidate_id} not found")
    return candidate


@router.get("/{candidate_id}")
def read_candidate(candidate_id: RowId, session: SessionDep) -> CandidatePublic:
    """One candidate: status, failure reason, scores and raw eval details."""
    c = get_candidate(session, candidate_id)
    scores, rows, _partial = candidate_scores(session, c.sweep, [c])
    config = sweep_config(c.sweep)
    levels = config.levels
    level = config.level_of(c.fidelity)
    return CandidatePublic(
        id=c.id,
        sweep_id=c.sweep_id,
        plan=c.plan,
        digest=c.digest,
        positions=len(Plan.parse(c.plan)),
        params=c.params,
        is_reference=c.is_reference,
        status=c.status,
        error=c.error,
        attempts=c.attempts,
        fidelity=level,
        fidelity_label=levels[level].label,
        round=c.round,
        trial=c.trial,
        pruned_reason=c.pruned_reason,
        scores=scores.get(c.digest, {}),
        results=[
            {
                "eval_key": r.eval_key,
                "kind": r.eval_kind,
                "metrics": r.metrics,
                "details": r.details,
                "seconds": r.seconds,
            }
            for r in rows.get(c.digest, [])
        ],
        started_at=c.started_at,
        finished_at=c.finished_at,
    )


@router.get(
    "/{candidate_id}/recipe.yaml",
    response_class=YAMLResponse,
    responses={200: {"content": {"application/yaml": {"schema": RECIPE_SCHEMA}}}},
)
def read_recipe(
    candidate_id: RowId,
    session: SessionDep,
    dtype: str = Query("bfloat16", description=f"one of {', '.join(DTYPES)}"),
) -> YAMLResponse:
    """The candidate's mergekit passthrough recipe (each slice from its model, by path)."""
    if dtype not in DTYPES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["query", "dtype"],
                    "msg": f"use one of {', '.join(DTYPES)}",
                    "type": "value_error",
                }
            ],
        )
    c = get_candidate(session, candidate_id)
    text = plan_to_recipe(Plan.parse(c.plan), c.sweep.model, dtype, c.sweep.models)
    return YAMLResponse(
        text,
        headers={"Content-Disposition": f'attachment; filename="candidate-{c.id}.yaml"'},
    )


@router.get(
    "/{candidate_id}/export.gguf",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "the GGUF file, streamed",
        }
    },
)
def download_gguf(candidate_id: RowId, session: SessionDep) -> StreamingResponse:
    """The candidate as a GGUF file: the base GGUF's own tensors per position, streamed."""
    c = get_candidate(session, candidate_id)
    try:
        job = prepare_gguf(c.sweep.model, c.plan)
    except UserError as exc:  # a refused plan or architecture, a missing file
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["path", "candidate_id"], "msg": str(exc), "type": "value_error"}],
        ) from None
    return StreamingResponse(
        job.chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="candidate-{c.id}.gguf"',
            "Content-Length": str(job.size),
        },
    )
