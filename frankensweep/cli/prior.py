"""``frankensweep prior``: the layer prior of a base model, computed once, kept in the database."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from frankensweep.cli.app import DeviceOpt, DtypeOpt, ModelOpt, app, err, load_model, out


@app.command()
def prior(
    model: ModelOpt,
    corpus: Annotated[
        str, typer.Option(help="UTF-8 text file, or pydoc_data.topics (bundled).")
    ] = "pydoc_data.topics",
    tokens: Annotated[int, typer.Option(help="Tokens run (rounded down to ctx).", min=2)] = 512,
    ctx: Annotated[int, typer.Option(help="Window length in tokens.", min=2)] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="The statistics as JSON.")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """The layer prior of a base model: how much each layer changes its input, how alike
    neighbouring layers' outputs are, the repeated block it predicts best. Kept in the database
    at FRANKENSWEEP_DATABASE_URL (by the model's fingerprint): computed once, reused by sweeps."""
    from frankensweep.core.config import get_settings
    from frankensweep.db import make_engine, make_sessionmaker, upgrade
    from frankensweep.evals.corpus import load_corpus
    from frankensweep.evals.prior import PriorSpec
    from frankensweep.models import load_options, read_num_layers
    from frankensweep.worker.prior import prior_of, stored_prior_of

    spec = PriorSpec(corpus=corpus, tokens=tokens, ctx=ctx)
    load = load_options(dtype=dtype)  # priors are kept apart by dtype, as scores are
    load_corpus(corpus)  # a missing corpus fails before anything loads
    layers = read_num_layers(model)
    url = get_settings().database_url
    upgrade(url)
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        found = stored_prior_of(sessions, model, layers, spec, load)
        computed = False
        if found is None:
            base = load_model(model, device, dtype, load)
            with err.status(f"running {tokens} tokens of {corpus} through {layers} layers"):
                found, computed = prior_of(sessions, base, spec, load)
    finally:
        engine.dispose()
    summary = found.summary()
    if as_json:
        out.print(json.dumps(summary | found.to_json() | {"computed": computed}), markup=False)
        return
    i, j = summary["best_block"]
    table = Table(title=f"layer prior of {model}", caption=_caption(found.tokens, computed))
    for column in ("layer", "change", "neighbour similarity"):
        table.add_column(column, justify="right")
    for layer, change in enumerate(summary["change"]):
        near = summary["neighbour"][layer] if layer < len(summary["neighbour"]) else None
        table.add_row(str(layer), f"{change:.4f}", "" if near is None else f"{near:.4f}")
    out.print(table)
    out.print(
        f"best repeated block: layers {i}-{j} (plan 0-{j},{i}-{layers}); "
        f"best single layer: {summary['best_layer']}",
        markup=False,
    )


def _caption(tokens: int, computed: bool) -> str:
    how = "computed now" if computed else "from the database"
    return (
        f"over {tokens} tokens, {how}; change: |h_out - h_in| / |h_in| of each layer; "
        "neighbour similarity: cosine of the outputs of a layer and the next"
    )
