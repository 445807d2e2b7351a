"""Loading base models: Hugging Face directories, hub ids and GGUF files, as their load options say.

Weights go straight to their devices while they load (``device_map`` passed to
``from_pretrained``), never through a full copy in CPU memory: one device by default, or with
``device_map: auto`` every visible GPU, then CPU memory, then disk (accelerate dispatches the model
with device hooks; views re-bind them, ``worker/hooks.py``). ``nf4`` / ``int8`` quantize through
bitsandbytes (``BitsAndBytesConfig``) as each weight arrives.

GGUF files are dequantized straight to the load options' dtype (bfloat16 on CUDA by default).
transformers cannot combine a GGUF file with a quantization config, so a quantized GGUF load
dequantizes the file into CPU memory first (in that dtype), then quantizes it tensor by tensor
onto the devices: the devices never hold more than the quantized model and one tensor.

A worker process keeps what it loaded in :data:`MODELS` (one load per model and load options).

A GGUF file is parsed once per load: transformers reads its metadata with gguf's ``GGUFReader``
for the tokenizer's config, again for the model's config and a third time for the tensors (each
parse walks every tokenizer entry: ~1/3 of the load on SmolLM2); :func:`gguf_parsed_once` hands
all three the first parse (figures in docs/benchmarks.md, section ``export``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from frankensweep.core.errors import first_line
from frankensweep.models import (
    SUPPORTED_MODEL_TYPES,
    LoadOptions,
    ModelLoadError,
    check_checkpoint,
    check_environment,
    config_mismatches,
    is_gguf,
    model_fingerprint,
    resolve_spec,
)
from frankensweep.worker.views import decoder_stack

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# what from_pretrained raises for a model it cannot load as asked (missing files or packages,
# a quantization the machine cannot run, disk offload of a GGUF file): the user must change it
_LOAD_ERRORS = (OSError, ImportError, ValueError, RuntimeError)


@dataclass
class BaseModel:
    """A loaded base model: the module, its tokenizer and what a sweep needs to know of it."""

    spec: str  # what the user named: directory, hub id or .gguf path
    model: PreTrainedModel  # the *ForCausalLM, in eval mode
    tokenizer: Any
    device: torch.device  # where inputs go (the input embeddings' device)
    dtype: torch.dtype
    extra: dict[str, Any] = field(default_factory=dict)
    load: LoadOptions = field(default_factory=LoadOptions)  # as loaded (dtype as asked)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers N (plans index layers 0..N-1)."""
        return len(decoder_stack(self.model)[1])

    @property
    def model_type(self) -> str:
        return self.model.config.model_type


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else Apple MPS, else CPU; anything else is taken as is,
    if this machine has it."""
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
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(
            f"device {name!r} asked for but this machine has CUDA devices "
            f"0..{torch.cuda.device_count() - 1}: use one of them"
        )
    return device


def select_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 elsewhere (CPU half precision is slow)."""
    name = LoadOptions(dtype=name).dtype  # aliases (fp32, bf16, ...) and unknown names
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


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


def _primary_device(options: LoadOptions, device: str) -> torch.device:
    """The device the dtype is chosen for: the worker's one, or the first GPU for ``auto``."""
    if options.device_map == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return select_device(device)


def _placement(options: LoadOptions, device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` arguments that place every weight on its device while it loads."""
    if options.device_map != "auto":
        return {"device_map": {"": device}}
    caps = {int(k) if k.isdigit() else k: v for k, v in (options.max_memory or {}).items()}
    return {"device_map": "auto", **({"max_memory": caps} if caps else {})}


def quantization_config(options: LoadOptions, dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` of ``options.quantization`` (None for ``none``)."""
    if options.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if options.quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _gguf_dequantized() -> dict[str, Any]:
    """GGUF weights dequantized on load (not kept in GGUF blocks when ``kernels`` is installed)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers before GgufConfig always dequantized
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _from_pretrained(location: str, kwargs: dict[str, Any], **load: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained``; an offload folder comes with ``device_map: auto``
    (removed once the model is garbage collected)."""
    from transformers import AutoModelForCausalLM

    folder: dict[str, Any] = {}
    if load.get("device_map") == "auto":
        folder = {"offload_folder": tempfile.mkdtemp(prefix="frankensweep-offload-")}
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **load, **folder, **kwargs)
    except BaseException:
        if folder:
            shutil.rmtree(folder["offload_folder"], ignore_errors=True)
        raise
    if folder:
        weakref.finalize(model, shutil.rmtree, folder["offload_folder"], True)
    return model


def quantized_copy(model: PreTrainedModel, quantization: Any, **placement: Any) -> PreTrainedModel:
    """A copy of ``model`` (plain weights) quantized by transformers with ``quantization`` (a
    ``BitsAndBytesConfig``), tensor by tensor as its weights reach their devices."""
    cls, state, config = type(model), model.state_dict(), model.config
    copy = cls.from_pretrained(
        None, config=config, state_dict=state, quantization_config=quantization, **placement
    )
    copy.generation_config = model.generation_config
    return copy


def _quantized_gguf(
    location: str, kwargs: dict[str, Any], common: dict[str, Any], quantization: Any
) -> PreTrainedModel:
    """A GGUF file dequantized into CPU memory in the load dtype, then quantized tensor by
    tensor onto its devices (transformers refuses a quantization config with ``gguf_file``)."""
    plain = _from_pretrained(
        location,
        {**kwargs, **_gguf_dequantized()},
        dtype=common["dtype"],
        trust_remote_code=common["trust_remote_code"],
        device_map={"": "cpu"},
    )
    return quantized_copy(make_serializable(plain), quantization, **common)


def load_base_model(
    spec: str,
    device: str = "auto",
    dtype: str = "auto",
    *,
    load: LoadOptions | None = None,
    trust_remote_code: bool = False,
) -> BaseModel:
    """Load a base model for views, as ``load`` says (default: ``dtype`` on ``device``).

    ``device`` is the worker's device (unused with ``device_map: auto``). GGUF files are
    dequantized to the dtype (float32 on CPU, bfloat16 on CUDA with ``auto``).
    """
    from transformers import AutoTokenizer

    options = load or LoadOptions(dtype=dtype)
    location, kwargs = resolve_spec(spec)
    check_environment(options)
    check_checkpoint(spec, options)
    torch_dtype = select_dtype(options.dtype, _primary_device(options, device))
    common = {
        "dtype": torch_dtype,
        "trust_remote_code": trust_remote_code,
        **_placement(options, _primary_device(options, device)),
    }
    quantization = quantization_config(options, torch_dtype)
    try:
        with gguf_parsed_once():  # a GGUF file's metadata is parsed once for all of these
            tokenizer = AutoTokenizer.from_pretrained(
                location, trust_remote_code=trust_remote_code, **kwargs
            )
            if is_gguf(spec) and quantization is not None:  # GGUF + bitsandbytes: two steps
                model = _quantized_gguf(location, kwargs, common, quantization)
            elif is_gguf(spec):
                model = _from_pretrained(location, {**kwargs, **_gguf_dequantized()}, **common)
                make_serializable(model)
            else:
                model = _from_pretrained(
                    location, kwargs, quantization_config=quantization, **common
                )
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(
            f"cannot load model {spec} ({options.describe()}): "
            f"{first_line(exc, type(exc).__name__)}"
        ) from exc
    check_supported(model)
    model.eval()
    model.requires_grad_(False)
    inputs = next(model.get_input_embeddings().parameters()).device
    return BaseModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        device=inputs,
        dtype=torch_dtype,
        load=options,
    )


def cache_slot(spec: str, device: str, options: LoadOptions) -> tuple[str, ...]:
    """What tells loads apart in a cache: the model, where it goes, its resolved dtype, its
    quantization and placement (``auto`` dtype and device resolved, so equal loads share)."""
    primary = _primary_device(options, device)
    placed = "auto" if options.device_map == "auto" else str(primary)
    caps = ",".join(f"{k}={v}" for k, v in (options.max_memory or {}).items())
    dtype = str(select_dtype(options.dtype, primary))
    return (spec, placed, dtype, options.quantization, caps)


class ModelCache:
    """Base and source models loaded once per process, by (spec, device, load options).

    ``key`` (a sweep's model key, which changes with the model's files) tells versions apart: a
    model whose files changed is loaded again, and the old version dropped first, so a process
    never holds two copies of one model."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, ...], tuple[str | None, BaseModel]] = {}
        self._lock = threading.Lock()

    def put(
        self,
        base: BaseModel,
        device: str,
        dtype: str = "auto",
        key: str | None = None,
        load: LoadOptions | None = None,
    ) -> None:
        """Keep a model loaded elsewhere (tests, benchmarks) as the one for these settings."""
        slot = cache_slot(base.spec, device, load or LoadOptions(dtype=dtype))
        with self._lock:
            self._models[slot] = (key, base)

    def get(
        self,
        spec: str,
        device: str = "auto",
        dtype: str = "auto",
        key: str | None = None,
        load: LoadOptions | None = None,
    ) -> BaseModel:
        """The model loaded with ``load`` (default: ``dtype``) on ``device``, loading it once."""
        options = load or LoadOptions(dtype=dtype)
        slot = cache_slot(spec, device, options)
        with self._lock:
            held = self._models.get(slot)
            if held is not None and (key is None or held[0] in (None, key)):
                return held[1]
            if held is not None:
                log.info("model %s changed on disk: loading it again", spec)
                del self._models[slot], held
            log.info("loading base model %s (%s)", spec, options.describe())
            self._models[slot] = (key, load_base_model(spec, device=device, load=options))
            return self._models[slot][1]


def load_sources(
    models: ModelCache,
    base: BaseModel,
    sources: Mapping[str, str],
    device: str = "auto",
    dtype: str = "auto",
) -> dict[str, nn.Module]:
    """The named source models (name -> spec), each loaded once in ``models`` with the base
    model's load options and checked to match its architecture, depth and vocabulary
    (``config_mismatches``)."""
    loaded: dict[str, nn.Module] = {}
    for name, spec in sources.items():
        try:
            other = models.get(spec, device, dtype, key=model_fingerprint(spec), load=base.load)
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
