"""The GPU benchmark of ``scripts/gpu-check.sh``: random models with the real shapes of Llama-3 8B
(bfloat16 and nf4) and Qwen2 32B (nf4).

    python -m benchmarks.gpu --out DIR [--size auto|gpu|cpu] [--budget SECONDS]

No weights can be downloaded where it runs, so each model is built from its config with random
weights, straight on the device in bfloat16 (``torch.device`` as the default device: no CPU copy,
no file); for nf4 that state is then quantized by transformers and bitsandbytes as the loader
quantizes a GGUF file (``quantized_copy``). For each model it measures:

- prefill throughput (tokens/s, no KV cache, all logits) of the base model and of a view 1.5x its
  depth (``0-3N/4,N/4-N``);
- a 10-plan sweep (the base and nine two-slice overlaps) scored for perplexity separately, plan by
  plan, and prefix-shared (``shared_view_perplexities``), wall-clock of each and whether their
  NLLs are bitwise equal;
- EQ-Bench-shaped generation (prompts of 500 random tokens, 80 new tokens, greedy) in seconds per
  question at batch 1, 8 and 32;
- the memory left allocated by the weights, and the peak (``torch.cuda.max_memory_allocated``) of
  each phase, next to the memory planner's estimate (:func:`planner_estimate`).

``--size cpu`` (the default without CUDA) runs the same measurements on tiny models of the same
two architectures with few tokens, in about a minute: the figures are then only a check that
every path runs. The results are written as ``gpu-check.json`` and ``gpu-check.md`` (a markdown
table) under ``--out``, after every model, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import fmt_bytes, fmt_seconds, machine_info, median
from frankensweep.evals.perplexity import perplexity
from frankensweep.models import LoadOptions
from frankensweep.search import Plan
from frankensweep.worker.loading import quantization_config, quantized_copy
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view

#: the real shapes (from the models' published configs) and the tiny CPU-sized stand-ins
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": {
        "family": "llama",
        "real": dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            rope_theta=500000.0,
            rms_norm_eps=1e-5,
            max_position_embeddings=8192,
        ),
        "tiny": dict(num_hidden_layers=8),
    },
    "qwen2-32b": {
        "family": "qwen2",
        "real": dict(
            hidden_size=5120,
            intermediate_size=27648,
            num_hidden_layers=64,
            num_attention_heads=40,
            num_key_value_heads=8,
            vocab_size=152064,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            max_position_embeddings=32768,
        ),
        "tiny": dict(num_hidden_layers=8),
    },
}
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=256,
)
#: (shape, quantization) measured, in this order; the load dtype is always bfloat16
RUNS = [("llama3-8b", "none"), ("llama3-8b", "nf4"), ("qwen2-32b", "nf4")]
DTYPE = torch.bfloat16
BATCHES = (1, 8, 32)


@dataclass(frozen=True)
class Sizes:
    """How much each measurement runs: the GPU sizes, or the CPU-sized check."""

    name: str
    device: str
    prefill: tuple[int, int]  # (batch, tokens) of a forward pass for tokens/s
    repeats: int  # timed forward passes (after one warm-up), median taken
    windows: tuple[int, int]  # (count, ctx) of the sweep's perplexity windows
    window_batch: int
    prompt: int  # tokens per EQ-Bench-shaped prompt
    new_tokens: int  # tokens generated per question
    questions: dict[int, int]  # batch -> questions generated at that batch


GPU = Sizes("gpu", "cuda", (1, 2048), 3, (4, 512), 2, 500, 80, {1: 2, 8: 8, 32: 32})
CPU = Sizes("cpu", "cpu", (1, 16), 1, (2, 8), 2, 12, 3, {1: 1, 8: 8, 32: 32})


@dataclass
class Result:
    """The figures of one (shape, quantization) run; None where not measured."""

    model: str
    quantization: str
    dtype: str
    size: str
    layers: int
    view_depth: int
    parameters: int = 0
    build_seconds: float | None = None
    weights_bytes: int | None = None  # allocated once the model is built
    prefill_tokens_per_s: dict[str, float] = field(default_factory=dict)  # base / view
    sweep: dict[str, Any] = field(default_factory=dict)
    seconds_per_question: dict[str, float] = field(default_factory=dict)  # batch -> seconds
    peak_bytes: dict[str, int | None] = field(default_factory=dict)  # phase -> peak
    planner_estimate_bytes: int | None = None
    planner_inputs: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


# -- the planner ---------------------------------------------------------------------------------


def planner_estimate(
    config: Any,
    quantization: str,
    dtype: str,
    positions: list[int],
    batch: int,
    prompt: int,
    new: int,
) -> int | None:
    """The memory planner's estimate of a worker's peak for this run: the deepest plan here
    (the 1.5x view, ``positions``: its source layers) generating ``new`` tokens after ``prompt`` at
    ``batch`` on CUDA, compared with the largest measured peak."""
    from frankensweep.models.memory import Generation, estimate

    work = [Generation(batch, prompt, new)]
    found = estimate(config, quantization, dtype, positions, work, cuda=True)
    return found.total


# -- building ------------------------------------------------------------------------------------


def model_config(shape: str, sizes: Sizes) -> Any:
    """The ``transformers`` config of ``shape``: real, or the tiny CPU stand-in."""
    import transformers

    spec = SHAPES[shape]
    dims = dict(spec["real"])
    if sizes.name == "cpu":
        dims = {**dims, **TINY, **spec["tiny"]}
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[spec["family"]]
    return cls(**dims, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else None


def _allocated(device: str) -> int | None:
    return int(torch.cuda.memory_allocated()) if device == "cuda" else None


def random_model(config: Any, quantization: str, device: str) -> nn.Module:
    """A randomly initialised ``*ForCausalLM`` of ``config`` on ``device`` in bfloat16,
    quantized by bitsandbytes for ``nf4`` / ``int8``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPE)
    model.to(device)  # a no-op when the weights were created there, as intended
    if quantization != "none":
        plain = model
        options = LoadOptions(quantization=quantization)
        model = quantized_copy(
            plain, quantization_config(options, DTYPE), device_map={"": device}, dtype=DTYPE
        )
        del plain
    model.eval()
    model.requires_grad_(False)
    return model


# -- measuring -----------------------------------------------------------------------------------


def _timed(fn: Callable[[], Any], device: str) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def view_plan(layers: int) -> Plan:
    """A plan 1.5x the base depth: ``0-3N/4, N/4-N`` (half the layers run twice)."""
    return Plan.parse(f"0-{3 * layers // 4},{layers // 4}-{layers}")


def sweep_plans(layers: int) -> list[Plan]:
    """Ten plans: the base, then nine two-slice overlaps ``0-a,b-N`` sharing their prefixes."""
    plans = [Plan.base(layers)]
    for a in (layers // 2, 5 * layers // 8, 3 * layers // 4):
        for back in (layers // 8, layers // 4, 3 * layers // 8):
            plans.append(Plan.parse(f"0-{a},{max(a - back, 1)}-{layers}"))
    return plans


def random_ids(vocab: int, shape: tuple[int, int], device: str, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, shape, generator=generator).to(device)


@torch.inference_mode()
def prefill_rate(model: nn.Module, ids: torch.Tensor, sizes: Sizes) -> float:
    """Tokens per second of a full forward pass (all logits, no cache), median of the repeats."""
    model(input_ids=ids, use_cache=False)  # warm-up: kernels, allocator
    times = [
        _timed(lambda: model(input_ids=ids, use_cache=False), sizes.device)
        for _ in range(sizes.repeats)
    ]
    return ids.numel() / median(times)


def measure_sweep(model: nn.Module, layers: int, vocab: int, sizes: Sizes) -> dict[str, Any]:
    """Separate vs prefix-shared perplexity of the 10-plan sweep: wall-clock and equality."""
    plans = sweep_plans(layers)
    windows = random_ids(vocab, sizes.windows, "cpu", seed=2)
    separate: dict[Plan, float] = {}

    def run_separate() -> None:
        for plan in plans:
            view = build_view(model, plan)
            separate[plan] = perplexity(view, windows, batch_size=sizes.window_batch).nll

    shared: dict[Plan, float] = {}
    stats: list[Any] = []

    def run_shared() -> None:
        results, found = shared_view_perplexities(
            model, plans, windows, batch_size=sizes.window_batch
        )
        shared.update({plan: r.nll for plan, r in results.items()})
        stats.append(found)

    separate_s = _timed(run_separate, sizes.device)
    shared_s = _timed(run_shared, sizes.device)
    return {
        "plans": [str(p) for p in plans],
        "tokens": int(windows.numel()),
        "separate_seconds": separate_s,
        "shared_seconds": shared_s,
        "speedup": separate_s / shared_s,
        "layer_evals": stats[0].layer_evals,
        "separate_layer_evals": stats[0].separate_layer_evals,
        # compared as bit patterns (a random model's NaN equals itself here)
        "bitwise_equal": all(shared[p].hex() == separate[p].hex() for p in plans),
    }


@torch.inference_mode()
def seconds_per_question(model: nn.Module, vocab: int, batch: int, sizes: Sizes) -> float:
    """Greedy generation of ``sizes.new_tokens`` after ``sizes.prompt``-token prompts, ``batch``
    prompts per call, over ``sizes.questions[batch]`` questions: seconds per question."""
    questions = sizes.questions[batch]
    total = 0.0
    for start in range(0, questions, batch):
        ids = random_ids(vocab, (batch, sizes.prompt), sizes.device, seed=10 + start)
        total += _timed(
            lambda ids=ids: model.generate(  # type: ignore[operator]
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=sizes.new_tokens,
                min_new_tokens=sizes.new_tokens,
                do_sample=False,
                pad_token_id=0,
            ),
            sizes.device,
        )
    return total / questions


def measure(shape: str, quantization: str, sizes: Sizes) -> Result:
    """Build one random model and take every figure of it."""
    config = model_config(shape, sizes)
    layers, vocab = config.num_hidden_layers, config.vocab_size
    plan = view_plan(layers)
    result = Result(
        model=shape,
        quantization=quantization,
        dtype="bfloat16",
        size=sizes.name,
        layers=layers,
        view_depth=len(plan),
    )
    device = sizes.device
    _reset_peak(device)
    start = time.perf_counter()
    model = random_model(config, quantization, device)
    _synchronize(device)
    result.build_seconds = time.perf_counter() - start
    result.peak_bytes["build"] = _peak(device)
    _reset_peak(device)
    result.weights_bytes = _allocated(device)
    result.parameters = sum(p.numel() for p in model.parameters())
    placed = {p.device.type for p in model.parameters()}
    if placed != {torch.device(device).type}:
        raise RuntimeError(f"the random model's weights are on {placed}, not {device}")

    ids = random_ids(vocab, sizes.prefill, device)
    view = build_view(model, plan)
    result.prefill_tokens_per_s["base"] = prefill_rate(model, ids, sizes)
    result.peak_bytes["prefill base"] = _peak(device)
    _reset_peak(device)
    result.prefill_tokens_per_s["view"] = prefill_rate(view, ids, sizes)
    result.peak_bytes["prefill view"] = _peak(device)
    del view
    _reset_peak(device)

    result.sweep = measure_sweep(model, layers, vocab, sizes)
    result.peak_bytes["sweep"] = _peak(device)

    seconds_per_question(model, vocab, 1, Sizes(**{**asdict(sizes), "new_tokens": 2}))  # warm-up
    for batch in BATCHES:
        _reset_peak(device)
        result.seconds_per_question[str(batch)] = seconds_per_question(model, vocab, batch, sizes)
        result.peak_bytes[f"generate batch {batch}"] = _peak(device)

    tokens = sizes.prompt + sizes.new_tokens
    result.planner_inputs = {
        "depth": len(plan),
        "batch": max(BATCHES),
        "tokens": tokens,
        "quantization": quantization,
        "dtype": "bfloat16",
    }
    result.planner_estimate_bytes = planner_estimate(
        config,
        quantization,
        "bfloat16",
        plan.layers(),
        max(BATCHES),
        sizes.prompt,
        sizes.new_tokens,
    )
    del model
    _reset_peak(device)
    return result


# -- reporting -----------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _size(value: int | None) -> str:
    return "n/a" if value is None else fmt_bytes(value)


def markdown(results: list[Result], sizes: Sizes, machine: dict[str, str]) -> str:
    """The results as two markdown tables (speed, memory) with the run's settings."""
    lines = [
        f"GPU check ({sizes.name}-sized) on {machine.get('gpu') or machine.get('cpu', '?')}: "
        f"random models in bfloat16; prefill {sizes.prefill[0]} x {sizes.prefill[1]} tokens; "
        f"sweep of 10 plans on {sizes.windows[0]} windows x {sizes.windows[1]} tokens; "
        f"generation of {sizes.new_tokens} tokens after {sizes.prompt}-token prompts "
        f"({', '.join(f'batch {b}: {q} questions' for b, q in sizes.questions.items())}).",
        "",
        "| model | load | layers / view | prefill tok/s base | view | view/base | sweep separate "
        "| prefix-shared | speed-up | equal | s/question b1 | b8 | b32 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.model} | {r.quantization} | {r.skipped} |" + " |" * 10)
            continue
        base, view = r.prefill_tokens_per_s.get("base"), r.prefill_tokens_per_s.get("view")
        sweep = r.sweep
        per_q = [r.seconds_per_question.get(str(b)) for b in BATCHES]
        lines.append(
            f"| {r.model} | {r.quantization if r.quantization != 'none' else 'bf16'} "
            f"| {r.layers} / {r.view_depth} | {_rate(base)} | {_rate(view)} "
            f"| {view / base:.2f} | {fmt_seconds(sweep['separate_seconds'])} "
            f"| {fmt_seconds(sweep['shared_seconds'])} | {sweep['speedup']:.2f}x "
            f"| {'yes' if sweep['bitwise_equal'] else 'NO'} | "
            + " | ".join(fmt_seconds(q) if q is not None else "" for q in per_q)
            + " |"
        )
    phases = ["build", "prefill base", "prefill view", "sweep"] + [
        f"generate batch {b}" for b in BATCHES
    ]
    lines += [
        "",
        "Memory (`torch.cuda.max_memory_allocated` per phase; n/a on CPU). Planner: its estimate "
        "for the 1.5x view generating prompt + new tokens at batch 32.",
        "",
        "| model | load | weights | " + " | ".join(f"peak {p}" for p in phases) + " | planner |",
        "|---|---|---:|" + "---:|" * len(phases) + "---:|",
    ]
    for r in results:
        if r.skipped:
            continue
        lines.append(
            f"| {r.model} | {r.quantization if r.quantization != 'none' else 'bf16'} "
            f"| {_size(r.weights_bytes)} | "
            + " | ".join(_size(r.peak_bytes.get(p)) for p in phases)
            + f" | {_size(r.planner_estimate_bytes)} |"
        )
    return "\n".join(lines) + "\n"


def write(out: Path, results: list[Result], sizes: Sizes, machine: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "size": sizes.name,
        "sizes": asdict(sizes),
        "machine": machine,
        "results": [asdict(r) for r in results],
    }
    (out / "gpu-check.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "gpu-check.md").write_text(markdown(results, sizes, machine), encoding="utf-8")


def pick_sizes(name: str) -> Sizes:
    if name == "auto":
        return GPU if torch.cuda.is_available() else CPU
    if name == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--size gpu needs a CUDA GPU (use --size cpu or auto)")
    return {"gpu": GPU, "cpu": CPU}[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and table")
    parser.add_argument("--size", choices=("auto", "gpu", "cpu"), default="auto")
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds: a model not started by then is skipped (its row says so)",
    )
    args = parser.parse_args(argv)
    sizes = pick_sizes(args.size)
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per quantized model would swamp the table
    machine = machine_info()
    if sizes.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name()
        machine["gpu_memory"] = fmt_bytes(torch.cuda.get_device_properties(0).total_memory)
    start = time.perf_counter()
    results: list[Result] = []
    for shape, quantization in RUNS:
        elapsed = time.perf_counter() - start
        if elapsed > args.budget:
            config = model_config(shape, sizes)
            results.append(
                Result(
                    model=shape,
                    quantization=quantization,
                    dtype="bfloat16",
                    size=sizes.name,
                    layers=config.num_hidden_layers,
                    view_depth=len(view_plan(config.num_hidden_layers)),
                    skipped=f"skipped: {elapsed:.0f} s spent of the {args.budget:.0f} s budget",
                )
            )
        else:
            print(f"{shape} ({quantization}, {sizes.name}-sized) ...", file=sys.stderr, flush=True)
            results.append(measure(shape, quantization, sizes))
        write(args.out, results, sizes, machine)
    print(markdown(results, sizes, machine))
    failed = [r for r in results if r.sweep and not r.sweep["bitwise_equal"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
