"""Views: run a plan on the base model's own weight tensors, with nothing copied.

A view is a shallow copy of the base ``*ForCausalLM`` whose decoder stack lists, for every
position of the plan, a shallow copy of the source decoder layer. The copies share every
parameter and leaf module with the base model, and differ only where the position matters:

- every module in the layer that carries a ``layer_idx`` (the layer itself on Gemma3, its
  attention everywhere) gets its own object with ``layer_idx = position``, so each position owns
  a KV-cache slot (reusing one layer object twice gives right no-cache logits but silently wrong
  cached generation);
- every copied module gets fresh hook, parameter and buffer dicts, so hooks registered on a view
  (transformers' output capturing registers some, lazily) never leak into the base model, and
  the copies are marked as not yet hooked so the view installs its own;
- a module dispatched by accelerate (``device_map``: several GPUs, offload) has its ``forward``
  bound to itself; each copy's is re-bound to the copy (``worker/hooks.py``), so it runs the copy
  where its source module lives;
- the view's config is a copy with ``num_hidden_layers = len(plan)`` (otherwise only the first N
  positions run) and ``layer_types`` remapped by source layer (sliding / full attention follows
  its source layer; stale types crash ``generate``).

A slice of another (source) model runs that model's layer objects the same way. Embeddings,
final norm, rotary embeddings and LM head always come from the base model (a recipe makes
mergekit take them from it too, see ``search/recipes.py``). A scaled slice (``8-16*0.5``) gives
each of its positions scaled copies of the modules mergekit's ``o_proj`` / ``down_proj`` filters
name (the attention-output and MLP-output projections): a shallow copy of the ``Linear``, sharing
its weight tensor, whose output is multiplied by the scale; the modules on the path to it are
copied too, so the base model's modules are never changed and no weight is written or copied.

Building a view takes milliseconds and allocates no tensor storage.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from frankensweep.search.recipes import SCALED
from frankensweep.worker.hooks import rebind_hooks

if TYPE_CHECKING:
    from frankensweep.search import Plan

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)

# config attributes that hold one entry per decoder layer, remapped by source layer
_PER_LAYER_CONFIG = ("layer_types",)


def _shallow(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its tensors and children, with its own dicts and no hooks."""
    clone = copy.copy(module)
    state = clone.__dict__  # written directly: nn.Module.__setattr__ is slow and checks types
    state["_modules"] = OrderedDict(module._modules)
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = dict(module._buffers)
    for name in _HOOK_DICTS:
        if name in state:
            state[name] = OrderedDict()
    # transformers installs output-capturing hooks lazily and marks the model; the copy has none
    state.pop("_output_capturing_hooks_installed", None)
    rebind_hooks(clone, module)  # accelerate's device hooks run the copy, not ``module``
    return clone


def _has_layer_idx(module: nn.Module) -> bool:
    return any(hasattr(m, "layer_idx") for m in module.modules())


def _rebind(module: nn.Module, position: int) -> nn.Module:
    """Copy the path from ``module`` to every descendant carrying ``layer_idx``; set it."""
    clone = _shallow(module)
    if hasattr(clone, "layer_idx"):
        clone.__dict__["layer_idx"] = position  # a plain attribute (nn.Module keeps no int)
    for name, child in module._modules.items():
        if child is not None and _has_layer_idx(child):
            clone._modules[name] = _rebind(child, position)
    return clone


def _scaled_forward(forward: Callable[..., Any], scale: float, *args: Any, **kwargs: Any) -> Any:
    return forward(*args, **kwargs) * scale


def _scaled(module: nn.Module, scale: float) -> nn.Module:
    """A shallow copy of ``module`` (its tensors shared) whose output is multiplied by ``scale``.

    It calls ``module``'s own ``forward`` (a method, or the partial an accelerate hook put there,
    which still runs the same weights), so a dispatched model keeps its device handling.
    """
    clone = _shallow(module)
    clone.__dict__["forward"] = functools.partial(_scaled_forward, module.forward, scale)
    clone.__dict__["frankensweep_scale"] = scale
    return clone


def scale_outputs(layer: nn.Module, scale: float) -> nn.Module:
    """In a position's own copy of a decoder layer, replace every module whose name contains
    one of :data:`~frankensweep.search.recipes.SCALED` (mergekit's filters) by a scaled copy."""
    targets = [
        name
        for name, module in layer.named_modules()
        if name and module._parameters and any(part in name for part in SCALED)
    ]
    if not targets:
        raise ValueError(
            f"{type(layer).__name__} has no {' / '.join(SCALED)} module: a scaled slice "
            "needs the attention-output and MLP-output projections"
        )
    for name in targets:
        *parents, leaf = name.split(".")
        node = layer
        for part in parents:  # copy the path: the base model's modules keep their children
            child = _shallow(node._modules[part])  # type: ignore[arg-type]
            node._modules[part] = child
            node = child
        target = node._modules[leaf]
        assert target is not None
        if target._modules:
            raise ValueError(
                f"cannot scale {name}: it has submodules ({', '.join(target._modules)})"
            )
        node._modules[leaf] = _scaled(target, scale)
    return layer


def decoder_stack(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The inner decoder (``model.model``) and its ``layers`` of a ``*ForCausalLM``."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(inner, nn.Module) or not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"{type(model).__name__} has no decoder stack at .model.layers; "
            "frankensweep views need a decoder-only *ForCausalLM"
        )
    return inner, layers


def view_config(config, source_layers: list[int]):
    """A copy of ``config`` describing a stack whose position ``p`` runs ``source_layers[p]``."""
    new = copy.deepcopy(config)
    new.num_hidden_layers = len(source_layers)
    for attr in _PER_LAYER_CONFIG:
        values = getattr(config, attr, None)
        if values is not None:
            setattr(new, attr, [values[i] for i in source_layers])
    return new


def build_view(
    base: nn.Module,
    plan: Plan,
    sources: Mapping[str, nn.Module] | None = None,
) -> nn.Module:
    """A model running ``plan`` on ``base``'s own tensors (and ``sources[m]`` for slices of ``m``).

    The plan must already be valid for the base model's depth. Embeddings, final norm and LM head
    always come from ``base``; extra source models must be of its class (checked here; their
    configs are compared when they are loaded).
    """
    base_inner, base_layers = decoder_stack(base)
    stacks: dict[str | None, nn.ModuleList] = {None: base_layers}
    for name, other in (sources or {}).items():
        if type(other) is not type(base):
            raise TypeError(
                f"source model {name} is a {type(other).__name__}, the base model a "
                f"{type(base).__name__}: a view stacks layers of one architecture"
            )
        stacks[name] = decoder_stack(other)[1]

    positions = []
    source_layers = []
    for position, (model_name, layer, scale) in enumerate(plan.positions()):
        if model_name not in stacks:
            raise KeyError(
                f"plan slice names model {model_name!r} but no such source model was loaded"
            )
        stack = stacks[model_name]
        if layer >= len(stack):
            raise IndexError(f"layer {layer} is out of range for a {len(stack)}-layer model")
        own = _rebind(stack[layer], position)
        positions.append(scale_outputs(own, scale) if scale is not None else own)
        source_layers.append(layer)

    config = view_config(base.config, source_layers)
    inner = _shallow(base_inner)
    inner.config = config
    inner._modules["layers"] = nn.ModuleList(positions)
    view = _shallow(base)
    view.config = config
    view._modules["model"] = inner
    view.__dict__["frankensweep_plan"] = plan
    return view
