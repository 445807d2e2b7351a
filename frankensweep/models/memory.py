"""The memory planner: a worker's peak memory for a sweep, from the model's config alone.

Nothing is loaded: the weights are counted on a ``meta``-device instance of the model built from
its config, everything else is arithmetic on the config's sizes. A worker's peak is

    peak = weights + max(loading, the runtime of its heaviest workload)

- **weights** as loaded, in the load dtype: every parameter and buffer, except the weights of
  ``nn.Linear`` layers under bitsandbytes: ``nf4`` packs two weights a byte plus one float32
  absmax per block of 64 (and a 16-entry code table per layer), ``int8`` one byte a weight plus
  one float32 scale per output row. Embeddings, the LM head and norms stay in the dtype (the
  modules transformers' ``get_keys_to_not_convert`` names, and every non-``Linear``).
- **loading** (a CPU worker only): a GGUF file is parsed into CPU memory and dequantized in the
  load dtype before the weights reach their modules (``worker/loading.py``): the dequantized
  state dict (and, with nf4 / int8, the plain model the quantized copy is made from) is held on
  top of the weights for a while. On CUDA that copy is in CPU memory, not on the device.
- a **generation** (EQ-Bench through lm-eval: ``batch`` prompts left-padded to the longest, the
  batch of the longest prompts first, greedy up to ``new_tokens``): the **KV cache** of the plan,
  one slot per position (``worker/views.py``), each as transformers' ``DynamicCache`` allocates
  it, grown by concatenation: keys and values ``[batch, kv_heads, tokens, head_dim]`` per
  position, tokens = prompt + new tokens - 1 (the last token is never fed back); a position of a
  sliding-attention source layer keeps only its window after the first decoding step (and the
  whole prompt right after the prefill, so the peak is the larger of the two moments); the
  **logits** of the last position only (``logits_to_keep=1``) plus their float32 copy; the
  **activations** of the prefill (below).
- **windows** (perplexity, no cache): the **logits** of a batch of windows in the dtype, the
  float32 copy ``window_nll`` makes of all but the last position and the log-softmax cross
  entropy computes from it; the **prefix states** prefix-shared evaluation keeps (at most the
  budget, at most one hidden state per position but the last); the **activations**.
- **activations** of one decoder layer over ``batch x tokens`` (its inputs, normed input,
  queries, keys and values before and after rotary embedding, attention output, the MLP's gate,
  up and product, and the attention weights ``batch x heads x tokens x tokens`` as eager and
  CPU kernels materialize them): only one layer's are alive at a time without gradients.

All activations are in the compute dtype (the load dtype; bitsandbytes computes in it too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DTYPE_BYTES",
    "Generation",
    "MemoryEstimate",
    "Windows",
    "activation_bytes",
    "describe",
    "estimate",
    "fmt_size",
    "kv_cache_bytes",
    "largest_batch",
    "logits_bytes",
    "longest_prompt",
    "model_estimate",
    "on_cuda",
    "refusal",
    "resolved_dtype",
    "weight_bytes",
]

#: bytes per element of each load dtype (its canonical name, ``models/load.py``)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: bitsandbytes' nf4 block: one float32 absmax per 64 weights; its code table has 16 entries
NF4_BLOCK = 64
NF4_CODE = 16


@dataclass(frozen=True)
class Generation:
    """One batched greedy ``generate``: ``batch`` prompts of at most ``prompt_tokens`` tokens
    (the longest first), up to ``new_tokens`` new tokens each (EQ-Bench's ``max_gen_toks``)."""

    batch: int
    prompt_tokens: int
    new_tokens: int
    name: str = "eq_bench"


@dataclass(frozen=True)
class Windows:
    """Perplexity: ``batch`` windows of ``ctx`` tokens per forward without cache, prefix states
    kept up to ``budget`` bytes (``FRANKENSWEEP_PREFIX_MEMORY_BUDGET``)."""

    batch: int
    ctx: int
    budget: int
    name: str = "perplexity"


Workload = Generation | Windows


@dataclass(frozen=True)
class MemoryEstimate:
    """A worker's estimated peak and its parts (bytes); ``peak`` names what reaches it."""

    total: int
    parts: dict[str, int]  # weights, loading, kv_cache, prefix_states, logits, activations
    peak: str  # "loading" or the name of the heaviest workload
    workloads: dict[str, int] = field(default_factory=dict)  # workload name -> its runtime bytes

    def largest(self, count: int = 3) -> list[tuple[str, int]]:
        """The ``count`` largest non-zero parts, largest first."""
        parts = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return [(name, size) for name, size in parts if size > 0][:count]

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        """``{estimate_bytes, limit_bytes, peak, parts, workloads}`` as the API answers it."""
        data: dict[str, Any] = {"estimate_bytes": self.total}
        if limit is not None:
            data["limit_bytes"] = limit
        parts, workloads = dict(self.parts), dict(self.workloads)
        return {**data, "peak": self.peak, "parts": parts, "workloads": workloads}


def _dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"no byte size for dtype {dtype!r}: resolve auto first") from None


# -- the model's sizes ---------------------------------------------------------------------------


def _heads(config: Any) -> tuple[int, int, int]:
    """``(attention heads, key/value heads, head dim)`` of a config."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return heads, kv_heads, head_dim


def _layer_windows(config: Any) -> list[int | None]:
    """Per source layer: the tokens its cache keeps (sliding or chunked attention), or None
    (full attention), as transformers' ``DynamicCache`` decides from the config."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    types, kwargs = get_layer_types_and_kwargs(config)
    return [
        None if kind == "full_attention" else extra.get("sliding_window")
        for kind, extra in zip(types, kwargs, strict=True)
    ]


@dataclass(frozen=True)
class _Counts:
    """What the weights of a config's model are made of, counted on the meta device."""

    plain: int  # elements of parameters kept in the dtype
    buffers: int  # bytes of buffers (as created: rotary frequencies stay float32)
    linear: int  # elements of the Linear weights bitsandbytes quantizes
    rows: int  # their output rows, summed (int8 keeps a scale per row)
    modules: int  # how many such Linear layers


_counts: dict[str, _Counts] = {}


def _weight_counts(config: Any) -> _Counts:
    """The :class:`_Counts` of the model ``config`` builds (kept per config)."""
    key = config.to_json_string(use_diff=False)
    if key in _counts:
        return _counts[key]
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.quantizers.base import get_keys_to_not_convert

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    skipped = get_keys_to_not_convert(model)
    quantized: set[int] = set()
    linear = rows = modules = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or any(key in name for key in skipped):
            continue
        quantized.add(id(module.weight))
        linear += module.weight.numel()
        rows += module.weight.shape[0]
        modules += 1
    plain = sum(p.numel() for p in model.parameters() if id(p) not in quantized)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    _counts[key] = _Counts(plain, buffers, linear, rows, modules)
    return _counts[key]


def weight_bytes(config: Any, quantization: str, dtype: str) -> int:
    """Bytes of the model's weights as a worker loads them (see the module docstring)."""
    counts = _weight_counts(config)
    size = _dtype_bytes(dtype)
    if quantization == "nf4":
        blocks = -(-counts.linear // NF4_BLOCK)
        quantized = (counts.linear + 1) // 2 + 4 * blocks + 4 * NF4_CODE * counts.modules
    elif quantization == "int8":
        quantized = counts.linear + 4 * counts.rows
    else:
        quantized = counts.linear * size
    return counts.plain * size + counts.buffers + quantized


def kv_cache_bytes(
    config: Any,
    positions: Sequence[int],
    batch: int,
    prompt_tokens: int,
    new_tokens: int,
    dtype: str,
) -> int:
    """Peak bytes of the KV cache of a plan (its positions' source layers) generating
    ``new_tokens`` after a ``prompt_tokens`` prompt, ``batch`` rows: the larger of right after
    the prefill and the end (see the module docstring)."""
    _, kv_heads, head_dim = _heads(config)
    windows = _layer_windows(config)
    per_token = 2 * batch * kv_heads * head_dim * _dtype_bytes(dtype)
    end_tokens = prompt_tokens + max(new_tokens - 1, 0)
    prefill = end = 0
    for layer in positions:
        window = windows[layer]
        prefill += prompt_tokens
        if window is None or new_tokens <= 1:
            end += end_tokens
        else:  # after a decoding step: the last window - 1 tokens, then the new one
            end += min(end_tokens, window)
    return per_token * max(prefill, end)


def activation_bytes(config: Any, batch: int, tokens: int, dtype: str) -> int:
    """Bytes of one decoder layer's activations over ``batch x tokens`` (module docstring)."""
    heads, kv_heads, head_dim = _heads(config)
    hidden, inner = int(config.hidden_size), int(config.intermediate_size)
    per_token = 4 * hidden + 2 * heads * head_dim + 4 * kv_heads * head_dim + 3 * inner
    scores = heads * tokens * tokens
    return batch * (tokens * per_token + scores) * _dtype_bytes(dtype)


def logits_bytes(config: Any, workload: Workload, dtype: str) -> int:
    """Bytes of a workload's logits: the last position's (and their float32 copy) for a
    generation, a window batch's in the dtype plus two float32 copies for perplexity."""
    vocab = int(config.vocab_size)
    if isinstance(workload, Generation):
        return workload.batch * vocab * (_dtype_bytes(dtype) + 4)
    full = workload.batch * workload.ctx * vocab
    return full * _dtype_bytes(dtype) + 2 * 4 * workload.batch * (workload.ctx - 1) * vocab


def _prefix_bytes(config: Any, workload: Windows, depth: int, dtype: str) -> int:
    state = workload.batch * workload.ctx * int(config.hidden_size) * _dtype_bytes(dtype)
    return min(workload.budget, max(depth - 1, 0) * state)


def loading_bytes(config: Any, quantization: str, dtype: str, gguf: bool, cuda: bool) -> int:
    """Bytes held on top of the weights while a GGUF file loads on a CPU worker: the
    dequantized state dict (and for nf4 / int8 the plain model)."""
    if not gguf or cuda:
        return 0
    plain = weight_bytes(config, "none", dtype)
    return plain if quantization == "none" else 2 * plain


def _runtime(
    config: Any, workload: Workload, positions: Sequence[int], dtype: str
) -> dict[str, int]:
    """The parts a workload adds to the weights while it runs."""
    if isinstance(workload, Generation):
        prompt = workload.prompt_tokens
        longest = getattr(config, "max_position_embeddings", None)
        if isinstance(longest, int):  # lm-eval keeps the last max_length - max_gen_toks tokens
            prompt = min(prompt, max(longest - workload.new_tokens, 1))
        batch, new = workload.batch, workload.new_tokens
        return {
            "kv_cache": kv_cache_bytes(config, positions, batch, prompt, new, dtype),
            "logits": logits_bytes(config, workload, dtype),
            "activations": activation_bytes(config, batch, prompt, dtype),
        }
    return {
        "prefix_states": _prefix_bytes(config, workload, len(positions), dtype),
        "logits": logits_bytes(config, workload, dtype),
        "activations": activation_bytes(config, workload.batch, workload.ctx, dtype),
    }


def estimate(
    config: Any,
    quantization: str,
    dtype: str,
    positions: Sequence[int],
    workloads: Sequence[Workload],
    *,
    models: int = 1,
    gguf: bool = False,
    cuda: bool = False,
) -> MemoryEstimate:
    """A worker's peak for the deepest plan (``positions``: its source layers) running each of
    ``workloads`` in turn, its ``models`` (the base model and its source models, one config)
    loaded with ``quantization`` in ``dtype`` (resolved, not ``auto``) from GGUF files or not,
    on CUDA or on CPU (models load one after the other: one loads at a time)."""
    weights = models * weight_bytes(config, quantization, dtype)
    loading = loading_bytes(config, quantization, dtype, gguf, cuda)
    runs: dict[str, dict[str, int]] = {}
    for workload in workloads:  # per kind, its heaviest
        parts = _runtime(config, workload, positions, dtype)
        if sum(parts.values()) >= sum(runs.get(workload.name, {}).values()):
            runs[workload.name] = parts
    totals = {name: sum(parts.values()) for name, parts in runs.items()}
    heaviest = max(totals, key=lambda name: totals[name], default=None)
    runtime = totals[heaviest] if heaviest is not None else 0
    parts = {
        "weights": weights,
        "loading": loading,
        "kv_cache": 0,
        "prefix_states": 0,
        "logits": 0,
        "activations": 0,
    }
    if heaviest is not None:
        parts.update(runs[heaviest])
    peak = "loading" if loading >= runtime else (heaviest or "loading")
    return MemoryEstimate(weights + max(loading, runtime), parts, peak, totals)


def largest_batch(
    config: Any,
    quantization: str,
    dtype: str,
    positions: Sequence[int],
    prompt_tokens: int,
    new_tokens: int,
    limit: int,
    cap: int = 1024,
    models: int = 1,
) -> int:
    """The largest generation batch (at most ``cap``) whose weights and runtime stay within
    ``limit`` bytes (a loaded model: its loading is over); 0 when not even one prompt fits."""

    def fits(batch: int) -> bool:
        work = [Generation(batch, prompt_tokens, new_tokens)]
        found = estimate(config, quantization, dtype, positions, work, models=models)
        return found.total <= limit

    if not fits(1):
        return 0
    low, high = 1, cap
    while low < high:  # the estimate grows with the batch: bisect on it
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def model_estimate(
    spec: str,
    load: Any,
    positions: Sequence[int],
    workloads: Sequence[Workload],
    device: str = "auto",
    models: int = 1,
) -> tuple[MemoryEstimate, str, bool]:
    """:func:`estimate` for the named model loaded with ``load`` (``LoadOptions``) by a worker
    whose ``FRANKENSWEEP_DEVICE`` is ``device``; with the dtype and whether it is CUDA."""
    from frankensweep.models.config import read_config
    from frankensweep.models.spec import is_gguf

    cuda = on_cuda(device, load.device_map)
    dtype = resolved_dtype(load.dtype, cuda)
    found = estimate(
        read_config(spec),
        load.quantization,
        dtype,
        positions,
        workloads,
        models=models,
        gguf=is_gguf(spec),
        cuda=cuda,
    )
    return found, dtype, cuda


def longest_prompt(
    tokenizer: Any, prompts: Sequence[str], chat_template: bool | None = None
) -> int:
    """Tokens of the longest of ``prompts`` as lm-eval sends them: in the tokenizer's chat
    template as a user turn with the generation prompt (``chat_template=None``: when it has
    one), encoded without added special tokens."""
    if chat_template is None:
        chat_template = bool(getattr(tokenizer, "chat_template", None))
    longest = 0
    for prompt in prompts:
        text = prompt
        if chat_template:
            turn = [{"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        longest = max(longest, len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return longest


def resolved_dtype(dtype: str, cuda: bool) -> str:
    """A load dtype with ``auto`` resolved as workers do: bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return "bfloat16" if cuda else "float32"
    return dtype


def on_cuda(device: str, device_map: str | None) -> bool:
    """Whether a worker with ``FRANKENSWEEP_DEVICE`` ``device`` (and a sweep's ``device_map``)
    computes on CUDA, as far as this machine tells."""
    import torch

    if device_map == "auto" or device == "auto":
        return torch.cuda.is_available()
    return device.startswith("cuda")


#: part -> what shrinks it, for the refusal message
_REMEDIES = {
    "weights": "quantize the model (load.quantization nf4 or int8) or use a smaller one",
    "loading": "load a Hugging Face directory instead of a GGUF file, which is dequantized in "
    "CPU memory first (or load it unquantized)",
    "kv_cache": "lower the EQ-Bench batch_size or max_gen_toks, or search a shallower space",
    "prefix_states": "lower FRANKENSWEEP_PREFIX_MEMORY_BUDGET or the perplexity ctx",
    "logits": "lower the perplexity ctx or the EQ-Bench batch_size",
    "activations": "lower the perplexity ctx or the EQ-Bench batch_size",
}


def fmt_size(count: int) -> str:
    """``1.5 GiB``, ``730 MiB`` (binary units, three significant figures)."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:.3g} {unit}"


def describe(found: MemoryEstimate, limit: int | None = None) -> str:
    """One line: ``3.1 GiB (weights 2.1 GiB, kv_cache 800 MiB, ...) of 24 GiB``."""
    parts = ", ".join(f"{name} {fmt_size(size)}" for name, size in found.largest(6))
    tail = f" of {fmt_size(limit)}" if limit is not None else ""
    return f"{fmt_size(found.total)} ({parts}){tail}"


def refusal(found: MemoryEstimate, limit: int, deepest: int) -> str:
    """Why a sweep cannot fit a worker of ``limit`` bytes and what to change."""
    largest = found.largest(3)
    # one remedy can shrink two parts (logits and activations): say it once
    remedies = list(dict.fromkeys(_REMEDIES[name] for name, _ in largest if name in _REMEDIES))
    if deepest > 0 and "search a shallower space" not in " ".join(remedies):
        remedies.append("search a shallower space")
    parts = ", ".join(f"{name} {fmt_size(size)}" for name, size in largest)
    return (
        f"a worker would need about {fmt_size(found.total)} for this sweep (its deepest plan has "
        f"{deepest} positions; peak while {found.peak}), over the worker memory of "
        f"{fmt_size(limit)} (FRANKENSWEEP_WORKER_MEMORY); largest parts: {parts}. To fit: "
        + "; ".join(remedies)
    )
