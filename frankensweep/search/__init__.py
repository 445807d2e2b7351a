"""Plans, spaces and recipes of frankenmerges (pure Python, imports no torch)."""

from frankensweep.search.plans import Plan, PlanError, Slice
from frankensweep.search.recipes import (
    DTYPES,
    Recipe,
    RecipeError,
    plan_to_recipe,
    recipe_to_plan,
)
from frankensweep.search.spaces import (
    ExplicitSpace,
    Filters,
    InfeasiblePoint,
    InfeasibleSpaceError,
    IntRange,
    OverlapSpace,
    RysSpace,
    Space,
    SpaceError,
    SpacePoint,
    SpaceResult,
    SpaceStream,
    enumerate_space,
    space_from_spec,
    stream_space,
)

__all__ = [
    "DTYPES",
    "ExplicitSpace",
    "Filters",
    "InfeasiblePoint",
    "InfeasibleSpaceError",
    "IntRange",
    "OverlapSpace",
    "Plan",
    "PlanError",
    "Recipe",
    "RecipeError",
    "RysSpace",
    "Slice",
    "Space",
    "SpaceError",
    "SpacePoint",
    "SpaceResult",
    "SpaceStream",
    "enumerate_space",
    "plan_to_recipe",
    "recipe_to_plan",
    "space_from_spec",
    "stream_space",
]
