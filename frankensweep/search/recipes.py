"""Recipes: a plan as mergekit passthrough YAML, and back.

Written shape (``yaml.safe_dump``, keys in this order)::

    slices:
    - sources:
      - model: org/model
        layer_range: [0, 16]
    merge_method: passthrough
    dtype: bfloat16

Reading accepts any YAML spelling of that shape (e.g. ``layer_range`` as a block list) and
ignores top-level keys that do not change the layers (``base_model``, ``tokenizer_source``, ...),
but rejects ``parameters`` anywhere: a plan restacks layers unchanged and cannot express them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import yaml

from frankensweep.core.errors import UserError
from frankensweep.search.plans import Plan, PlanError, Slice

__all__ = ["DTYPES", "Recipe", "RecipeError", "plan_to_recipe", "recipe_to_plan"]

DTYPES = ("float32", "float16", "bfloat16")


class RecipeError(UserError, ValueError):
    """A mergekit recipe that cannot be read as a plan (one-line message)."""


@dataclass(frozen=True)
class Recipe:
    """A plan read from a mergekit recipe."""

    plan: Plan  # slices from ``model`` have model=None
    model: str  # the base model: given, or the most common one (ties: the first)
    dtype: str | None = None  # the recipe's dtype, if any

    def to_yaml(self) -> str:
        """The recipe again (dtype bfloat16 if it had none)."""
        return plan_to_recipe(self.plan, self.model, self.dtype or "bfloat16")


class _FlowList(list):
    """A list dumped in flow style (``[0, 16]``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def plan_to_recipe(plan: Plan | str, model: str, dtype: str = "bfloat16") -> str:
    """Mergekit passthrough YAML of ``plan``; slices without a model take ``model``."""
    plan = Plan.coerce(plan)
    if not isinstance(model, str) or not model:
        raise RecipeError(f"model must be a non-empty name or path, got {model!r}")
    if dtype not in DTYPES:
        raise RecipeError(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}")
    data = {
        "slices": [
            {"sources": [{"model": s.model or model, "layer_range": _FlowList([s.start, s.end])}]}
            for s in plan.slices
        ],
        "merge_method": "passthrough",
        "dtype": dtype,
    }
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def recipe_to_plan(text: str, model: str | None = None) -> Recipe:
    """Read a mergekit passthrough recipe (``yaml.safe_load`` only) into a plan.

    ``model`` names the base model; if None it is the top-level ``base_model`` if present, else the
    most common slice model (ties: the first). Slices from the base model get ``model=None``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"recipe is not valid YAML: {_one_line(problem)}{where}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe must be a YAML mapping, got {type(data).__name__}")
    method = data.get("merge_method")
    if method != "passthrough":
        raise RecipeError(f"recipe merge_method must be passthrough, found {method!r}")
    if "parameters" in data:
        raise RecipeError("recipe has top-level parameters: a plan cannot express them")
    slices = data.get("slices")
    if not isinstance(slices, list) or not slices:
        found = "models" if "models" in data else repr(slices)
        raise RecipeError(f"recipe needs a non-empty slices list, found {found}")
    ranges: list[tuple[int, int, str]] = []
    for number, entry in enumerate(slices, 1):
        ranges.append(_read_slice(entry, number))
    dtype = data.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise RecipeError(f"recipe dtype must be a string, got {dtype!r}")
    if model is None:
        base = data.get("base_model")
        if isinstance(base, str) and base:
            model = base
        else:
            counts = Counter(m for _, _, m in ranges)
            top = max(counts.values())
            model = next(m for _, _, m in ranges if counts[m] == top)
    try:
        plan = Plan(tuple(Slice(a, b, None if m == model else m) for a, b, m in ranges))
    except PlanError as exc:
        raise RecipeError(f"recipe: {exc}") from None
    return Recipe(plan=plan, model=model, dtype=dtype)


def _read_slice(entry: Any, number: int) -> tuple[int, int, str]:
    where = f"recipe slice {number}"
    if not isinstance(entry, dict) or "sources" not in entry:
        raise RecipeError(f"{where} must be a mapping with sources, got {entry!r}")
    if "parameters" in entry:
        raise RecipeError(f"{where} has parameters: a plan cannot express them")
    sources = entry["sources"]
    if not isinstance(sources, list) or len(sources) != 1:
        raise RecipeError(f"{where} must have exactly one source, got {sources!r}")
    source = sources[0]
    if not isinstance(source, dict):
        raise RecipeError(f"{where} source must be a mapping, got {source!r}")
    if "parameters" in source:
        raise RecipeError(f"{where} source has parameters: a plan cannot express them")
    model, layer_range = source.get("model"), source.get("layer_range")
    if not isinstance(model, str) or not model:
        raise RecipeError(f"{where} source needs a model name, got {model!r}")
    if (
        not isinstance(layer_range, list)
        or len(layer_range) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in layer_range)
    ):
        raise RecipeError(
            f"{where} layer_range must be two integers [start, end], got {layer_range!r}"
        )
    start, end = layer_range
    if start < 0 or end <= start:
        raise RecipeError(f"{where} layer_range {layer_range} must satisfy 0 <= start < end")
    return start, end, model
