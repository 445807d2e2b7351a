"""How a base model is loaded: quantization, dtype and placement (the *load options*).

A sweep stores its load options and every worker loads its model as they say; the command line
takes them per call; the service's settings give the defaults (``FRANKENSWEEP_QUANTIZATION``,
``_DTYPE``, ``_DEVICE_MAP``, ``_MAX_MEMORY``).

- ``quantization``: ``none``, or ``nf4`` / ``int8`` through bitsandbytes as transformers
  integrates it (``BitsAndBytesConfig``; it runs on CPU too). A checkpoint that is already
  quantized (GPTQ, AWQ, FP8, compressed-tensors) loads as its config says, with ``none``.
- ``dtype``: what the weights (and bitsandbytes' compute) are in; ``auto`` is bfloat16 on CUDA,
  float32 elsewhere. A GGUF file is dequantized straight to it.
- ``device_map``: unset, the whole model on the worker's device; ``auto``, spread over every
  visible GPU, then CPU memory, then disk, weights placed while they load (accelerate dispatches
  it with device hooks, which views re-bind: ``worker/hooks.py``).
- ``max_memory``: with ``device_map: auto``, a cap per device: ``{"0": "70GiB", "cpu": "100GiB"}``.

Scores are keyed by what changes the numbers: quantization and dtype (:meth:`LoadOptions.identity`).
Placement does not: offloaded weights are computed on their execution device in the same dtype.
Nothing here imports torch or loads weights.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from frankensweep.core.errors import UserError

if TYPE_CHECKING:
    from frankensweep.core.config import Settings

__all__ = [
    "DTYPE_NAMES",
    "QUANTIZATIONS",
    "LoadOptions",
    "LoadOptionsError",
    "check_checkpoint",
    "check_environment",
    "checkpoint_quantization",
    "default_load",
    "load_options",
    "parse_max_memory",
]

QUANTIZATIONS = ("none", "nf4", "int8")
Quantization = Literal["none", "nf4", "int8"]

#: dtype names accepted -> the canonical name stored (aliases never split stored scores)
DTYPE_NAMES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}

_GPU = re.compile(r"^(?:cuda:)?(\d+)$")


class LoadOptionsError(UserError, ValueError):
    """A load option is wrong; ``field`` names it, the message says what to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _device_key(key: str) -> str:
    """``"0"``, ``"cuda:0"`` -> ``"0"``; ``cpu``, ``mps`` as they are; anything else refused."""
    key = str(key).strip().lower()
    match = _GPU.match(key)
    if match:
        return str(int(match.group(1)))
    if key in ("cpu", "mps"):
        return key
    raise ValueError(f"names an unknown device {key!r}: use a GPU index (0, cuda:1), cpu or mps")


def _size(device: str, value: int | str) -> int | str:
    """A memory size as accelerate reads it (bytes, or ``"70GiB"``, ``"500MB"``)."""
    from accelerate.utils import convert_file_size_to_int

    try:
        size = convert_file_size_to_int(value)
    except (ValueError, TypeError):
        size = -1
    if isinstance(value, bool) or size <= 0:
        raise ValueError(
            f"for {device}: {value!r} is not a size: use bytes or a number with a unit, like "
            "70GiB or 500MB"
        )
    return value.strip() if isinstance(value, str) else value


class LoadOptions(BaseModel):
    """How a worker loads a base model (see the module docstring for each field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantization: Quantization = Field("none", description="none, nf4 or int8 (bitsandbytes)")
    dtype: str = Field("auto", description="auto (bf16 on CUDA, fp32 elsewhere), float32, ...")
    device_map: Literal["auto"] | None = Field(
        None, description="unset: one device; auto: every visible GPU, then CPU, then disk"
    )
    max_memory: dict[str, int | str] | None = Field(
        None, description='with device_map auto, a cap per device: {"0": "70GiB", "cpu": "8GiB"}'
    )

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        name = DTYPE_NAMES.get(value.strip().lower())
        if name is None:
            raise ValueError(f"unknown dtype {value!r}: use one of {', '.join(DTYPE_NAMES)}")
        return name

    @field_validator("max_memory")
    @classmethod
    def _max_memory(
        cls, value: dict[str, int | str] | None, info: ValidationInfo
    ) -> dict[str, int | str] | None:
        if value is None:
            return None
        if info.data.get("device_map") != "auto":
            raise ValueError("caps the devices of device_map auto: add device_map: auto")
        if not value:
            raise ValueError("is empty: leave it out, or cap a device")
        caps: dict[str, int | str] = {}
        for key, size in value.items():
            device = _device_key(key)
            caps[device] = _size(device, size)
        return dict(sorted(caps.items()))

    def identity(self) -> dict[str, str]:
        """What a stored score depends on: quantization and dtype (placement does not)."""
        return {"quantization": self.quantization, "dtype": self.dtype}

    @property
    def keyed(self) -> bool:
        """Whether these options go into a model's key (the defaults keep the plain key, so
        scores stored before load options existed, all loaded that way, stay reusable)."""
        return self.identity() != LoadOptions().identity()

    def gpus(self) -> list[int]:
        """The GPU indices ``max_memory`` names."""
        return sorted(int(k) for k in self.max_memory or {} if k.isdigit())

    def describe(self) -> str:
        """One short line: ``nf4, bfloat16, device_map auto (0: 70GiB)``."""
        parts = [self.quantization if self.quantization != "none" else "not quantized", self.dtype]
        if self.device_map:
            caps = ", ".join(f"{k}: {v}" for k, v in (self.max_memory or {}).items())
            parts.append(f"device_map {self.device_map}" + (f" ({caps})" if caps else ""))
        return ", ".join(parts)


def _field_of(exc: ValidationError) -> tuple[str, str]:
    """The first error of a LoadOptions validation: its field and a message without noise."""
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"]) or "load"
    message = str(error["msg"]).removeprefix("Value error, ")
    return field, message


def load_options(**values: Any) -> LoadOptions:
    """LoadOptions from loose values (command line, settings); None values are left out.

    Raises :class:`LoadOptionsError` naming the field."""
    try:
        return LoadOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        field, message = _field_of(exc)
        raise LoadOptionsError(field, f"{field}: {message}") from None


def parse_max_memory(text: str | None) -> dict[str, str] | None:
    """``"0=70GiB,1=70GiB,cpu=100GiB"`` (command line, environment) -> a max_memory dict."""
    if text is None or not text.strip():
        return None
    caps = {}
    for item in text.split(","):
        device, sep, size = item.partition("=")
        if not sep or not device.strip() or not size.strip():
            raise LoadOptionsError(
                "max_memory", f"max_memory: {item.strip()!r} is not DEVICE=SIZE (like 0=70GiB)"
            )
        caps[device.strip()] = size.strip()
    return caps


def default_load(settings: Settings, **given: Any) -> LoadOptions:
    """The load options of ``given`` values (None: not given), the others from ``settings``
    (``FRANKENSWEEP_DTYPE``, ``_QUANTIZATION``, ``_DEVICE_MAP``, ``_MAX_MEMORY``)."""
    defaults: dict[str, Any] = {
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "device_map": settings.device_map or None,
    }
    if given.get("device_map", defaults["device_map"]) == "auto":  # caps only go with auto
        defaults["max_memory"] = parse_max_memory(settings.max_memory)
    return load_options(**{**defaults, **{k: v for k, v in given.items() if v is not None}})


def check_environment(options: LoadOptions, devices: bool = True) -> None:
    """Raise :class:`LoadOptionsError` if this machine cannot load models with ``options``:
    bitsandbytes missing for a quantization; with ``devices``, a GPU ``max_memory`` names that
    is not there."""
    if options.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise LoadOptionsError(
            "quantization",
            f"quantization {options.quantization} needs bitsandbytes, which is not installed: "
            "pip install bitsandbytes (or use quantization none)",
        )
    wanted = options.gpus()
    if devices and wanted:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        missing = [g for g in wanted if g >= count]
        if missing:
            have = f"GPUs 0..{count - 1}" if count else "no GPU"
            raise LoadOptionsError(
                "max_memory",
                f"max_memory names GPU {', '.join(map(str, missing))}, but this machine has "
                f"{have}: cap only devices that are there",
            )


def checkpoint_quantization(spec: str) -> str | None:
    """The quantization method a checkpoint's config declares (gptq, awq, fp8, ...), if any."""
    from frankensweep.models.config import read_config

    config = read_config(spec)
    declared = getattr(config, "quantization_config", None)
    if declared is None:
        return None
    method = declared.get("quant_method") if isinstance(declared, dict) else None
    method = method or getattr(declared, "quant_method", None)
    return str(getattr(method, "value", method) or "unknown")


def check_checkpoint(spec: str, options: LoadOptions, environment: bool = True) -> None:
    """A checkpoint that is already quantized loads as its config says: refuse a second
    quantization, and (with ``environment``) name what this machine lacks to load it (a
    package, a kernel, a GPU), from transformers' own check of its quantizer."""
    method = checkpoint_quantization(spec)
    if method is None or method == "gguf":
        return
    if options.quantization != "none":
        raise LoadOptionsError(
            "quantization",
            f"{spec} is already quantized ({method}): load it as it is, with quantization none",
        )
    if not environment:
        return
    from transformers.quantizers.auto import AutoHfQuantizer

    from frankensweep.models.config import read_config
    from frankensweep.models.spec import ModelLoadError

    try:
        declared = read_config(spec).quantization_config
        quantizer = AutoHfQuantizer.from_config(declared, pre_quantized=True)
        quantizer.validate_environment(device_map=None, weights_only=True)
    except (ImportError, ValueError, RuntimeError, TypeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{spec} is quantized with {method}, which this machine cannot load: {text}"
        ) from None
