"""Commands that work on a model directly, with no server: plans, eval, export, convert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import TaskID
from rich.table import Table

from frankensweep.cli.app import (
    CliError,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    MaxMemoryOpt,
    ModelOpt,
    QuantizationOpt,
    UrlOpt,
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
    BASE_NAME,
    DTYPES,
    Filters,
    InterleaveSpace,
    IntRange,
    OverlapSpace,
    Plan,
    RepeatSpace,
    RysSpace,
    Space,
    enumerate_space,
)

# ---------------------------------------------------------------------------------------- plans


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise CliError(
            f"{name} {text!r} is not numbers joined by commas, e.g. 1,0.75,0.5"
        ) from None


def _overlap_space(
    layers: int,
    slice_size: str | None,
    jump: str | None,
    last_slice: str | None,
    first_slice: str | None,
) -> Space:
    if slice_size is None or jump is None or last_slice is None:
        missing = [
            name
            for name, value in (
                ("--slice-size", slice_size),
                ("--jump", jump),
                ("--last-slice", last_slice),
            )
            if value is None
        ]
        fail(f"the overlap space needs {', '.join(missing)} (or use --rys, --repeat, --interleave)")
    return OverlapSpace(
        layers,
        slice_size=IntRange.parse(slice_size, "--slice-size"),
        jump=IntRange.parse(jump, "--jump"),
        last_slice=IntRange.parse(last_slice, "--last-slice"),
        first_slice=IntRange.parse(first_slice, "--first-slice") if first_slice else None,
    )


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
    repeat: Annotated[
        bool, typer.Option("--repeat", help="The repeat space: blocks of layers run k times.")
    ] = False,
    blocks: Annotated[str, typer.Option(help="--repeat: number of blocks, A[:B[:STEP]].")] = "1",
    length: Annotated[
        str | None, typer.Option(help="--repeat: block length (default 1..N).")
    ] = None,
    repeats: Annotated[str, typer.Option(help="--repeat: k, runs of each block (2..16).")] = "2",
    max_added: Annotated[
        int | None, typer.Option(help="--repeat: most layers added in all.", min=1)
    ] = None,
    scale: Annotated[
        str, typer.Option(help="--repeat: scales of the repeated runs, e.g. 1,0.75,0.5.")
    ] = "1",
    interleave: Annotated[
        str | None,
        typer.Option(help="The interleave space over these models, e.g. base,b (base = N's)."),
    ] = None,
    overlap: Annotated[
        str | None, typer.Option(help="--interleave: layers each slice repeats, A[:B[:STEP]].")
    ] = None,
    first: Annotated[
        str | None, typer.Option(help="--interleave: model(s) of the first and last slice.")
    ] = None,
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
    kinds = [
        name
        for name, on in (("--rys", rys), ("--repeat", repeat), ("--interleave", interleave))
        if on
    ]
    if len(kinds) > 1:
        fail(f"give one space: {' or '.join(kinds)}")
    overlap_options = (slice_size, jump, last_slice, first_slice)
    if rys:
        if any(v is not None for v in overlap_options):
            fail("--rys takes no --slice-size/--jump/--last-slice/--first-slice")
        space = RysSpace(layers)
    elif repeat:
        if any(v is not None for v in overlap_options):
            fail("--repeat takes no --slice-size/--jump/--last-slice/--first-slice")
        space = RepeatSpace(
            layers,
            blocks=IntRange.parse(blocks, "--blocks"),
            length=IntRange.parse(length, "--length") if length else None,
            repeats=IntRange.parse(repeats, "--repeats"),
            max_added=max_added,
            scale=tuple(_floats(scale, "--scale")),
        )
    elif interleave is not None:
        if slice_size is None or overlap is None:
            fail("--interleave needs --slice-size and --overlap")
        space = InterleaveSpace(
            layers,
            tuple(interleave.split(",")),
            IntRange.parse(slice_size, "--slice-size"),
            IntRange.parse(overlap, "--overlap"),
            tuple(first.split(",")) if first else None,
        )
    else:
        space = _overlap_space(layers, slice_size, jump, last_slice, first_slice)
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


SourceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--source",
        help="A source model plans may name: NAME=MODEL (a directory, hub id or .gguf); repeat.",
    ),
]


def parse_sources(items: list[str] | None) -> dict[str, str]:
    """``["b=/models/b"]`` -> ``{"b": "/models/b"}``; names as plans write them."""
    sources: dict[str, str] = {}
    for item in items or []:
        name, sep, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            fail(f"--source {item!r} is not NAME=MODEL, e.g. --source b=/models/other")
        if name == BASE_NAME:
            fail(f'--source {item!r}: "{BASE_NAME}" names the base model: call it otherwise')
        Plan.parse(f"0-1@{name}")  # a name plans can write
        if name in sources:
            fail(f"--source {name} is given twice")
        sources[name] = spec
    return sources


def check_named(plans_: list[Plan], sources: dict[str, str]) -> None:
    """Every model a plan names is a --source."""
    for plan in plans_:
        missing = [m for m in plan.models() if m not in sources]
        if missing:
            fail(f'plan "{plan}" takes a slice from {missing[0]}: give --source {missing[0]}=MODEL')


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
    eq_bench_batch: Annotated[
        str,
        typer.Option(
            help="EQ-Bench questions generated per batch (a number), or auto (the largest "
            "batch that fits)."
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per plan.")] = False,
    source: SourceOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quantization: QuantizationOpt = "none",
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Perplexity (and optionally EQ-Bench) of each plan; nothing is written to disk."""
    from frankensweep.evals.corpus import load_corpus
    from frankensweep.evals.perplexity import make_windows, tokenize_corpus
    from frankensweep.evals.prefix import DEFAULT_MEMORY_BUDGET
    from frankensweep.models import check_environment, load_options, parse_max_memory
    from frankensweep.models.memory import Windows
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
    sources = parse_sources(source)
    check_named([Plan.parse(text) for text in texts], sources)  # before the model loads
    eq_batch = parse_eq_bench_batch(eq_bench_batch)
    if eq_bench:
        from frankensweep.evals.eq_bench import load_questions

        load_questions(eq_bench, eq_bench_limit)  # a missing question set fails early
    text = load_corpus(ppl_corpus)  # a missing corpus fails before the model is looked up
    windows_ = Windows(batch_size, ctx, DEFAULT_MEMORY_BUDGET if prefix_sharing else 0)
    largest = check_memory(
        model, load, device, texts, [windows_], eq_bench, eq_bench_limit, sources, eq_batch
    )
    base = load_model(model, device, dtype, load)
    others = load_sources(base, sources, device, dtype)
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
            sources=others,
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
                    build_view(base.model, p, others),
                    base.tokenizer,
                    eq_bench,
                    limit=eq_bench_limit,
                    batch_size=eq_batch,
                    largest_batch=largest,
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


def check_memory(
    model: str,
    load,
    device: str,
    texts: list[str],
    workloads: list,
    eq_bench: str | None,
    eq_bench_limit: int | None,
    sources: dict[str, str],
    eq_batch: int | str = 1,
) -> int | None:
    """Refuse (one ``error:`` line, exit 2) plans the memory planner says cannot fit
    ``FRANKENSWEEP_WORKER_MEMORY``, before the model loads. With EQ-Bench at batch ``auto``:
    the largest batch the planner says fits the deepest plan (checked at batch 1)."""
    from frankensweep.core.config import get_settings
    from frankensweep.evals.eq_bench import DEFAULT_MAX_GEN_TOKS, load_questions
    from frankensweep.models import read_config, read_tokenizer
    from frankensweep.models.memory import (
        Generation,
        largest_batch,
        longest_prompt,
        model_estimate,
        refusal,
    )

    deepest = max((Plan.parse(t) for t in texts), key=len)
    work = list(workloads)
    prompt = 0
    if eq_bench:
        prompts = [r["prompt"] for r in load_questions(eq_bench, eq_bench_limit)]
        prompt = longest_prompt(read_tokenizer(model), prompts)
        batch = eq_batch if isinstance(eq_batch, int) else 1
        work.append(Generation(batch, prompt, DEFAULT_MAX_GEN_TOKS))
    limit = get_settings().worker_memory_bytes()
    models = 1 + len(sources)
    found, dtype, _ = model_estimate(
        model, load, deepest.layers(), work, device=device, models=models
    )
    if found.total > limit:
        fail(refusal(found, limit, len(deepest)))
    if not eq_bench or isinstance(eq_batch, int):
        return None
    fitting = largest_batch(
        read_config(model),
        load.quantization,
        dtype,
        deepest.layers(),
        prompt,
        DEFAULT_MAX_GEN_TOKS,
        limit,
        models=models,
    )
    return max(1, fitting)


def parse_eq_bench_batch(text: str) -> int | Literal["auto"]:
    """``--eq-bench-batch``: ``auto`` or a whole number from 1 to the largest allowed batch."""
    from frankensweep.evals.registry import MAX_EQ_BENCH_BATCH, EqBenchSpec, EvalDataError

    text = text.strip()
    value: int | str = "auto" if text.lower() == "auto" else int(text) if text.isdigit() else text
    try:
        spec = EqBenchSpec.model_validate({"batch_size": value})
    except ValueError:
        raise EvalDataError(
            f"--eq-bench-batch must be auto or a whole number from 1 to {MAX_EQ_BENCH_BATCH} "
            f"(got {text!r})"
        ) from None
    return spec.batch_size


def load_sources(base, sources: dict[str, str], device: str, dtype: str) -> dict:
    """The --source models, loaded with a spinner and checked against the base model."""
    from frankensweep.worker.loading import MODELS, load_sources

    with status(f"loading {', '.join(sources.values())}" if sources else "checking"):
        return load_sources(MODELS, base, sources, device, dtype)


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
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="mergekit (the recipe), gguf (the base GGUF's own tensors per position) "
            "or hf (a Hugging Face directory).",
        ),
    ] = "mergekit",
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="File (gguf, mergekit) or directory (hf); mergekit: stdout if none."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    dtype: Annotated[
        str | None,
        typer.Option(
            help=f"mergekit: recipe dtype (bfloat16); hf: weights dtype ({', '.join(DTYPES)})."
        ),
    ] = None,
    recipe_model: Annotated[
        str | None,
        typer.Option(help="Model name to write in the recipe (default: --model as given)."),
    ] = None,
    layers: Annotated[
        int | None,
        typer.Option(help="Depth N, to skip reading the model's config (mergekit).", min=1),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="NAME=MODEL: the model to write for slices of NAME (default: NAME); repeat.",
        ),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Export a plan or a stored candidate: mergekit recipe, GGUF file or HF directory."""
    from frankensweep.export import ExportRequest, check_output, get_exporter

    exporter = get_exporter(format_)
    if candidate is not None and (model is not None or plan is not None or source):
        fail("give either --candidate or --model with --plan (and --source), not both")
    if candidate is None and (model is None or plan is None):
        fail("export needs --model and --plan (or --candidate ID)")
    if out_path is None and exporter.name != "mergekit":
        kind = "directory" if exporter.directory else "file"
        fail(f"--format {exporter.name} needs --out (a {kind} to write)")
    if out_path is not None:
        check_output(out_path, force)
    if dtype is not None and dtype not in DTYPES:
        fail(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}")
    if candidate is not None:
        model, plan = _export_candidate(candidate, exporter.name, out_path, force, dtype, url)
        if model is None:
            return
    assert model is not None and plan is not None
    parsed = Plan.parse(plan)
    request = ExportRequest(
        model=model,
        plan=parsed,
        dtype=dtype,
        recipe_model=recipe_model,
        sources=parse_sources(source),
    )
    if exporter.name == "mergekit":
        _export_recipe(request, layers, out_path, force)
        return
    assert out_path is not None  # required above for every format but mergekit
    if exporter.name == "hf":
        quiet_libraries()  # transformers loads the model; gguf never imports it
    _write_export(exporter.name, request, out_path, force)


def _export_recipe(request, layers: int | None, out_path: Path | None, force: bool) -> None:
    """The recipe on stdout (or in ``out_path``), with a note on stderr for a GGUF base model."""
    from frankensweep.export import export as write_export
    from frankensweep.export.mergekit import gguf_note, recipe_text
    from frankensweep.models import read_num_layers, resolve_spec

    text = recipe_text(request)  # a bad dtype fails before the model is read
    resolve_spec(request.model)  # a missing model file is an error even with --layers
    if layers is None:
        quiet_libraries()
        layers = read_num_layers(request.model)
    request.plan.validate(layers)
    note = gguf_note(request.model, request.recipe_model)
    if note:
        err.print(f"note: {note}", highlight=False, markup=False)
    if out_path is None:
        out.print(text, end="", markup=False)
        return
    size = write_export("mergekit", request, out_path, force=force)
    err.print(f"wrote {out_path} ({size} bytes)", highlight=False, markup=False)


def _write_export(name: str, request, out_path: Path, force: bool) -> None:
    """Write a GGUF file or an HF directory, with a progress bar or a spinner."""
    from frankensweep.export import get_exporter, staged_output

    with status(f"checking {request.model}"):
        job = get_exporter(name).prepare(request)
    directory = get_exporter(name).directory
    if job.total is None:
        with status(f"writing {out_path}"), staged_output(out_path, force, directory) as staged:
            size = job.write(staged)
    else:
        with progress_bar() as bar, staged_output(out_path, force, directory) as staged:
            task = bar.add_task(f"writing {out_path.name}", total=job.total)
            size = job.write(staged, lambda n: bar.advance(task, n))
    err.print(
        f"wrote {out_path} ({size / 2**20:.1f} MiB; {len(request.plan)} layers: {request.plan})",
        highlight=False,
        markup=False,
    )


def _export_candidate(
    candidate: int, name: str, out_path: Path | None, force: bool, dtype: str | None, url: str
) -> tuple[str | None, str | None]:
    """Export a stored candidate through the server: the recipe and the GGUF file come from the
    server; for an HF directory, the candidate's plan and model are read and written here."""
    from frankensweep.client import Client
    from frankensweep.export import staged_output

    client = Client(url)
    if name == "mergekit":
        text = client.recipe(candidate, dtype or "bfloat16")
        if out_path is None:
            out.print(text, end="", markup=False)
        else:
            with staged_output(out_path, force) as staged:
                staged.write_text(text, encoding="utf-8")
            err.print(f"wrote {out_path}", highlight=False, markup=False)
        return None, None
    if name == "gguf":
        assert out_path is not None
        bar, tasks = progress_bar(), list[TaskID]()

        def advance(done: int, total: int | None) -> None:
            if not tasks:  # the bar shows once the server has answered with the file
                bar.start()
                tasks.append(bar.add_task(f"downloading {out_path.name}", total=total))
            bar.update(tasks[0], completed=done)

        try:
            with staged_output(out_path, force) as staged:
                path = f"/api/candidates/{candidate}/export.gguf"
                size = client.download(path, staged, advance)
        finally:
            if tasks:
                bar.stop()
        err.print(f"wrote {out_path} ({size / 2**20:.1f} MiB)", highlight=False, markup=False)
        return None, None
    found = client.candidate(candidate)
    return client.sweep(found["sweep_id"])["model"], found["plan"]


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
