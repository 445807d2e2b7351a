"""Loading base models: Hugging Face directories, hub ids and GGUF files, on a chosen device.

A worker process keeps what it loaded in :data:`MODELS` (one load per model and settings).

A GGUF file is parsed once per load: transformers reads its metadata with gguf's ``GGUFReader``
for the tokenizer's config, again for the model's config and a third time for the tensors (each
parse walks every tokenizer entry: ~1/3 of the load on SmolLM2); :func:`gguf_parsed_once` hands
all three the first parse (figures in docs/benchmarks.md, section ``export``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from frankensweep.core.errors import first_line
from frankensweep.models import (
    SUPPORTED_MODEL_TYPES,
    ModelLoadError,
    config_mismatches,
    is_gguf,
    model_fingerprint,
    resolve_spec,
)
from frankensweep.worker.views import decoder_stack

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass
class BaseModel:
    """A loaded base model: the module, its tokenizer and what a sweep needs to know of it."""

    spec: str  # what the user named: directory, hub id or .gguf path
    model: PreTrainedModel  # the *ForCausalLM, in eval mode
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers N (plans index layers 0..N-1)."""
        return len(decoder_stack(self.model)[1])

    @property
    def model_type(self) -> str:
        return self.model.config.model_type


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else Apple MPS, else CPU; anything else is taken as is."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device {name!r} asked for but CUDA is not available: use --device cpu"
        )
    return device


def select_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 elsewhere (CPU half precision is slow)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown dtype {name!r}: use auto, {', '.join(sorted(set(_DTYPES)))}"
        ) from None


def check_supported(model: nn.Module) -> None:
    """Raise :class:`ModelLoadError` naming the architecture if views are not verified for it."""
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"architecture {model_type!r} ({type(model).__name__}) is not supported; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    decoder_stack(model)


def make_serializable(model: PreTrainedModel) -> PreTrainedModel:
    """Let a GGUF-loaded model ``save_pretrained``: its weights are already plain tensors."""
    if getattr(model, "hf_quantizer", None) is not None:
        vars(model)["hf_quantizer"] = None  # a plain attribute (from_pretrained sets it)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "_is_quantized_training_enabled"):
        if getattr(model, attr, False):
            setattr(model, attr, False)
    return model


_PARSE_LOCK = threading.Lock()


@contextmanager
def gguf_parsed_once() -> Iterator[dict[str, Any]]:
    """While inside, every ``gguf.GGUFReader(path)`` returns the first reader made for that file.

    transformers imports ``GGUFReader`` from ``gguf`` when it reads a file, so the readers it
    makes for the tokenizer, the config and the tensors are one; the readers only read. Yields
    the readers made, by real path. Loads that share it run one at a time.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[str, Any] = {}

    def shared(path: Any, mode: Any = "r") -> Any:
        if mode != "r":
            return original(path, mode)
        key = os.path.realpath(path)
        if key not in readers:
            readers[key] = original(path)
        return readers[key]

    with _PARSE_LOCK:
        setattr(gguf, "GGUFReader", shared)  # noqa: B010  (a module attribute, set for the load)
        try:
            yield readers
        finally:
            setattr(gguf, "GGUFReader", original)  # noqa: B010


def load_base_model(
    spec: str,
    device: str = "auto",
    dtype: str = "auto",
    *,
    trust_remote_code: bool = False,
) -> BaseModel:
    """Load a base model for views. GGUF files are dequantized (to float32 unless ``dtype``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, kwargs = resolve_spec(spec)
    dev = select_device(device)
    torch_dtype = select_dtype(dtype, dev)
    try:
        with gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(
                location, trust_remote_code=trust_remote_code, **kwargs
            )
            model = AutoModelForCausalLM.from_pretrained(
                location, dtype=torch_dtype, trust_remote_code=trust_remote_code, **kwargs
            )
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load model {spec}: {first_line(exc, type(exc).__name__)}"
        ) from exc
    if is_gguf(spec):
        make_serializable(model)
    check_supported(model)
    model.to(device=dev, dtype=torch_dtype)  # type: ignore[call-arg]  # a decorated method
    model.eval()
    model.requires_grad_(False)
    return BaseModel(spec=spec, model=model, tokenizer=tokenizer, device=dev, dtype=torch_dtype)


class ModelCache:
    """Base and source models loaded once per process, by (spec, device, dtype).

    ``key`` (a sweep's model key, which changes with the model's files) tells versions apart: a
    model whose files changed is loaded again, and the old version dropped first, so a process
    never holds two copies of one model."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str], tuple[str | None, BaseModel]] = {}
        self._lock = threading.Lock()

    def put(self, base: BaseModel, device: str, dtype: str, key: str | None = None) -> None:
        """Keep a model loaded elsewhere (tests, benchmarks) as the one for these settings."""
        with self._lock:
            self._models[(base.spec, device, dtype)] = (key, base)

    def get(
        self, spec: str, device: str = "auto", dtype: str = "auto", key: str | None = None
    ) -> BaseModel:
        slot = (spec, device, dtype)
        with self._lock:
            held = self._models.get(slot)
            if held is not None and (key is None or held[0] in (None, key)):
                return held[1]
            if held is not None:
                log.info("model %s changed on disk: loading it again", spec)
                del self._models[slot], held
            log.info("loading base model %s", spec)
            self._models[slot] = (key, load_base_model(spec, device=device, dtype=dtype))
            return self._models[slot][1]


def load_sources(
    models: ModelCache,
    base: BaseModel,
    sources: Mapping[str, str],
    device: str = "auto",
    dtype: str = "auto",
) -> dict[str, nn.Module]:
    """The named source models (name -> spec), each loaded once in ``models`` and checked to
    match the base model's architecture, depth and vocabulary (``config_mismatches``)."""
    loaded: dict[str, nn.Module] = {}
    for name, spec in sources.items():
        try:
            other = models.get(spec, device, dtype, key=model_fingerprint(spec))
        except ModelLoadError as exc:
            raise ModelLoadError(f"source model {name}: {exc}") from exc
        mismatches = config_mismatches(base.model.config, other.model.config)
        if mismatches:
            raise ModelLoadError(
                f"source model {name} ({spec}) does not match the base model {base.spec}: "
                + "; ".join(mismatches)
            )
        loaded[name] = other.model
    return loaded


#: the process's models: a worker process (or the embedded server) loads each base model once
MODELS = ModelCache()
