"""Server-rendered pages: sweeps list, sweep page, candidate page, the new-sweep form.

Pages query the database through the same functions as the JSON API (``public()``,
``leaderboard()``, ``candidate_scores()``); their scripts reuse the JSON API for writes and live
updates. Plotly is served from the installed ``plotly`` package (no CDN, works offline).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import select

from frankensweep import __version__
from frankensweep.api.deps import RowId, SessionDep
from frankensweep.api.leaderboard import candidate_scores, leaderboard, sweep_metrics
from frankensweep.api.routes.sweeps import public
from frankensweep.db import Candidate, Sweep
from frankensweep.db.models import FINISHED_SWEEP
from frankensweep.search import Plan

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(tags=["dashboard"], include_in_schema=False)


# -- helpers used by the templates ---------------------------------------------------------------


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return ""
    value = round(value)
    if value < 60:
        return f"{value} s"
    if value < 3600:
        return f"{value // 60} min {value % 60} s"
    return f"{value // 3600} h {value % 3600 // 60} min"


def fmt_score(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.3f}"


def plan_svg(plan: str, num_layers: int, scale: int = 3, height: int = 36) -> Markup:
    """An inline SVG of a plan: one bar per position, its height the source layer.

    Positions whose source layer runs more than once are drawn in the accent colour; the
    first position of each slice gets a tick, so jumps read as drops in the staircase.
    """
    parsed = Plan.parse(plan)
    layers = parsed.layers()
    counts = Counter(layers)
    top = max(num_layers, max(layers) + 1, 1)
    width = max(len(layers) * scale, 1)
    starts, position = set(), 0
    for s in parsed.slices:
        starts.add(position)
        position += len(s)
    bars = []
    for i, layer in enumerate(layers):
        h = max(1.0, (layer + 1) / top * (height - 4))
        cls = "rep" if counts[layer] > 1 else "once"
        bars.append(
            f'<rect class="{cls}" x="{i * scale}" y="{height - h:.1f}" width="{max(scale - 1, 1)}"'
            f' height="{h:.1f}"><title>position {i}: layer {layer}'
            f"{' (runs ' + str(counts[layer]) + 'x)' if counts[layer] > 1 else ''}</title></rect>"
        )
        if i in starts and i:
            bars.append(f'<rect class="cut" x="{i * scale - 1}" y="0" width="1" height="4"/>')
    label = f"plan {plan}: {len(layers)} positions, max repeats {max(counts.values())}"
    return Markup(
        f'<svg class="plan" role="img" aria-label="{label}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}">{"".join(bars)}</svg>'
    )


templates.env.globals.update(
    fmt_time=fmt_time,
    fmt_seconds=fmt_seconds,
    fmt_score=fmt_score,
    plan_svg=plan_svg,
    version=__version__,
)


def progress(sweep) -> dict[str, Any]:
    """Finished and total candidates, and the percentage, of a ``SweepPublic``."""
    finished = sum(sweep.counts.get(s, 0) for s in ("done", "failed", "pruned", "cancelled"))
    pct = round(100 * finished / sweep.total) if sweep.total else 0
    return {"finished": finished, "total": sweep.total, "pct": pct}


def not_found(request: Request, detail: str) -> HTMLResponse:
    """The dashboard's HTML 404 page (the JSON routes keep FastAPI's JSON errors)."""
    return templates.TemplateResponse(
        request, "404.html", {"title": "Not found", "detail": detail}, status_code=404
    )


def get_or_404(session, model, key: int, what: str):
    """For downloads: a JSON 404 like the API's."""
    row = session.get(model, key)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {key} not found")
    return row


def sweep_view(session, sweep: Sweep) -> dict[str, Any]:
    """Everything the sweep page (and its live fragment) renders."""
    info = public(session, sweep)
    metrics = sweep_metrics(sweep)
    board = leaderboard(session, sweep, None)
    candidates = {c.id: c for c in sweep.candidates}
    all_metrics: list[str] = list(metrics)
    rows = ([board.reference] if board.reference else []) + board.rows
    for row in rows:
        for name in row.scores:
            if name not in all_metrics:
                all_metrics.append(name)
    param_names: list[str] = []
    for row in board.rows:
        for name in row.params:
            if name not in param_names:
                param_names.append(name)
    chart = {
        "metric": board.metric,
        "higher_is_better": board.higher_is_better,
        "metrics": all_metrics,
        "higher": {m: metrics.get(m, False) for m in all_metrics},
        "reference": board.reference.scores if board.reference else None,
        "rows": [
            {
                "id": r.candidate_id,
                "plan": r.plan,
                "params": r.params,
                "scores": r.scores,
                "status": r.status,
                "finished_at": (
                    candidates[r.candidate_id].finished_at.isoformat()
                    if candidates[r.candidate_id].finished_at
                    else None
                ),
            }
            for r in board.rows
        ],
    }
    return {
        "sweep": info,
        "progress": progress(info),
        "board": board,
        "metrics": all_metrics,
        "higher": chart["higher"],
        "param_names": param_names,
        "chart_json": json.dumps(chart).replace("</", "<\\/"),
        "running": info.status not in FINISHED_SWEEP,
    }


def best_score(session, sweep: Sweep) -> tuple[str, float | None]:
    board = leaderboard(session, sweep, None)
    best = board.rows[0].scores.get(board.metric) if board.rows else None
    return board.metric, best


# -- pages ---------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def sweeps_page(request: Request, session: SessionDep, fragment: bool = False) -> HTMLResponse:
    """All sweeps, newest first."""
    items = []
    for sweep in session.scalars(select(Sweep).order_by(Sweep.id.desc()).limit(500)):
        info = public(session, sweep)
        metric, best = best_score(session, sweep)
        items.append({"sweep": info, "progress": progress(info), "metric": metric, "best": best})
    running = any(i["sweep"].status not in FINISHED_SWEEP for i in items)
    name = "_sweeps_table.html" if fragment else "sweeps.html"
    return templates.TemplateResponse(
        request, name, {"items": items, "running": running, "title": "Sweeps"}
    )


@router.get("/new", response_class=HTMLResponse)
def new_sweep_page(request: Request, session: SessionDep) -> HTMLResponse:
    """The form to submit a sweep (POST /api/sweeps from the page's script)."""
    last = session.scalars(select(Sweep).order_by(Sweep.id.desc()).limit(1)).first()
    return templates.TemplateResponse(
        request,
        "new.html",
        {"title": "New sweep", "default_model": last.model if last else ""},
    )


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(
    sweep_id: RowId, request: Request, session: SessionDep, fragment: bool = False
) -> HTMLResponse:
    """One sweep: progress, ranked table, heatmap, best-so-far, plan pictures."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return not_found(request, f"sweep {sweep_id} not found")
    context = sweep_view(session, sweep) | {"title": f"Sweep {sweep.id}: {sweep.name}"}
    name = "_sweep_live.html" if fragment else "sweep.html"
    return templates.TemplateResponse(request, name, context)


@router.get("/candidates/{candidate_id}", response_class=HTMLResponse)
def candidate_page(candidate_id: RowId, request: Request, session: SessionDep) -> HTMLResponse:
    """One candidate: plan picture, scores, failure reason, raw eval details (EQ-Bench answers)."""
    c = session.get(Candidate, candidate_id)
    if c is None:
        return not_found(request, f"candidate {candidate_id} not found")
    scores, rows, _partial = candidate_scores(session, c.sweep, [c])
    results = [
        {
            "kind": r.eval_kind,
            "eval_key": r.eval_key,
            "metrics": r.metrics,
            "details": r.details or {},
            "seconds": r.seconds,
            "created_at": r.created_at,
        }
        for r in rows.get(c.digest, [])
    ]
    return templates.TemplateResponse(
        request,
        "candidate.html",
        {
            "title": f"Candidate {c.id}",
            "c": c,
            "sweep": c.sweep,
            "positions": len(Plan.parse(c.plan)),
            "scores": scores.get(c.digest, {}),
            "results": results,
        },
    )


# -- downloads -----------------------------------------------------------------------------------


@router.get("/sweeps/{sweep_id}/leaderboard.csv")
def leaderboard_csv(sweep_id: RowId, session: SessionDep, metric: str | None = None) -> Response:
    """The leaderboard as CSV: the reference row first, then ranked candidates."""
    sweep = get_or_404(session, Sweep, sweep_id, "sweep")
    board = leaderboard(session, sweep, metric)
    rows = ([board.reference] if board.reference else []) + board.rows
    metrics = sorted({m for r in rows for m in r.scores})
    params = sorted({p for r in rows for p in r.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["rank", "candidate_id", "reference", "plan", "positions", "status", *params, *metrics]
    )
    for r in rows:
        writer.writerow(
            [
                "" if r.rank is None else r.rank,
                r.candidate_id,
                int(r is board.reference),
                r.plan,
                r.positions,
                r.status,
                *(r.params.get(p, "") for p in params),
                *(r.scores.get(m, "") for m in metrics),
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="sweep-{sweep.id}-leaderboard.csv"'},
    )


@router.get("/sweeps/{sweep_id}/leaderboard.json")
def leaderboard_json(sweep_id: RowId, session: SessionDep, metric: str | None = None) -> Response:
    """The leaderboard as a JSON file (the body of GET /api/sweeps/{id}/leaderboard)."""
    sweep = get_or_404(session, Sweep, sweep_id, "sweep")
    board = leaderboard(session, sweep, metric)
    return Response(
        board.model_dump_json(indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="sweep-{sweep.id}-leaderboard.json"'
        },
    )


# -- static files --------------------------------------------------------------------------------


@cache
def plotly_js() -> Path:
    """plotly.min.js from the installed ``plotly`` package."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(path)
    return path


@router.get("/dashboard/static/plotly.min.js")
def plotly_file() -> FileResponse:
    """Plotly, from the installed package (no CDN)."""
    return FileResponse(
        plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )


@router.get("/dashboard/static/{name}")
def static_file(name: str) -> FileResponse:
    """The dashboard's own script and stylesheet."""
    if name not in STATIC_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name}")
    return FileResponse(STATIC / name, media_type=STATIC_FILES[name])
