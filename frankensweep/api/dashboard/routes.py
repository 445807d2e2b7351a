"""Server-rendered pages: sweeps list, sweep page, candidate page, the new-sweep form.

Pages query the database through the same functions as the JSON API (``public()``,
``leaderboard()``, ``candidate_scores()``); their scripts reuse the JSON API for writes and live
updates. Plotly is served from the installed ``plotly`` package (no CDN, works offline).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections import Counter, OrderedDict
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from frankensweep import __version__
from frankensweep.api.deps import MAX_ID, RowId, SessionDep, SettingsDep
from frankensweep.api.routes.sweeps import public, space_summary
from frankensweep.core.config import Settings
from frankensweep.core.errors import UserError
from frankensweep.db import FINISHED_SWEEP, Candidate, Sweep
from frankensweep.db.store import results_for
from frankensweep.evals.prior import LayerPrior
from frankensweep.evals.registry import eval_key
from frankensweep.models.memory import fmt_size
from frankensweep.search import Plan
from frankensweep.search.plans import format_scale
from frankensweep.sweeps.config import sweep_config
from frankensweep.sweeps.leaderboard import candidate_scores, leaderboard
from frankensweep.sweeps.priors import stored_prior

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


#: colour classes of source models in the plan picture (``src1``.. in order of first use)
SOURCE_COLOURS = 4


def plan_picture(plan: str, num_layers: int, scale: int = 3, height: int = 36) -> dict[str, Any]:
    """What the plan picture shows (the ``_plan.html`` macro draws it; Jinja escapes the text).

    One bar per position, its height the source layer. A position whose (model, layer) runs more
    than once is ``rep`` (the accent colour); a position of a source model is ``src1``, ``src2``,
    ... (its own colour, the model named in its tooltip); a scaled position is ``scaled`` (paler,
    its scale in the tooltip). The first position of each slice gets a tick, so jumps read as
    drops in the staircase. Bars are drawn as one SVG path per run of positions of one slice and
    one class (a tooltip each), so a page stays small however long its plans.
    """
    parsed = Plan.parse(plan)
    counts = Counter((model, layer) for model, layer, _ in parsed.positions())
    colour = {name: 1 + i % SOURCE_COLOURS for i, name in enumerate(parsed.models())}
    top = max(num_layers, max(layer for _, layer in counts) + 1, 1)
    width = max(scale - 1, 1)
    runs: list[dict[str, Any]] = []
    cuts, position = [], 0
    for s in parsed.slices:
        if position:
            cuts.append(f"M{position * scale - 1} 0h1v4h-1z")
        factor = format_scale(s.scale) if s.scale is not None else None
        for rep, group in itertools.groupby(s.layers(), key=lambda i: counts[(s.model, i)] > 1):
            layers = list(group)
            bars = []
            for layer in layers:
                h = max(1.0, (layer + 1) / top * (height - 4))
                bars.append(f"M{position * scale} {height - h:.1f}h{width}V{height}h-{width}z")
                position += 1
            first, last = position - len(layers), position - 1
            title = f"position {first}" if first == last else f"positions {first}-{last}"
            title += (
                f": layer {layers[0]}" if len(layers) == 1 else f": layers {layers[0]}-{layers[-1]}"
            )
            title += f" of {s.model}" if s.model is not None else ""
            title += f", scale {factor}" if factor is not None else ""
            classes = ["rep" if rep else "once"]
            classes += [f"src{colour[s.model]}"] if s.model is not None else []
            classes += ["scaled"] if factor is not None else []
            runs.append(
                {
                    "cls": " ".join(classes),
                    "d": "".join(bars),
                    "title": title + (" (repeated)" if rep else ""),
                    "model": s.model,
                    "scale": factor,
                }
            )
    return {
        "label": f"plan {plan}: {position} positions, max repeats {max(counts.values())}",
        "width": max(position * scale, 1),
        "height": height,
        "runs": runs,
        "cuts": "".join(cuts),
    }


def prior_picture(prior: LayerPrior, width: int = 14, height: int = 120) -> dict[str, Any]:
    """What the layer-prior picture shows (the ``_prior.html`` macro draws it).

    One bar per layer, its height how much the layer changes its input (clipped at three times
    the median, a clipped bar marked ``clipped``), a line through the cosine similarity of each
    layer's output with the next one's (0 at the bottom, 1 at the top), and the block the prior
    predicts best to repeat shaded. Each bar's tooltip gives its figures.
    """
    summary = prior.summary()
    change, near = summary["change"], summary["neighbour"]
    top = 3 * sorted(change)[len(change) // 2] or 1.0
    usable = height - 14
    bars = []
    for layer, value in enumerate(change):
        h = max(1.0, min(value, top) / top * usable)
        title = f"layer {layer}: changes its input by {value:.3f} (relative)"
        if layer < len(near):
            title += f"; output {near[layer]:.3f} alike the next layer's"
        bars.append(
            {
                "x": layer * width + 1,
                "y": round(height - h, 1),
                "w": width - 2,
                "h": round(h, 1),
                "cls": "clipped" if value > top else "layer",
                "title": title,
            }
        )
    points = " ".join(
        f"{(layer + 1) * width:.0f},{height - max(0.0, value) * usable:.1f}"
        for layer, value in enumerate(near)
    )
    i, j = summary["best_block"]
    return {
        "label": f"layer prior: {len(change)} layers, best repeated block {i}-{j}",
        "width": len(change) * width,
        "height": height,
        "bars": bars,
        "line": points,
        "best": {"x": i * width, "w": (j - i) * width, "title": f"best block to repeat: {i}-{j}"},
        "best_block": f"{i}-{j}",
        "best_layer": summary["best_layer"],
        "tokens": summary["tokens"],
    }


#: stored priors by sweep (id, creation time, model: as ``sweep_config`` keys its cache), the
#: most recently shown kept; a stored prior never changes
_priors: OrderedDict[tuple, LayerPrior] = OrderedDict()
_PRIORS_KEPT = 64


def sweep_prior(session, sweep: Sweep) -> LayerPrior | None:
    """The layer prior of a sweep whose strategy uses one, once its worker stored it."""
    key = (sweep.id, sweep.created_at, sweep.model)
    found = _priors.get(key)
    if found is not None:
        _priors.move_to_end(key)
        return found
    config = sweep_config(sweep)
    spec = config.strategy.prior
    if spec is None:
        return None
    try:
        found = stored_prior(session, config.model, config.num_layers, spec, config.load)
    except UserError:  # the model's files are gone: its prior cannot be identified
        return None
    if found is not None:
        _priors[key] = found
        while len(_priors) > _PRIORS_KEPT:
            _priors.popitem(last=False)
    return found


def strategy_text(strategy: dict[str, Any]) -> str:
    """A stored strategy spec in a line: ``halving · eta 3 · rungs 3 · budget all · seed 0``."""
    parts = [str(strategy.get("kind", "grid"))]
    for name, value in strategy.items():
        if name == "kind":
            continue
        if value is None:
            value = {"budget": "all", "startup": "auto"}.get(name, "default")
        parts.append(f"{name} {value}")
    return " · ".join(parts)


def memory_text(memory: dict[str, Any] | None) -> str:
    """A stored memory estimate in a line: ``1.2 GiB of 24 GiB per worker · weights 1 GiB ...``."""
    if not memory:
        return "not estimated (stored before the memory planner)"
    parts = sorted(memory.get("parts", {}).items(), key=lambda kv: -kv[1])
    shown = [f"{name.replace('_', ' ')} {fmt_size(size)}" for name, size in parts if size][:4]
    line = f"{fmt_size(memory['estimate_bytes'])} of {fmt_size(memory['limit_bytes'])} per worker"
    line += f" ({memory.get('device', 'cpu')}, {memory.get('dtype', '')})"
    if memory.get("eq_bench_batch"):
        line += f" · EQ-Bench batch {memory['eq_bench_batch']}"
    return " · ".join([line, *shown])


templates.env.globals.update(
    fmt_time=fmt_time,
    fmt_seconds=fmt_seconds,
    fmt_score=fmt_score,
    plan_picture=plan_picture,
    strategy_text=strategy_text,
    memory_text=memory_text,
    version=__version__,
)


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


#: leaderboard rows per page of the sweep page (the chart data holds every row)
PAGE_ROWS = 100


def sweep_view(session, sweep: Sweep, settings: Settings, page: int = 1) -> dict[str, Any]:
    """Everything the sweep page (and its live fragment) renders: page ``page`` of its rows."""
    info = public(session, sweep, settings)
    config = sweep_config(sweep)
    metrics = config.metrics
    board = leaderboard(session, sweep, None)
    levels = config.levels
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
                "fidelity_label": r.fidelity_label,
                "finished_at": _iso(candidates[r.candidate_id].finished_at),
            }
            for r in board.rows
        ],
        "levels": level_points(session, sweep) if len(levels) > 1 else [],
    }
    pages = max(1, math.ceil(len(board.rows) / PAGE_ROWS))
    page = min(page, pages)
    return {
        "sweep": info,
        "space": space_summary(sweep.space),
        "progress": info.progress,
        "board": board,
        "page_rows": board.rows[(page - 1) * PAGE_ROWS : page * PAGE_ROWS],
        "page": page,
        "pages": pages,
        "first_row": (page - 1) * PAGE_ROWS + 1,
        "level_metrics": [level.metric for level in levels],
        "metrics": all_metrics,
        "higher": chart["higher"],
        "param_names": param_names,
        "chart": chart,
        "running": info.status not in FINISHED_SWEEP,
        "prior": prior_picture(prior) if (prior := sweep_prior(session, sweep)) else None,
    }


def level_points(session, sweep: Sweep) -> list[dict[str, Any]]:
    """Per fidelity level, every score at its ranking metric, in the order they were stored
    (scores reused from earlier sweeps count from this sweep's start): best-so-far per level."""
    config = sweep_config(sweep)
    reached = [c for c in sweep.candidates if not c.is_reference]
    keys = [level.rank_key for level in config.levels]
    stored = results_for(session, config.model_key, {c.digest for c in reached}, keys)
    levels = []
    for i, level in enumerate(config.levels):
        points = []
        for c in reached:
            result = stored.get((c.digest, level.rank_key))
            if result is None or config.level_of(c.fidelity) < i:
                continue
            value = result.metrics.get(level.metric)
            if value is None:
                continue
            at = max(result.created_at, sweep.created_at)
            points.append({"id": c.id, "plan": c.plan, "value": value, "at": _iso(at)})
        points.sort(key=lambda p: p["at"])
        levels.append(
            {
                "label": level.label,
                "metric": level.metric,
                "higher_is_better": level.higher_is_better,
                "points": points,
            }
        )
    return levels


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def best_score(session, sweep: Sweep) -> tuple[str, float | None]:
    board = leaderboard(session, sweep, None)
    best = board.rows[0].scores.get(board.metric) if board.rows else None
    return board.metric, best


# -- pages ---------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def sweeps_page(
    request: Request, session: SessionDep, settings: SettingsDep, fragment: bool = False
) -> HTMLResponse:
    """All sweeps, newest first."""
    items: list[dict[str, Any]] = []
    for sweep in session.scalars(select(Sweep).order_by(Sweep.id.desc()).limit(500)):
        info = public(session, sweep, settings)
        metric, best = best_score(session, sweep)
        items.append({"sweep": info, "progress": info.progress, "metric": metric, "best": best})
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
    sweep_id: RowId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    fragment: bool = False,
    page: int = Query(1, ge=1, le=MAX_ID),
) -> HTMLResponse:
    """One sweep: progress, workers, ranked table (a page of rows), heatmap, best-so-far, plan
    pictures."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return not_found(request, f"sweep {sweep_id} not found")
    context = sweep_view(session, sweep, settings, page) | {
        "title": f"Sweep {sweep.id}: {sweep.name}"
    }
    name = "_sweep_live.html" if fragment else "sweep.html"
    return templates.TemplateResponse(request, name, context)


@router.get("/candidates/{candidate_id}", response_class=HTMLResponse)
def candidate_page(candidate_id: RowId, request: Request, session: SessionDep) -> HTMLResponse:
    """One candidate: plan picture, scores, failure reason, raw eval details (EQ-Bench answers)."""
    c = session.get(Candidate, candidate_id)
    if c is None:
        return not_found(request, f"candidate {candidate_id} not found")
    scores, rows, partial = candidate_scores(session, c.sweep, [c])
    config = sweep_config(c.sweep)
    levels = config.levels
    # every level's results, cheapest first (a key in several levels counts as the highest)
    level_of_key = {eval_key(spec): i for i, level in enumerate(levels) for spec in level.evals}
    reached = config.level_of(c.fidelity)
    stored = sorted(rows.get(c.digest, []), key=lambda r: level_of_key.get(r.eval_key, -1))
    results = [
        {
            "kind": r.eval_kind,
            "eval_key": r.eval_key,
            "level": levels[level_of_key[r.eval_key]].label if r.eval_key in level_of_key else "",
            "metrics": r.metrics,
            "details": r.details or {},
            "seconds": r.seconds,
            "created_at": r.created_at,
        }
        for r in stored
    ]
    return templates.TemplateResponse(
        request,
        "candidate.html",
        {
            "title": f"Candidate {c.id}",
            "c": c,
            "sweep": c.sweep,
            "positions": len(Plan.parse(c.plan)),
            "plan_models": Plan.parse(c.plan).models(),
            "scores": scores.get(c.digest, {}),
            "partial": partial.get(c.digest, {}),
            "reached": levels[reached].label,
            "level_number": reached + 1,
            "level_count": len(levels),
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
        [
            "rank",
            "candidate_id",
            "reference",
            "plan",
            "positions",
            "status",
            "fidelity_label",
            "pruned_reason",
            *params,
            *metrics,
        ]
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
                r.fidelity_label,
                r.pruned_reason or "",
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
