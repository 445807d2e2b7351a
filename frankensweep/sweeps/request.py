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
    "OverlapSpaceIn",
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


class RysSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["rys"]
    filters: FiltersIn | None = None


class ExplicitSpaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["explicit"]
    plans: list[str] = Field(default_factory=list, description='plans like "0-16,8-24,16-30"')
    recipes: list[str] = Field(
        default_factory=list, description="mergekit passthrough YAML recipes, read as plans"
    )
    filters: FiltersIn | None = None


SpaceIn = Annotated[OverlapSpaceIn | RysSpaceIn | ExplicitSpaceIn, Field(discriminator="kind")]


class SweepCreate(BaseModel):
    """A sweep to run: base model + space + eval suite + strategy."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")  # PostgreSQL: no NUL
    model: str = Field(min_length=1, max_length=1000, description="HF directory, hub id or .gguf")
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
