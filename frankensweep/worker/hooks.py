"""Accelerate's device hooks on the copies a view makes: re-bound to the copy.

Any ``device_map`` dispatch (several GPUs, CPU or disk offload) installs an accelerate hook on a
module by replacing its ``forward`` with ``functools.partial(new_forward, <that module>)`` and
keeping the class's forward, bound to that module, as ``_old_forward``. A shallow copy keeps both
instance attributes, so calling the copy would run the *original* module: a view's copy of a
decoder layer would run the source layer with its own ``layer_idx`` (positions repeating a layer
share one KV-cache slot again: cached generation silently differs from the no-cache recompute),
and a view's copy of the whole model would run the base model.

:func:`rebind_hooks` binds both attributes of a copy to the copy. The hook object itself stays
shared: it holds the source module's execution device and offloaded weights, so every position
runs where its source layer lives and loads the same offloaded tensors.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["has_device_hooks", "rebind_hooks"]

_BOUND = ("forward", "_old_forward")  # the instance attributes accelerate binds to the module


def has_device_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries an accelerate hook."""
    return any(getattr(m, "_hf_hook", None) is not None for m in model.modules())


def _rebound(fn: Callable[..., Any], old: nn.Module, new: nn.Module) -> Callable[..., Any]:
    """``fn`` with every binding to ``old`` made a binding to ``new``.

    Handles what ``accelerate.hooks.add_hook_to_module`` makes: a bound method of ``old``, a
    ``functools.partial`` whose first argument is ``old`` (with ``update_wrapper`` attributes,
    ``__wrapped__`` among them) and partials over partials (chained hooks).
    """
    if isinstance(fn, types.MethodType):
        return types.MethodType(fn.__func__, new) if fn.__self__ is old else fn
    if isinstance(fn, functools.partial):
        args = tuple(new if a is old else a for a in fn.args)
        func = _rebound(fn.func, old, new)
        if args == fn.args and func is fn.func and "__wrapped__" not in vars(fn):
            return fn
        bound = functools.partial(func, *args, **fn.keywords)
        attrs = dict(vars(fn))
        if "__wrapped__" in attrs:
            attrs["__wrapped__"] = _rebound(attrs["__wrapped__"], old, new)
        vars(bound).update(attrs)
        return bound
    return fn


def rebind_hooks(clone: nn.Module, module: nn.Module) -> None:
    """Bind the accelerate hook of ``clone`` (a shallow copy of ``module``) to ``clone``.

    Nothing happens for a module without a hook. A hooked module whose forward is neither a
    method nor a partial (not accelerate's doing) raises TypeError: what it calls is unknown, and
    running it might silently run ``module``.
    """
    state = clone.__dict__
    if state.get("_hf_hook") is None:
        return
    for name in _BOUND:
        fn = state.get(name)
        if fn is None:
            continue
        if not isinstance(fn, types.MethodType | functools.partial):
            raise TypeError(
                f"{type(module).__name__}.{name} is a {type(fn).__name__}, not an accelerate "
                "hook's partial or a bound method: frankensweep cannot re-bind it to a view's copy"
            )
        state[name] = _rebound(fn, module, clone)
