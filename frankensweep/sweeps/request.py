"""What a client submits: the body of ``POST /api/sweeps`` (and of a sweep file).

Shapes only (pydantic); what can be known bad about the names and numbers inside is checked by
``submission.build_sweep`` before anything is stored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from frankensweep.evals.registry import EvalSpec
from frankensweep.models import LoadOptions
from frankensweep.strategies import StrategySpec

__all__ = [
    "ExplicitSpaceIn",
    "FiltersIn",
    "InterleaveSpaceIn",
    "ModelName",
    "OverlapSpaceIn",
    "RepeatSpaceIn",
    "RysSpaceIn",
    "SpaceIn",
    "SweepCreate",
]

# bounded so that a range's length is a machine integer (bigger: OverflowError, a 500)
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
IntOrRange = Annotated[
    Int32 | list[Int32],
    Field(description="a value, [min, max] or [min, max, step] (inclusive)"),
]


#: a source model's name as plans write it (``8-16@name``): no whitespace, comma, ``*`` or ``@``
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\s,*@]+$")]
Scale = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class FiltersIn(BaseModel):
    """Optional plan filters; counts of what each removed are reported with the sweep."""

    model_config = ConfigDict(extra="forbid")
    max_repeats: int | None = Field(None, ge=1)
    min_last_slice: int | None = Field(None, ge=1)
    min_jump: int | None = Field(None, ge=1)  # Filters refuses 0 (was a 500)
    max_jump_fraction: float | None = Field(None, gt=0, allow_inf_nan=False)


class OverlapSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["overlap"]
    slice_size: IntOrRange
    jump: IntOrRange
    last_slice: IntOrRange
    first_slice: IntOrRange | None = None
    filters: FiltersIn | None = None


class RepeatSpaceIn(BaseModel):
    """Blocks of layers each run k times (see ``search/spaces.py``)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["repeat"]
    blocks: IntOrRange = Field(1, description="how many blocks (0: the base model)")
    length: IntOrRange | None = Field(None, description="block length (default 1..N)")
    repeats: IntOrRange = Field(2, description="k: how many times each block runs (2..16)")
    max_added: int | None = Field(None, ge=1, le=2**31 - 1, description="most layers added")
    scale: Scale | list[Scale] | None = Field(
        None, description="scale(s) of every repeated run's o_proj / down_proj (default 1)"
    )
    filters: FiltersIn | None = None


class RysSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["rys"]
    filters: FiltersIn | None = None


class InterleaveSpaceIn(BaseModel):
    """Slices taking turns over models (see ``search/spaces.py``)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["interleave"]
    models: list[ModelName] = Field(
        min_length=2, max_length=9, description='models taking turns; "base" = the base model'
    )
    slice_size: IntOrRange
    overlap: IntOrRange = Field(description="layers each slice runs again from the previous one")
    first: ModelName | list[ModelName] | None = Field(
        None, description="model(s) of the first and last slice (default: the first of models)"
    )
    filters: FiltersIn | None = None


class ExplicitSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["explicit"]
    plans: list[str] = Field(default_factory=list, description='plans like "0-16,8-24,16-30"')
    recipes: list[str] = Field(
        default_factory=list, description="mergekit passthrough YAML recipes, read as plans"
    )
    filters: FiltersIn | None = None


SpaceIn = Annotated[
    OverlapSpaceIn | RepeatSpaceIn | RysSpaceIn | InterleaveSpaceIn | ExplicitSpaceIn,
    Field(discriminator="kind"),
]


class SweepCreate(BaseModel):
    """A sweep to run: base model (and source models) + space + eval suite + strategy."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")  # PostgreSQL: no NUL
    model: str = Field(min_length=1, max_length=1000, description="HF directory, hub id or .gguf")
    models: dict[ModelName, Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=dict,
        max_length=8,
        description="source models plans may take slices from (8-16@name): name -> HF "
        "directory, hub id or .gguf, of the base model's architecture, depth and vocabulary",
    )
    space: SpaceIn
    evals: list[EvalSpec] = Field(min_length=1, max_length=10)
    strategy: StrategySpec | Literal["grid", "halving"] = Field(
        "grid",
        description="grid (every plan), random / tpe / cmaes (with a budget), halving; "
        "a bare name means its defaults",
    )
    load: LoadOptions | None = Field(
        None,
        description="how workers load the model: quantization (none, nf4, int8), dtype, "
        "device_map (auto: every GPU), max_memory; what is left out comes from the server's "
        "settings. Scores are kept apart by quantization and dtype",
    )
