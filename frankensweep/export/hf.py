"""Hugging Face export: a plan written as a model directory, from its view over the base model.

The directory holds what ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` read:

- ``config.json``: the view's config (``num_hidden_layers`` = the plan's depth, per-layer entries
  such as ``layer_types`` remapped by source layer: ``worker.views.view_config``), and
  ``architectures`` naming the model class; ``generation_config.json`` when the model has one;
- ``model.safetensors``: every position's tensors as ``model.layers.<position>.*`` (a repeated
  layer is written once per position), the other tensors once (a tied output embedding is left to
  the config's ``tie_word_embeddings``). safetensors' ``serialize_file`` writes them tensor by
  tensor straight from the base model's own storage: no copy of the model is made;
- the tokenizer's files (``tokenizer.save_pretrained``).

The weights are written in the dtype the base model is loaded in (float32 for a GGUF file unless
``--dtype`` says otherwise), so the directory loads to a model whose logits equal the view's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frankensweep.export.base import ExportError, ExportRequest
from frankensweep.models import read_num_layers, resolve_spec

if TYPE_CHECKING:
    from frankensweep.worker.loading import BaseModel

__all__ = ["HfExport", "prepare", "view_tensors", "write_view"]

WEIGHTS = "model.safetensors"
_LAYER = re.compile(r"(?:.*\.)?layers\.\d+\.")
_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class HfExport:
    """A checked request; :meth:`write` loads the base model and writes the directory."""

    request: ExportRequest
    total: int | None = None  # no byte count is known before the model is loaded

    def write(self, out: Path, progress: Callable[[int], None] | None = None) -> int:
        from frankensweep.worker.loading import load_base_model

        request = self.request
        base = load_base_model(request.model, device=request.device, dtype=request.dtype or "auto")
        return write_view(base, request, out)


def prepare(request: ExportRequest) -> HfExport:
    """Check what can be checked without loading weights: the model's name, dtype and plan."""
    if request.dtype is not None and request.dtype not in _DTYPES:
        raise ExportError(
            f"dtype {request.dtype!r} is not supported: use one of {', '.join(_DTYPES)}"
        )
    if not request.plan.is_self_merge:
        raise ExportError(f"plan {request.plan} names other models: export one base model")
    if request.plan.is_scaled:
        raise ExportError(
            f"plan {request.plan} scales slices: the HF export writes the base model's tensors "
            "unscaled; export the recipe (--format mergekit), whose scale mergekit applies"
        )
    resolve_spec(request.model)
    request.plan.validate(read_num_layers(request.model))
    return HfExport(request)


def view_tensors(view: Any) -> dict[str, Any]:
    """The view's tensors by name: every position's, other tensors once (ties dropped)."""
    tensors: dict[str, Any] = {}
    written: set[int] = set()
    for name, tensor in view.state_dict().items():
        if _LAYER.match(name) is None:
            if tensor.data_ptr() in written:
                continue  # tied to a tensor already written (lm_head to the embeddings)
            written.add(tensor.data_ptr())
        tensors[name] = tensor
    return tensors


def write_view(base: BaseModel, request: ExportRequest, out: Path) -> int:
    """Write the view of ``request.plan`` over ``base`` into the directory ``out``; return the
    bytes of weights written."""
    from safetensors import TensorSpec, serialize_file

    from frankensweep.worker.loading import make_serializable
    from frankensweep.worker.views import build_view

    plan = request.plan.validate(base.num_layers)
    view = build_view(make_serializable(base.model), plan)
    tensors = view_tensors(view)
    specs = {}
    for name, tensor in tensors.items():
        if tensor.device.type != "cpu" or not tensor.is_contiguous():
            raise ExportError(f"tensor {name} is not a contiguous CPU tensor: load on --device cpu")
        specs[name] = TensorSpec(
            dtype=str(tensor.dtype).removeprefix("torch."),
            shape=list(tensor.shape),
            data_ptr=tensor.data_ptr(),
            data_len=tensor.numel() * tensor.element_size(),
        )
    out.mkdir(exist_ok=True)
    serialize_file(specs, out / WEIGHTS, metadata={"format": "pt"})
    config: Any = view.config
    config.architectures = [type(base.model).__name__]
    config.save_pretrained(out)
    generation: Any = getattr(view, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(out)
    if base.tokenizer is not None:
        base.tokenizer.save_pretrained(out)
    return sum(spec.data_len for spec in specs.values())
