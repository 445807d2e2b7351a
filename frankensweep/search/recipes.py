"""Recipes: a plan as mergekit passthrough YAML, and back.

Written shape (``yaml.safe_dump``, keys in this order)::

    slices:
    - sources:
      - model: org/model
        layer_range: [0, 16]
    merge_method: passthrough
    dtype: bfloat16

A scaled slice (``8-16*0.5``) carries mergekit's ``scale`` parameter with the two filters a plan
scales, on the output slice::

    - sources:
      - model: org/model
        layer_range: [8, 16]
      parameters:
        scale:
        - {filter: o_proj, value: 0.5}
        - {filter: down_proj, value: 0.5}

Which model gives what. mergekit's passthrough takes the embeddings (its architecture's "pre"
weights) from the first slice's model, the final norm and the LM head ("post" weights) from the
*last* slice's model, and the config and tokenizer from ``base_model`` (else from any referenced
model: a set, in no set order). frankensweep's view takes embeddings, final norm and LM head from
the base model. So a plan naming other models is written with ``base_model: <base>``, and when
its first (last) slice comes from another model, an empty slice of the base model
(``layer_range: [0, 0]``, which adds no layer) is put first (last): mergekit then takes those
tensors from the base model too, as the view does.

Reading accepts any YAML spelling of that shape (e.g. ``layer_range`` as a block list), ignores
empty slices and top-level keys that do not change the layers (``tokenizer_source``, ...), and
reads a slice's (or its source's) ``scale`` when it is ``o_proj`` and ``down_proj`` filters of one
value (a catch-all entry of 1 is allowed). Any other ``parameters`` are refused: a plan cannot
express them. So is a recipe whose first or last slice is not the base model's, since its
embeddings or LM head would not be the base model's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from frankensweep.core.errors import UserError
from frankensweep.search.plans import Plan, PlanError, Slice, check_scale

__all__ = ["DTYPES", "SCALED", "Recipe", "RecipeError", "plan_to_recipe", "recipe_to_plan"]

DTYPES = ("float32", "float16", "bfloat16")

#: the tensors a slice's scale multiplies (mergekit filters: substrings of the tensor names)
SCALED = ("o_proj", "down_proj")


class RecipeError(UserError, ValueError):
    """A mergekit recipe that cannot be read as a plan (one-line message)."""


@dataclass(frozen=True)
class Recipe:
    """A plan read from a mergekit recipe."""

    plan: Plan  # slices from ``model`` have model=None
    model: str  # the base model: given, ``base_model``, or the most common (ties: the first)
    dtype: str | None = None  # the recipe's dtype, if any
    sources: Mapping[str, str] = field(default_factory=dict)  # plan model name -> recipe model

    def to_yaml(self) -> str:
        """The recipe again (dtype bfloat16 if it had none)."""
        return plan_to_recipe(self.plan, self.model, self.dtype or "bfloat16", self.sources)


class _FlowList(list):
    """A list dumped in flow style (``[0, 16]``)."""


class _FlowDict(dict):
    """A mapping dumped in flow style (``{filter: o_proj, value: 0.5}``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_Dumper.add_representer(
    _FlowDict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)

_HEADER = (
    "# mergekit takes the embeddings from the first slice's model and the final norm and LM head\n"
    "# from the last slice's model; frankensweep takes all three from the base model, so the\n"
    "# first and last slices are the base model's (an empty one where the plan starts or ends\n"
    "# with another model), and base_model gives the config and the tokenizer.\n"
)


def _source(model: str, start: int, end: int) -> dict[str, Any]:
    return {"sources": [{"model": model, "layer_range": _FlowList([start, end])}]}


def plan_to_recipe(
    plan: Plan | str,
    model: str,
    dtype: str = "bfloat16",
    sources: Mapping[str, str] | None = None,
) -> str:
    """Mergekit passthrough YAML of ``plan``: slices without a model take ``model``, slices of a
    named model take ``sources[name]`` (the name itself when not listed)."""
    plan = Plan.coerce(plan)
    if not isinstance(model, str) or not model:
        raise RecipeError(f"model must be a non-empty name or path, got {model!r}")
    if dtype not in DTYPES:
        raise RecipeError(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}")
    sources = sources or {}
    slices = []
    for s in plan.slices:
        entry = _source(model if s.model is None else sources.get(s.model, s.model), s.start, s.end)
        if s.scale is not None:
            entry["parameters"] = {
                "scale": [_FlowDict(filter=name, value=s.scale) for name in SCALED]
            }
        slices.append(entry)
    data: dict[str, Any] = {"slices": slices, "merge_method": "passthrough"}
    header = ""
    if not plan.is_self_merge:
        if plan.slices[0].model is not None:
            slices.insert(0, _source(model, 0, 0))
        if plan.slices[-1].model is not None:
            slices.append(_source(model, 0, 0))
        data["base_model"] = model
        header = _HEADER
    data["dtype"] = dtype
    return header + yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _same(a: str, b: str) -> bool:
    """The same model name or path (``dir/`` and ``./dir`` are ``dir``)."""
    return a == b or os.path.normpath(a) == os.path.normpath(b)


@dataclass(frozen=True)
class _Read:
    start: int
    end: int
    model: str
    scale: float | None


def recipe_to_plan(
    text: str, model: str | None = None, names: Mapping[str, str] | None = None
) -> Recipe:
    """Read a mergekit passthrough recipe (``yaml.safe_load`` only) into a plan.

    ``model`` names the base model; if None it is the top-level ``base_model`` if present, else the
    most common slice model (ties: the first). Slices from the base model get ``model=None``.
    ``names`` maps the recipe's other models to plan model names; with it, a model it does not
    list is an error; without it, each other model is named by itself.
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
    read = [_read_slice(entry, number) for number, entry in enumerate(slices, 1)]
    dtype = data.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise RecipeError(f"recipe dtype must be a string, got {dtype!r}")
    layers = [r for r in read if r.end > r.start]
    if not layers:
        raise RecipeError("recipe has only empty slices: give at least one layer_range")
    if model is None:
        base = data.get("base_model")
        if isinstance(base, str) and base:
            model = base
        else:
            counts = Counter(r.model for r in layers)
            top = max(counts.values())
            model = next(r.model for r in layers if counts[r.model] == top)
    _check_ends(read, model)
    plan_names: dict[str, str] = {}  # recipe model -> plan name
    for number, r in enumerate(read, 1):
        if _same(r.model, model) or r.model in plan_names:
            continue
        if names is None:
            plan_names[r.model] = r.model
            continue
        name = next((n for m, n in names.items() if _same(r.model, m)), None)
        if name is None:
            known = ", ".join(f"{n} = {m}" for m, n in sorted(names.items()) if m != n) or "none"
            raise RecipeError(
                f"recipe slice {number} takes layers from {r.model}, which is neither the base "
                f"model {model} nor a declared source model (declared: {known}): declare it "
                "in models"
            )
        plan_names[r.model] = name
    try:
        plan = Plan(
            tuple(
                Slice(
                    r.start, r.end, None if _same(r.model, model) else plan_names[r.model], r.scale
                )
                for r in layers
            )
        )
    except PlanError as exc:
        raise RecipeError(f"recipe: {exc}") from None
    renamed = {name: path for path, name in plan_names.items() if name != path}
    return Recipe(plan=plan, model=model, dtype=dtype, sources=renamed)


def _check_ends(read: list[_Read], model: str) -> None:
    """The first and last slices (empty ones included) are the base model's, as in a view."""
    for r, what, where in (
        (read[0], "embeddings", "first"),
        (read[-1], "final norm and LM head", "last"),
    ):
        if not _same(r.model, model):
            raise RecipeError(
                f"recipe takes its {what} from {r.model} (its {where} slice), but frankensweep "
                f"takes them from the base model {model}: make the {where} slice one of "
                f"{model} (an empty layer_range [0, 0] will do)"
            )


def _read_scale(value: Any, where: str) -> float | None:
    """The one scale of ``o_proj`` and ``down_proj`` in a ``scale`` setting, or RecipeError."""
    fix = (
        "a plan scales only o_proj and down_proj, by one value: write "
        "scale: [{filter: o_proj, value: S}, {filter: down_proj, value: S}]"
    )
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RecipeError(f"{where} has parameters a plan cannot express: scale {value!r}; {fix}")
    found: dict[str, Any] = {}
    for entry in value:
        if set(entry) - {"filter", "value"} or "value" not in entry:
            raise RecipeError(f"{where} scale entry {entry!r} is not {{filter, value}}; {fix}")
        name = entry.get("filter")
        if name in (None, "*"):
            if entry["value"] != 1:
                raise RecipeError(f"{where} scales every tensor by {entry['value']!r}; {fix}")
            break  # mergekit takes the first entry that matches: the rest is never reached
        if name not in SCALED:
            raise RecipeError(f"{where} scales {name!r}; {fix}")
        found.setdefault(name, entry["value"])
    if set(found) != set(SCALED) or found["o_proj"] != found["down_proj"]:
        raise RecipeError(f"{where} scales {found!r}; {fix}")
    try:
        return check_scale(found["o_proj"], where)
    except PlanError as exc:
        raise RecipeError(str(exc)) from None


def _read_slice(entry: Any, number: int) -> _Read:
    where = f"recipe slice {number}"
    if not isinstance(entry, dict) or "sources" not in entry:
        raise RecipeError(f"{where} must be a mapping with sources, got {entry!r}")
    sources = entry["sources"]
    if not isinstance(sources, list) or len(sources) != 1:
        raise RecipeError(f"{where} must have exactly one source, got {sources!r}")
    source = sources[0]
    if not isinstance(source, dict):
        raise RecipeError(f"{where} source must be a mapping, got {source!r}")
    settings = []
    for owner, label in ((entry, where), (source, f"{where} source")):
        params = owner.get("parameters")
        if params is None:
            continue
        if not isinstance(params, dict) or set(params) != {"scale"}:
            raise RecipeError(f"{label} has parameters a plan cannot express: {params!r}")
        settings.append(_read_scale(params["scale"], f"{label} has parameters:"))
    if len(settings) > 1:
        raise RecipeError(f"{where} gives scale on the slice and on its source: give it once")
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
    if start < 0 or end < start:
        raise RecipeError(
            f"{where} layer_range {layer_range} must satisfy 0 <= start < end "
            "(or start == end: an empty slice)"
        )
    return _Read(start, end, model, settings[0] if settings else None)
