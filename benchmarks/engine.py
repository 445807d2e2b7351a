"""Engine: what a view costs next to the base model and next to a materialized copy.

On the real SmolLM2-135M-Instruct (30 layers, GGUF dequantized to float32, CPU):

- build time of a view of the 46-layer plan ``0-16,8-24,16-30`` (median, p90), and of a
  materialized copy of the same plan (every position's weights copied, as mergekit writes it);
- extra memory per view while many are held alive: RSS growth, tensor storage allocated (every
  aten op that returns fresh storage is counted), Python heap (tracemalloc), and a check that
  every parameter and buffer of every view lives in the base model's storage;
- forward throughput (tokens/s, ``use_cache=False``, windows of 512 tokens of the bundled text)
  of the base model and of the view, measured interleaved in one run;
- correctness spot checks: view logits == materialized copy logits bitwise, base unchanged.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchmarks import Section, fmt_bytes, fmt_seconds, median, percentile, rss_bytes, smollm2, step
from frankensweep.evals.corpus import bundled_text
from frankensweep.evals.perplexity import (
    make_windows,
    result_from_nll,
    tokenize_corpus,
    window_nll,
)
from frankensweep.search import Plan
from frankensweep.testing.models import materialize
from frankensweep.worker.views import build_view

PLAN = "0-16,8-24,16-30"  # 46 positions: layers 8-15 and 16-23 run twice
CTX = 512  # tokens per forward window
BUILD_TARGET = 10e-3  # seconds per view build
MEMORY_TARGET = 1 << 20  # bytes per view


@dataclass(frozen=True)
class Settings:
    """How many repetitions a run makes."""

    builds: int  # timed view builds, after one warm-up build
    copies: int  # timed materialized copies
    held: int  # views held alive together for the memory figures
    runs: int  # interleaved throughput runs per model (base, view)
    windows: int  # windows of CTX tokens per throughput run


FULL = Settings(builds=200, copies=5, held=50, runs=7, windows=2)
QUICK = Settings(builds=50, copies=2, held=50, runs=5, windows=1)


# -- helpers -----------------------------------------------------------------------------------


def storages(module: nn.Module) -> set[int]:
    """Data pointers of the storages behind every parameter and buffer of ``module``."""
    tensors = [*module.parameters(), *module.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors}


class StorageCounter(TorchDispatchMode):
    """Counts bytes of fresh tensor storage returned by aten ops run inside the context.

    An output whose storage is not one of the op's inputs' storages counts once (views, aliases
    and in-place results share an input's storage and do not count). Frees are not tracked: use
    it around code whose results stay alive.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.tensors = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in inputs and ptr not in self._seen:
                self._seen.add(ptr)
                self.bytes += storage.nbytes()
                self.tensors += 1
        return out


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` (results dropped after each call)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return times


# -- the section -------------------------------------------------------------------------------


def run(quick: bool) -> Section:
    settings = QUICK if quick else FULL
    section = Section(name="engine", summary="", quick=quick)  # machine state before the load
    step("loading SmolLM2-135M-Instruct (GGUF)")
    loaded = smollm2()
    base = loaded.base.model
    num_layers = loaded.base.num_layers
    plan = Plan.parse(PLAN).validate(num_layers)
    section.summary = (
        f"Views of the {len(plan)}-layer plan `{plan}` on SmolLM2-135M-Instruct "
        f"({num_layers} layers, GGUF Q4_1 dequantized to float32, CPU), next to the base "
        "model and to a materialized copy of the plan."
    )
    section.settings = {
        "plan": f"`{plan}` ({len(plan)} layers)",
        **{k: str(v) for k, v in asdict(settings).items()},
        "ctx": str(CTX),
    }

    section.add("GGUF load (load_base_model, once)", fmt_seconds(loaded.load_seconds))

    # memory: many views alive at once
    # (first, so that the build and copy timings have not yet left freed memory to reuse)
    step(f"memory of {settings.held} views held alive")
    build_view(base, plan)  # warm-up (imports, first-call caches)
    base_storages = storages(base)
    rss_before = rss_bytes()
    with StorageCounter() as counter:
        views = [build_view(base, plan) for _ in range(settings.held)]
    rss_growth = rss_bytes() - rss_before
    foreign = set().union(*(storages(v) for v in views)) - base_storages
    del views
    gc.collect()
    tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    views = [build_view(base, plan) for _ in range(settings.held)]
    heap = tracemalloc.get_traced_memory()[0] - heap_before
    tracemalloc.stop()
    del views
    gc.collect()

    held = settings.held
    section.add(
        f"RSS growth per view ({held} held)",
        fmt_bytes(rss_growth / held),
        f"< {fmt_bytes(MEMORY_TARGET)}",
        rss_growth / held < MEMORY_TARGET,
    )
    section.add(
        f"tensor storage allocated per view ({held} held)",
        fmt_bytes(counter.bytes / held),
        f"< {fmt_bytes(MEMORY_TARGET)}",
        counter.bytes / held < MEMORY_TARGET,
    )
    section.add(
        f"Python heap per view ({held} held, tracemalloc)",
        fmt_bytes(heap / held),
        f"< {fmt_bytes(MEMORY_TARGET)}",
        heap / held < MEMORY_TARGET,
    )
    section.add(
        f"parameter/buffer storages outside the base ({held} views)",
        str(len(foreign)),
        "0",
        not foreign,
    )

    # build times: view, then materialized copy
    step(f"timing {settings.builds} view builds and {settings.copies} materialized copies")
    gc.collect()
    builds = timed(lambda: build_view(base, plan), settings.builds)
    build_median, build_p90 = median(builds), percentile(builds, 90)
    section.add(
        f"view build, median of {len(builds)}",
        fmt_seconds(build_median),
        f"< {fmt_seconds(BUILD_TARGET)}",
        build_median < BUILD_TARGET,
    )
    section.add(f"view build, p90 of {len(builds)}", fmt_seconds(build_p90))
    gc.collect()
    copies = timed(lambda: materialize(base, plan.layers()), settings.copies)
    gc.collect()
    copy_median = median(copies)
    section.add(f"materialized copy build, median of {len(copies)}", fmt_seconds(copy_median))
    section.add("materialized copy / view build time", f"{copy_median / build_median:,.0f}x")

    with StorageCounter() as copy_counter:
        materialized = materialize(base, plan.layers())
    section.add("tensor storage allocated per materialized copy", fmt_bytes(copy_counter.bytes))

    # correctness spot checks (short input, fp32, bitwise)
    step("correctness spot checks")
    tokenizer = loaded.base.tokenizer
    text = bundled_text()
    probe = torch.tensor([tokenize_corpus(tokenizer, text[:2000])[:64]])
    view = build_view(base, plan)
    with torch.inference_mode():
        base_logits = base(input_ids=probe, use_cache=False).logits
        same = torch.equal(
            view(input_ids=probe, use_cache=False).logits,
            materialized(input_ids=probe, use_cache=False).logits,
        )
        del materialized
        gc.collect()
        for _ in range(3):  # views built, run and dropped again
            build_view(base, plan)(input_ids=probe, use_cache=False)
        unchanged = torch.equal(base(input_ids=probe, use_cache=False).logits, base_logits)
    section.add("view logits == materialized copy logits (bitwise)", str(same), "True", same)
    section.add(
        "base logits unchanged after views ran (bitwise)", str(unchanged), "True", unchanged
    )

    # throughput, interleaved: base (plan 0-N) and view measured side by side in each run
    step(f"throughput: {settings.runs} interleaved runs of {settings.windows} window(s) each")
    ids = tokenize_corpus(tokenizer, text[: settings.windows * CTX * 8])
    windows = make_windows(ids, settings.windows * CTX, CTX)
    models = {"base": base, "view": view}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    ppl: dict[str, float] = {}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(input_ids=windows[:1], use_cache=False)
        for run_number in range(settings.runs):
            order = list(models) if run_number % 2 == 0 else list(reversed(models))
            for name in order:
                start = time.perf_counter()
                logits = [models[name](input_ids=w[None], use_cache=False).logits for w in windows]
                seconds[name].append(time.perf_counter() - start)
                if run_number == 0:  # score the same passes, outside the timer
                    pairs = zip(logits, windows, strict=True)
                    nll = sum(float(window_nll(x, w[None]).sum()) for x, w in pairs)
                    ppl[name] = result_from_nll(nll, windows).perplexity
                del logits
    tokens = windows.numel()
    rate = {name: tokens / median(times) for name, times in seconds.items()}
    ratio = rate["view"] / rate["base"]
    expected = num_layers / len(plan)
    section.add(
        f"base ({num_layers} layers) tokens/s, median of {settings.runs}",
        f"{rate['base']:,.0f}",
    )
    section.add(
        f"view ({len(plan)} layers) tokens/s, median of {settings.runs}",
        f"{rate['view']:,.0f}",
    )
    section.add(
        "view / base tokens/s",
        f"{ratio:.3f}",
        f"≈ {num_layers}/{len(plan)} = {expected:.3f}",
        abs(ratio / expected - 1) <= 0.15,
    )
    # t = layers * per_layer + fixed, from the two medians
    t_base, t_view = (median(seconds[n]) / windows.shape[0] for n in ("base", "view"))
    per_layer = (t_view - t_base) / (len(plan) - num_layers)
    fixed = t_base - num_layers * per_layer
    section.add("implied time per layer per window", fmt_seconds(per_layer))
    section.add("implied fixed time per window (embed, norm, LM head)", fmt_seconds(fixed))
    section.add(
        f"perplexity on these {windows.shape[0]} window(s), base / view",
        f"{ppl['base']:.2f} / {ppl['view']:.2f}",
    )

    section.notes += [
        "Materialized copy = the view with every position's layer deep-copied (repeated layers "
        "copied again), i.e. the decoder weights a passthrough merge would hold.",
        "Memory: RSS is read before and after building the held views (garbage collected, "
        "heap trimmed); it understates what views cost, since their small Python objects "
        "first fill free space in memory the process already holds. The Python heap row "
        "(tracemalloc, a separate build of as many views) counts those objects exactly; tensor "
        "storage counts every aten op output with fresh storage while the views are built.",
        "Throughput: batch 1, use_cache=False, inference mode; each run times both models "
        "back to back (order alternating), figures are medians over runs. Time per window is "
        "about fixed + layers x per-layer, the fixed part being embeddings, final norm and the "
        "49152-token LM head (28M weights, about 8 layers' worth of matmul), so the ratio is "
        f"expected a little above {num_layers}/{len(plan)} (about 38/54 = 0.70); the two "
        "'implied' rows solve that model from the two medians and are only as good as they are "
        "(see the load average: other processes on the machine skew every timing).",
        "GGUF load time is the first load_base_model call of the process (disk cache state "
        "not controlled).",
    ]
    return section
