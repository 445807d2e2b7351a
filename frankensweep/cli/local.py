"""Commands that work on a model directly, with no server: plans, eval, export, convert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from frankensweep.cli.app import (
    CliError,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    MaxMemoryOpt,
    ModelOpt,
    QuantizationOpt,
    app,
    err,
    fail,
    load_model,
    out,
    progress_bar,
    quiet_libraries,
    status,
)
from frankensweep.client import DEFAULT_URL
from frankensweep.search import (
    DTYPES,
    Filters,
    IntRange,
    OverlapSpace,
    Plan,
    RysSpace,
    Space,
    enumerate_space,
    plan_to_recipe,
)

# ---------------------------------------------------------------------------------------- plans


@app.command()
def plans(
    layers: Annotated[int, typer.Option(help="Depth N of the base model.", min=1)],
    slice_size: Annotated[str | None, typer.Option(help="Slice size: A, A:B or A:B:STEP.")] = None,
    jump: Annotated[str | None, typer.Option(help="Backward jump: A, A:B or A:B:STEP.")] = None,
    last_slice: Annotated[
        str | None, typer.Option(help="Last-slice length: A, A:B or A:B:STEP.")
    ] = None,
    first_slice: Annotated[
        str | None, typer.Option(help="First-slice length (default: the slice size).")
    ] = None,
    rys: Annotated[bool, typer.Option("--rys", help="The RYS space (i, j) instead.")] = False,
    max_repeats: Annotated[
        int | None, typer.Option(help="Drop plans repeating a layer more.")
    ] = None,
    min_last_slice: Annotated[int | None, typer.Option(help="Drop shorter last slices.")] = None,
    min_jump: Annotated[int | None, typer.Option(help="Drop smaller backward jumps.")] = None,
    max_jump_fraction: Annotated[
        float | None, typer.Option(help="Drop jumps above this fraction of the slice.")
    ] = None,
    study_filters: Annotated[
        bool,
        typer.Option(
            "--study-filters",
            help="WestLake-7B study advice: <= 2 repeats, last slice >= 6, 3 <= jump <= s/2.",
        ),
    ] = False,
) -> None:
    """Print the plans of a space, one JSON object per line; counts go to stderr."""
    space: Space
    if rys:
        if any(v is not None for v in (slice_size, jump, last_slice, first_slice)):
            fail("--rys takes no --slice-size/--jump/--last-slice/--first-slice")
        space = RysSpace(layers)
    elif slice_size is None or jump is None or last_slice is None:
        missing = [
            name
            for name, value in (
                ("--slice-size", slice_size),
                ("--jump", jump),
                ("--last-slice", last_slice),
            )
            if value is None
        ]
        fail(f"the overlap space needs {', '.join(missing)} (or use --rys)")
    else:
        space = OverlapSpace(
            layers,
            slice_size=IntRange.parse(slice_size, "--slice-size"),
            jump=IntRange.parse(jump, "--jump"),
            last_slice=IntRange.parse(last_slice, "--last-slice"),
            first_slice=IntRange.parse(first_slice, "--first-slice") if first_slice else None,
        )
    filters = Filters.study_defaults() if study_filters else Filters()
    overrides = {
        "max_repeats": max_repeats,
        "min_last_slice": min_last_slice,
        "min_jump": min_jump,
        "max_jump_fraction": max_jump_fraction,
    }
    filters = Filters.from_dict(
        {**filters.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
    )
    result = enumerate_space(space, filters)
    for point in result.points:
        record = {
            "plan": str(point.plan),
            "positions": len(point.plan),
            "digest": point.plan.digest,
            "params": point.params,
        }
        out.print(json.dumps(record), markup=False)
    err.print(result.summary(), highlight=False, markup=False)


# ----------------------------------------------------------------------------------------- eval


def parse_plans(texts: list[str], num_layers: int) -> list[Plan]:
    """Parse and validate plans; the same plan given twice is evaluated once."""
    parsed: list[Plan] = []
    for text in texts:
        plan = Plan.parse(text).validate(num_layers)
        if plan not in parsed:
            parsed.append(plan)
    return parsed


def read_plans_file(path: Path) -> list[str]:
    """One plan per line; blank lines and # comments ignored."""
    if not path.is_file():
        raise CliError(f"plans file not found: {path}")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines()]
    return [line for line in lines if line]


@app.command("eval")
def eval_(
    model: ModelOpt,
    plan: Annotated[
        list[str] | None,
        typer.Option("--plan", "-p", help="A plan like 0-16,8-24,16-30; repeat. 0-N = base."),
    ] = None,
    plans_file: Annotated[
        Path | None, typer.Option(help="A file of plans, one per line (# comments allowed).")
    ] = None,
    ppl_corpus: Annotated[
        str, typer.Option(help="UTF-8 text file, or pydoc_data.topics (bundled).")
    ] = "pydoc_data.topics",
    ppl_tokens: Annotated[
        int, typer.Option(help="Tokens to score (rounded down to ctx).", min=2)
    ] = 2048,
    ctx: Annotated[int, typer.Option(help="Window length in tokens.", min=2)] = 512,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.", min=1)] = 1,
    prefix_sharing: Annotated[
        bool, typer.Option(help="Run shared layer prefixes once (results are bitwise equal).")
    ] = True,
    eq_bench: Annotated[
        str | None,
        typer.Option(help="Also run EQ-Bench: a question file or a hub id (pbevan11/EQ-Bench)."),
    ] = None,
    eq_bench_limit: Annotated[
        int | None, typer.Option(help="EQ-Bench on the first N questions only.", min=1)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per plan.")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quantization: QuantizationOpt = "none",
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Perplexity (and optionally EQ-Bench) of each plan; nothing is written to disk."""
    from frankensweep.evals.corpus import load_corpus
    from frankensweep.evals.perplexity import make_windows, tokenize_corpus
    from frankensweep.models import check_environment, load_options, parse_max_memory
    from frankensweep.worker.evaluate import evaluate_perplexity
    from frankensweep.worker.loading import select_device

    load = load_options(
        quantization=quantization,
        dtype=dtype,
        device_map=device_map,
        max_memory=parse_max_memory(max_memory),
    )
    check_environment(load)  # bitsandbytes, GPUs: before anything slow
    if load.device_map is None:
        select_device(device)

    texts = list(plan or []) + (read_plans_file(plans_file) if plans_file else [])
    if not texts:
        fail("give plans with --plan or --plans-file")
    for text in texts:
        Plan.parse(text)  # syntax errors before the model loads
    if eq_bench:
        from frankensweep.evals.eq_bench import load_questions

        load_questions(eq_bench, eq_bench_limit)  # a missing question set fails early
    text = load_corpus(ppl_corpus)
    base = load_model(model, device, dtype, load)
    plans_ = parse_plans(texts, base.num_layers)
    windows = make_windows(tokenize_corpus(base.tokenizer, text), ppl_tokens, ctx)
    with progress_bar() as bar:
        task = bar.add_task("perplexity", total=len(plans_) * windows.shape[0])
        results = evaluate_perplexity(
            base,
            plans_,
            windows,
            batch_size,
            progress=lambda n: bar.advance(task, n),
            prefix_sharing=prefix_sharing,
        )
    rows = [r.to_json() for r in results]
    if eq_bench:
        from frankensweep.evals.eq_bench import run_eq_bench
        from frankensweep.worker.views import build_view

        with progress_bar() as bar:
            questions = len(load_questions(eq_bench, eq_bench_limit))
            task = bar.add_task("EQ-Bench", total=len(plans_) * questions)
            for row, p in zip(rows, plans_, strict=True):
                eq = run_eq_bench(
                    build_view(base.model, p),
                    base.tokenizer,
                    eq_bench,
                    limit=eq_bench_limit,
                    progress=lambda n: bar.advance(task, n),
                )
                row.update(
                    eqbench=eq.eqbench,
                    percent_parseable=eq.percent_parseable,
                    eq_bench_seconds=round(eq.seconds, 3),
                )
    if as_json:
        for row in rows:
            out.print(json.dumps(row), markup=False)
        return
    out.print(ranked_table(rows, base.num_layers, windows))


def ranked_table(rows: list[dict], num_layers: int, windows) -> Table:
    """Plans ranked by perplexity (lower is better), base model marked as the reference."""
    base_plan = str(Plan.base(num_layers))
    reference = next((r for r in rows if r["plan"] == base_plan), None)
    table = Table(
        title=f"perplexity over {windows.shape[0]} x {windows.shape[1]} tokens (lower is better)"
    )
    with_eq = any("eqbench" in r for r in rows)
    columns = ["rank", "plan", "layers", "perplexity", "vs base"]
    columns += ["eqbench", "parseable %"] if with_eq else []
    for name in [*columns, "seconds"]:
        if name == "plan":
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, justify="right")
    for rank, r in enumerate(sorted(rows, key=lambda r: r["perplexity"]), 1):
        is_base = r["plan"] == base_plan
        delta = (
            f"{(r['perplexity'] / reference['perplexity'] - 1) * 100:+.1f}%"
            if reference and not is_base
            else ("reference" if is_base else "")
        )
        cells = [
            str(rank),
            f"{r['plan']}  (base)" if is_base else r["plan"],
            str(r["positions"]),
            f"{r['perplexity']:.3f}",
            delta,
        ]
        if with_eq:
            cells += [f"{r['eqbench']:.2f}", f"{r['percent_parseable']:.0f}"]
        seconds = r["seconds"] + r.get("eq_bench_seconds", 0)
        table.add_row(*cells, f"{seconds:.1f}", style="bold cyan" if is_base else None)
    return table


# --------------------------------------------------------------------------------------- export


@app.command()
def export(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="HF directory, hub id or .gguf file.")
    ] = None,
    plan: Annotated[
        str | None, typer.Option("--plan", "-p", help="The plan, e.g. 0-16,8-24,16-30.")
    ] = None,
    candidate: Annotated[
        int | None, typer.Option(help="A stored candidate's id (asks the server at --url).")
    ] = None,
    dtype: Annotated[str, typer.Option(help=f"Recipe dtype: {', '.join(DTYPES)}.")] = "bfloat16",
    recipe_model: Annotated[
        str | None,
        typer.Option(help="Model name to write in the recipe (default: --model as given)."),
    ] = None,
    layers: Annotated[
        int | None, typer.Option(help="Depth N, to skip reading the model's config.", min=1)
    ] = None,
    url: Annotated[str, typer.Option(help="The server, with --candidate.")] = DEFAULT_URL,
) -> None:
    """Print the mergekit passthrough recipe (YAML) of a plan, or of a stored candidate."""
    if candidate is not None:
        if model is not None or plan is not None:
            fail("give either --candidate or --model with --plan, not both")
        from frankensweep.client import Client

        out.print(Client(url).recipe(candidate, dtype), end="", markup=False)
        return
    if model is None or plan is None:
        fail("export needs --model and --plan (or --candidate ID)")
    from frankensweep.models import read_num_layers, resolve_spec

    parsed = Plan.parse(plan)
    if dtype not in DTYPES:
        fail(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}")
    resolve_spec(model)  # a missing model file is an error even with --layers
    if layers is None:
        quiet_libraries()
        layers = read_num_layers(model)
    parsed.validate(layers)
    if model.lower().endswith(".gguf") and recipe_model is None:
        err.print(
            "note: mergekit reads Hugging Face weights, not GGUF: run `frankensweep convert "
            f"--model {model} --out DIR` and pass --recipe-model DIR",
            highlight=False,
        )
    out.print(plan_to_recipe(parsed, recipe_model or model, dtype), end="", markup=False)


@app.command()
def convert(
    model: ModelOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write (must not exist).")],
) -> None:
    """Save a base model (e.g. a GGUF file, dequantized) as a Hugging Face directory."""
    from frankensweep.worker.loading import make_serializable

    if out_dir.exists() and any(out_dir.iterdir()):
        fail(f"{out_dir} exists and is not empty: choose a new directory")
    base = load_model(model, "cpu", "float32")
    make_serializable(base.model)
    with status(f"writing {out_dir}"):
        base.model.save_pretrained(out_dir)
        base.tokenizer.save_pretrained(out_dir)
    err.print(f"wrote {out_dir} ({base.num_layers} layers, {base.model_type})", highlight=False)
