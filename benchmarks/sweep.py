"""Sweep: one overlap sweep evaluated three ways on SmolLM2 and WikiText-2.

On the real SmolLM2-135M-Instruct (30 layers, GGUF dequantized to float32, CPU), a >= 10-plan
overlap space, perplexity on the first tokens of the WikiText-2 test split (shared data dir):

- **separate**: every plan through its own view (``perplexity(build_view(base, plan), windows)``);
- **prefix-shared**: all plans at once (``shared_view_perplexities``), each shared layer prefix
  computed once per window; the two are timed interleaved in one run (median of the repetitions),
  their perplexities checked bitwise equal, their layer evaluations set against the prefix-tree
  lower bound;
- **the mergekit workflow** users follow today, per plan: write the recipe (``plan_to_recipe``,
  float32, the base model converted once from the GGUF by ``frankensweep convert``), run
  ``mergekit-yaml`` as a subprocess, load the written model with transformers (fp32), evaluate
  perplexity on the same windows, delete the output. Its time, disk written and peak memory are
  set against frankensweep's, and its perplexities checked against the views'.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import Section, fmt_bytes, fmt_seconds, median, rss_bytes, smollm2, step
from frankensweep.evals.perplexity import (
    PerplexityResult,
    make_windows,
    perplexity,
    result_from_nll,
    tokenize_corpus,
)
from frankensweep.evals.prefix import DEFAULT_MEMORY_BUDGET, PrefixStats, tree_nodes
from frankensweep.export.mergekit import MERGEKIT_FLAGS, mergekit_command
from frankensweep.models import smollm2_path
from frankensweep.search import Filters, OverlapSpace, Plan, enumerate_space, plan_to_recipe
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "wikitext-2" / "test.txt"
#: overlap space (OverlapSpace parameters) filtered by Filters.study_defaults()
SPACE = {"slice_size": "14:15", "jump": "5:6", "last_slice": "8:11"}
#: the issue's example space, for the layer-count comparison in the notes (not evaluated)
EXAMPLE_SPACE = {"slice_size": "10:16:2", "jump": "3:5", "last_slice": "6:8:2"}
MIN_PLANS = 10
CTX = 512  # tokens per window
RATIO_TARGET = 1.8  # separate / prefix-shared wall-clock


@dataclass(frozen=True)
class Settings:
    """How much a run measures."""

    tokens: int  # WikiText-2 tokens evaluated per plan (rounded down to whole windows)
    reps: int  # rounds: every window both ways back to back, then mergekit plans
    mergekit_plans: int | None  # plans run through mergekit (None: all; else an even subset)


FULL = Settings(tokens=2048, reps=3, mergekit_plans=6)
QUICK = Settings(tokens=512, reps=3, mergekit_plans=3)


# -- measuring ---------------------------------------------------------------------------------


def corpus_text() -> str:
    """The WikiText-2 test split from the shared data dir (never copied into the project)."""
    if not CORPUS.is_file():
        raise FileNotFoundError(
            f"WikiText-2 test split not found at {CORPUS}: the sweep benchmark reads it from "
            "the shared data dir next to the repository (../shared/data/wikitext-2/test.txt)"
        )
    return CORPUS.read_text(encoding="utf-8")


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1)) * 1024


class PeakRss:
    """Peak RSS growth of this process inside a ``with`` block, over its RSS at the start.

    The start is read after a garbage collection and heap trim (:func:`rss_bytes`). On Linux the
    kernel's high-water mark is reset (``/proc/self/clear_refs``) and read back (``VmHWM``), so no
    peak is missed; elsewhere RSS is polled every 5 ms.
    """

    def __init__(self) -> None:
        self.start = 0
        self.growth = 0
        self._peak = 0
        self._polling = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.start = rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            _status_kib("VmHWM")
        except OSError:
            import psutil

            self._polling = True
            process = psutil.Process()
            self._peak = self.start

            def poll() -> None:
                while not self._stop.wait(0.005):
                    self._peak = max(self._peak, process.memory_info().rss)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._polling:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            peak = self._peak
        else:
            peak = _status_kib("VmHWM")
        self.growth = max(peak - self.start, 0)


def io_written() -> dict[str, int]:
    """This process's write counters (``/proc/self/io``): ``wchar`` (bytes passed to write
    calls, any file, pipe or terminal) and ``write_bytes`` (bytes sent towards storage)."""
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            pairs = (line.split(":") for line in f)
            counters = {key.strip(): int(value) for key, value in pairs}
    except OSError:
        return {}
    return {key: counters[key] for key in ("wchar", "write_bytes")}


def dir_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def fresh_tmpdir(parent: Path) -> Iterator[Path]:
    """A new empty directory set as TMPDIR (environment and ``tempfile``) inside the block."""
    path = Path(tempfile.mkdtemp(prefix="tmpdir-", dir=parent))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(path), str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


@dataclass(frozen=True)
class Child:
    """A finished subprocess: wall-clock seconds and peak RSS (``wait4``)."""

    seconds: float
    peak_rss: int


def run_child(args: list[str], log: Path) -> Child:
    """Run ``args`` (stderr to ``log``), wait with ``os.wait4`` for its own peak RSS."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args)} exited with {code}:\n{tail}")
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return Child(seconds, usage.ru_maxrss * unit)


def executable(name: str) -> str:
    """``name`` from the venv's bin directory (mergekit is a dev extra)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable}: pip install -e .[dev]")
    return found


def even_subset(plans: list[Plan], count: int | None) -> list[Plan]:
    """All plans (``count`` None or >= len), else ``count`` plans spread evenly over the list."""
    if count is None or count >= len(plans):
        return list(plans)
    if count == 1:
        return plans[:1]
    return [plans[round(i * (len(plans) - 1) / (count - 1))] for i in range(count)]


# -- the three ways ----------------------------------------------------------------------------


@dataclass
class Run:
    """One timed evaluation of every plan."""

    seconds: float
    results: dict[Plan, PerplexityResult]
    peak_growth: int  # RSS growth over the start, bytes
    written: dict[str, int]  # /proc/self/io deltas
    stats: PrefixStats | None = None


def evaluate(mode: str, base: torch.nn.Module, plans: list[Plan], windows: torch.Tensor) -> Run:
    """Evaluate every plan ``separate``-ly or ``shared`` (prefix-shared), measured."""
    stats = None
    with PeakRss() as memory:  # its /proc/self/clear_refs write stays outside the io window
        before = io_written()
        start = time.perf_counter()
        if mode == "separate":
            results = {plan: perplexity(build_view(base, plan), windows) for plan in plans}
        else:
            results, stats = shared_view_perplexities(base, plans, windows)
        seconds = time.perf_counter() - start
        after = io_written()
    written = {key: after[key] - before[key] for key in after}
    return Run(seconds, results, memory.growth, written, stats)


@dataclass
class Merged:
    """The mergekit workflow for one plan."""

    plan: Plan
    merge: Child  # mergekit-yaml subprocess
    disk: int  # bytes in its output directory
    load_seconds: float  # AutoModelForCausalLM.from_pretrained (fp32)
    eval_seconds: float  # perplexity on the same windows
    load_eval_growth: int  # RSS growth of this process while loading and evaluating
    result: PerplexityResult

    @property
    def seconds(self) -> float:
        return self.merge.seconds + self.load_seconds + self.eval_seconds


def mergekit_plan(plan: Plan, base_dir: Path, work: Path, windows: torch.Tensor) -> Merged:
    """Recipe -> mergekit-yaml -> load -> perplexity -> delete, for one plan."""
    from transformers import AutoModelForCausalLM

    recipe, out = work / "recipe.yml", work / "merged"
    start = time.perf_counter()
    recipe.write_text(plan_to_recipe(plan, str(base_dir), "float32"), encoding="utf-8")
    recipe_seconds = time.perf_counter() - start
    executable("mergekit-yaml")  # a clear error if mergekit is missing
    command = mergekit_command(recipe, out)
    child = run_child(command, work / "mergekit.log")
    child = Child(child.seconds + recipe_seconds, child.peak_rss)  # recipe write included
    disk = dir_bytes(out)
    with PeakRss() as memory:
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        loaded = time.perf_counter()
        result = perplexity(model, windows)
        done = time.perf_counter()
        del model
    shutil.rmtree(out)
    return Merged(plan, child, disk, loaded - start, done - loaded, memory.growth, result)


# -- the section -------------------------------------------------------------------------------


def _space_text(params: dict[str, str]) -> str:
    return ", ".join(f"{key} {value}" for key, value in params.items())


@dataclass
class Round:
    """One round: every window evaluated both ways back to back, then some mergekit plans."""

    pairs: list[tuple[float, float]]  # per window: (separate, prefix-shared) seconds
    results: dict[str, dict[Plan, float]]  # mode -> plan -> NLL summed over windows in order
    window_results: list[dict[str, dict[Plan, PerplexityResult]]]  # per window: mode -> results
    stats: list[PrefixStats]  # prefix-shared, per window
    growth: dict[str, int]  # mode -> largest extra peak RSS of its calls
    written: dict[str, int]  # mode -> bytes written by its calls (/proc/self/io)
    merged: list[Merged]

    def seconds(self, mode: str) -> float:
        return sum(pair[mode == "shared"] for pair in self.pairs)


def evaluate_round(
    number: int, base: torch.nn.Module, plans: list[Plan], windows: torch.Tensor
) -> Round:
    """Each window through every plan separately and prefix-shared, back to back."""
    rnd = Round([], {"separate": {}, "shared": {}}, [], [], {}, {}, [])
    for index in range(windows.shape[0]):
        window = windows[index : index + 1]
        order = ["separate", "shared"] if (number + index) % 2 == 0 else ["shared", "separate"]
        runs = {mode: evaluate(mode, base, plans, window) for mode in order}
        rnd.pairs.append((runs["separate"].seconds, runs["shared"].seconds))
        rnd.window_results.append({mode: run.results for mode, run in runs.items()})
        for mode, run in runs.items():
            totals = rnd.results[mode]
            for plan in plans:  # in window order, as perplexity() sums its batches
                totals[plan] = totals.get(plan, 0.0) + run.results[plan].nll
            rnd.growth[mode] = max(rnd.growth.get(mode, 0), run.peak_growth)
            rnd.written[mode] = rnd.written.get(mode, 0) + sum(run.written.values())
        assert runs["shared"].stats is not None
        rnd.stats.append(runs["shared"].stats)
    return rnd


def run(quick: bool) -> Section:
    settings = QUICK if quick else FULL
    section = Section(name="sweep", summary="", quick=quick)  # machine state before the load
    step("loading SmolLM2-135M-Instruct (GGUF)")
    loaded = smollm2()
    base, tokenizer = loaded.base.model, loaded.base.tokenizer
    num_layers = loaded.base.num_layers

    text = corpus_text()
    windows = make_windows(tokenize_corpus(tokenizer, text), settings.tokens, CTX)
    space = enumerate_space(OverlapSpace(num_layers, **SPACE), Filters.study_defaults())
    plans = space.plans
    if len(plans) < MIN_PLANS:
        raise RuntimeError(f"the sweep space kept {len(plans)} plans, fewer than {MIN_PLANS}")
    layers = sum(len(plan) for plan in plans)
    tokens, n_windows, reps = windows.numel(), windows.shape[0], settings.reps
    mk_plans = even_subset(plans, settings.mergekit_plans)
    subset = len(mk_plans) < len(plans)
    section.summary = (
        f"A {len(plans)}-plan overlap sweep on SmolLM2-135M-Instruct ({num_layers} layers, GGUF "
        f"dequantized to float32, CPU), perplexity on {tokens} WikiText-2 test tokens: every plan "
        "evaluated separately vs prefix-shared (interleaved in one run), and the mergekit "
        "workflow (recipe, mergekit-yaml, load, evaluate, delete) vs frankensweep's views."
    )
    section.settings = {
        "space": f"overlap ({_space_text(SPACE)}) + Filters.study_defaults()",
        "plans": str(len(plans)),
        "corpus": "WikiText-2 test (../shared/data/wikitext-2/test.txt)",
        "tokens": f"{tokens} ({n_windows} window(s) of {CTX})",
        "rounds": str(reps),
        "batch size": "1",
        "memory budget": fmt_bytes(DEFAULT_MEMORY_BUDGET),
        "torch threads": f"{torch.get_num_threads()} (runner default, not set)",
        "mergekit plans": f"{len(mk_plans)} of {len(plans)}",
    }
    step(f"space: {space.summary()}")

    scratch = Path(tempfile.mkdtemp(prefix="frankensweep-bench-sweep-"))
    try:
        step("warm-up (one window, both ways)")
        perplexity(build_view(base, plans[0]), windows[:1])
        shared_view_perplexities(base, plans[:2], windows[:1])
        step("base model perplexity (context, untimed)")
        base_ppl = perplexity(base, windows).perplexity
        base_dir = scratch / "base"
        step("one-off: frankensweep convert (GGUF -> HF float32 directory)")
        convert = run_child(
            [
                executable("frankensweep"),
                *("convert", "--model", str(smollm2_path()), "--out", str(base_dir)),
            ],
            scratch / "convert.log",
        )
        convert_disk = dir_bytes(base_dir)

        rounds: list[Round] = []
        tmp_files: list[Path] = []  # left by frankensweep's evaluations in their own TMPDIR
        for number in range(reps):
            step(f"round {number + 1}/{reps}: {n_windows} window(s), separate vs shared")
            with fresh_tmpdir(scratch) as tmp:
                rnd = evaluate_round(number, base, plans, windows)
                tmp_files += tmp.rglob("*")
            for plan in mk_plans[number::reps]:  # mergekit plans spread over the rounds
                step(f"round {number + 1}/{reps}: mergekit {plan}")
                rnd.merged.append(mergekit_plan(plan, base_dir, scratch, windows))
            rounds.append(rnd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    # -- separate vs prefix-shared -------------------------------------------------------------
    pairs = [pair for rnd in rounds for pair in rnd.pairs]
    pair_ratio = median([sep / shared for sep, shared in pairs])
    totals = {mode: [rnd.seconds(mode) for rnd in rounds] for mode in ("separate", "shared")}
    seconds = {mode: median(values) for mode, values in totals.items()}
    reference = {
        plan: result_from_nll(nll, windows) for plan, nll in rounds[0].results["shared"].items()
    }
    bitwise = all(
        w["separate"] == w["shared"] for rnd in rounds for w in rnd.window_results
    ) and all(
        rnd.results[mode] == rounds[0].results["shared"] for rnd in rounds for mode in rnd.results
    )
    stats = rounds[0].stats
    layer_evals = sum(s.layer_evals for s in stats)
    separate_evals = sum(s.separate_layer_evals for s in stats)
    bound = sum(s.tree_nodes for s in stats)
    peak_kept = max(s.peak_kept_bytes for s in stats)
    section.add(
        "plans (positions in all)",
        f"{len(plans)} ({layers} layers)",
        f">= {MIN_PLANS}",
        len(plans) >= MIN_PLANS,
    )
    section.add(
        f"separate / prefix-shared wall-clock, median of {len(pairs)} per-window pairs",
        f"{pair_ratio:.2f}x",
        f">= {RATIO_TARGET}x",
        pair_ratio >= RATIO_TARGET,
    )
    section.add(
        f"separate evaluation, all plans and windows, median of {reps} rounds",
        fmt_seconds(seconds["separate"]),
    )
    section.add(
        f"prefix-shared evaluation, all plans and windows, median of {reps} rounds",
        fmt_seconds(seconds["shared"]),
    )
    section.add(
        "separate / prefix-shared, ratio of the round medians",
        f"{seconds['separate'] / seconds['shared']:.2f}x",
    )
    section.add(
        "per round, separate / shared seconds",
        ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(*totals.values(), strict=True)),
    )
    section.add(
        "perplexities separate == prefix-shared (bitwise, every window and round)",
        str(bitwise),
        "True",
        bitwise,
    )
    section.add(
        "layer evaluations: separate / prefix-shared / tree lower bound",
        f"{separate_evals:,} / {layer_evals:,} / {bound:,}",
        "shared = bound",
        layer_evals == bound,
    )
    section.add(
        "layer evaluations separate / prefix-shared", f"{separate_evals / layer_evals:.2f}x"
    )
    section.add("peak hidden states kept (prefix-shared)", fmt_bytes(peak_kept))

    # -- frankensweep's cost per plan ----------------------------------------------------------
    fs_per_plan = seconds["shared"] / len(plans)
    fs_written = max(max(rnd.written.values()) for rnd in rounds)
    no_disk = fs_written == 0 and not tmp_files
    section.add(
        "frankensweep per plan (prefix-shared round median / plans)", fmt_seconds(fs_per_plan)
    )
    for mode in ("shared", "separate"):
        name = "prefix-shared" if mode == "shared" else "separate"
        section.add(
            f"frankensweep extra peak RSS, {name} (max of all calls)",
            fmt_bytes(max(rnd.growth[mode] for rnd in rounds)),
        )
    section.add(
        "frankensweep bytes written (process write calls, files in a fresh TMPDIR)",
        f"{fmt_bytes(fs_written)}, {len(tmp_files)} files",
        "0 B, 0 files",
        no_disk,
    )

    # -- the mergekit workflow -----------------------------------------------------------------
    merged = [m for rnd in rounds for m in rnd.merged]
    n_mk = len(merged)
    mk = {
        "merge": median([m.merge.seconds for m in merged]),
        "load": median([m.load_seconds for m in merged]),
        "eval": median([m.eval_seconds for m in merged]),
        "total": median([m.seconds for m in merged]),
    }
    # each mergekit plan against frankensweep's per-plan time in the same round
    mk_ratio = median(
        [m.seconds / (rnd.seconds("shared") / len(plans)) for rnd in rounds for m in rnd.merged]
    )
    of = f"median of {n_mk} of {len(plans)} plans" if subset else f"median of {n_mk} plans"
    section.add(
        "one-off: frankensweep convert (GGUF -> HF fp32 dir): time, disk, peak RSS",
        f"{fmt_seconds(convert.seconds)}, {fmt_bytes(convert_disk)}, {fmt_bytes(convert.peak_rss)}",
    )
    section.add(f"mergekit per plan: mergekit-yaml subprocess, {of}", fmt_seconds(mk["merge"]))
    section.add(f"mergekit per plan: load merged model (fp32), {of}", fmt_seconds(mk["load"]))
    section.add(f"mergekit per plan: perplexity, {of}", fmt_seconds(mk["eval"]))
    section.add(f"mergekit per plan: whole workflow, {of}", fmt_seconds(mk["total"]))
    section.add(
        f"mergekit / frankensweep time per plan, median of {n_mk} (each vs its round)",
        f"{mk_ratio:.1f}x",
    )
    sweep_total = mk["total"] * len(plans) if subset else sum(m.seconds for m in merged)
    section.add(
        f"whole {len(plans)}-plan sweep: mergekit{' (extrapolated)' if subset else ''} / "
        "frankensweep prefix-shared",
        f"{fmt_seconds(sweep_total)} / {fmt_seconds(seconds['shared'])}",
    )
    section.add(
        f"disk written per plan, {of}: mergekit output dir / frankensweep",
        f"{fmt_bytes(median([m.disk for m in merged]))} / {fmt_bytes(fs_written)}",
    )
    section.add(
        f"peak RSS of the mergekit-yaml subprocess (max of {n_mk})",
        fmt_bytes(max(m.merge.peak_rss for m in merged)),
    )
    section.add(
        f"mergekit load + perplexity: extra peak RSS (max of {n_mk})",
        fmt_bytes(max(m.load_eval_growth for m in merged)),
    )
    same = [m for m in merged if m.result == reference[m.plan]]
    worst = max(abs(m.result.nll - reference[m.plan].nll) for m in merged)
    section.add(
        "mergekit perplexities == frankensweep's (bitwise)",
        f"{len(same)}/{n_mk}" + ("" if len(same) == n_mk else f", max |ΔNLL| {worst:.3g} nats"),
        f"{n_mk}/{n_mk}",
        len(same) == n_mk,
    )

    # -- notes ---------------------------------------------------------------------------------
    example = enumerate_space(OverlapSpace(num_layers, **EXAMPLE_SPACE)).plans
    example_layers, example_nodes = sum(len(p) for p in example), tree_nodes(example)
    vocab = base.config.vocab_size
    logits_bytes = CTX * vocab * 4  # one window's float32 logits
    perplexities = "; ".join(
        f"`{plan}` ({len(plan)}) {reference[plan].perplexity:.2f}"
        + (" [mergekit]" if plan in mk_plans and subset else "")
        for plan in plans
    )
    section.notes += [
        f"Space: {space.summary()}. Plans (layers) and perplexity: {perplexities}; the base "
        f"model (`0-{num_layers}`) scores {base_ppl:.2f} on the same windows.",
        "Separate = `perplexity(build_view(base, plan), window)` for every plan; prefix-shared "
        "= `shared_view_perplexities(base, plans, window)` (batch 1, default memory budget). "
        f"Each of the {reps} rounds runs, for each of the {n_windows} window(s), both ways back "
        "to back (order alternating), so every pair is measured within a minute or so of load; "
        "the target row is the median of those per-window ratios, the round rows add the "
        "windows up (per-window NLLs are summed in window order, exactly as `perplexity` sums "
        "its batches, so the perplexities over all windows are bitwise those of single calls). "
        "Both modes run the same per-plan-and-window work (embeddings, final norm, the LM head "
        "and the loss); prefix sharing saves decoder-layer forwards only "
        f"({separate_evals / layer_evals:.2f}x fewer here), so that common part pulls the "
        "wall-clock ratio towards 1, while load swings on the machine move single pairs "
        "either way.",
        f"The issue's example space (overlap {_space_text(EXAMPLE_SPACE)}, unfiltered) gives "
        f"{len(example)} plans with {example_layers} layers vs {example_nodes} tree nodes per "
        f"window ({example_layers / example_nodes:.2f}x fewer layer forwards); the space used "
        "here, study filters on, shares more (jumps 5-6 after first slices of 14-15 layers, up "
        "to 4 last-slice lengths per path), which sets the ceiling of the saving.",
        "mergekit workflow per plan: write the recipe (`plan_to_recipe`, dtype float32) -> "
        f"`mergekit-yaml recipe.yml out {' '.join(MERGEKIT_FLAGS)}` (a subprocess; its time "
        "includes interpreter start-up and imports, as users pay them) -> "
        "`AutoModelForCausalLM.from_pretrained(out, dtype=float32)` in this process -> "
        "`perplexity` on the same windows -> delete the output. The base model it reads was "
        "converted once by `frankensweep convert` (a subprocess, timed apart as a one-off; "
        "frankensweep itself reads the GGUF directly)."
        + (
            f" Only {n_mk} of the {len(plans)} plans (spread evenly, marked [mergekit] above) "
            "went through mergekit to keep the run short; the whole-sweep figure multiplies the "
            "per-plan median by the number of plans."
            if subset
            else ""
        )
        + " The mergekit plans are spread over the rounds, each run right after its round's "
        "window pairs; the ratio row sets each against frankensweep's per-plan time (the "
        "round's prefix-shared seconds / plans) of the same round.",
        "Memory: peak RSS of a subprocess is its own maximum resident set (`os.wait4`), "
        "interpreter, torch and mergekit included. The 'extra peak RSS' rows are the growth of "
        "this process's high-water mark (reset through /proc/self/clear_refs after a garbage "
        "collection and heap trim) over its RSS at the start of the evaluation: on top of the "
        "base model frankensweep already holds (one-off, shared by every plan), and, for "
        "mergekit, loading the merged model and evaluating it. frankensweep's growth is the "
        f"work of one window, not the views: its float32 logits ({CTX} x {vocab} = "
        f"{fmt_bytes(logits_bytes)}) and the loss's log-softmax of the same size; mergekit's "
        "adds the merged model's own weights.",
        "Disk: mergekit's figure is the size of its output directory (written, then deleted, for "
        "each plan). frankensweep's is the sum of this process's `wchar` and `write_bytes` "
        "(/proc/self/io) over the calls of each mode in a round (max over modes and rounds), "
        "plus the files left in a fresh empty directory set as TMPDIR for each round's "
        "evaluations.",
        "Timing under load: the machine is shared (see the load averages); all figures come "
        "from this one run, and every ratio sets measurements taken side by side.",
    ]
    return section
