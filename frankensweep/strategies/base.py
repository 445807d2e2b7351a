"""What a search strategy is: settings, the state it sees, and the round it proposes.

A sweep is evaluated in *rounds*. Before each round the strategy sees every candidate so far
(its fidelity level, status and score there) and proposes the next round: new plans to add,
candidates to promote to a higher fidelity, candidates to prune (with the reason), and whether
this round is its last. Rounds are derived from what is stored, so they survive restarts. A
strategy may ask for the base model's layer prior (``evals/prior.py``): workers compute it with
the reference and it is then part of the state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from frankensweep.core.errors import UserError
from frankensweep.evals.prior import LayerPrior, PriorSpec
from frankensweep.search import SpacePoint
from frankensweep.strategies.fidelity import Level, full_level


class StrategyError(UserError, ValueError):
    """The strategy cannot run on this sweep; the message says what to change."""


@dataclass
class CandidateState:
    """A stored candidate as a strategy sees it (the base model's reference is left out)."""

    id: int
    plan: str
    params: dict[str, Any]
    fidelity: int
    status: str
    trial: int | None
    loss: float | None  # ranking metric at its fidelity level, lower is better; None: no score
    # the ranking loss at every level it has a score for, its own and those below (level -> loss)
    losses: dict[int, float] = field(default_factory=dict)


@dataclass
class SearchState:
    """Everything a strategy may look at when it proposes a round."""

    sweep_id: int
    round: int  # the round being proposed (0: the first)
    levels: list[Level]
    candidates: list[CandidateState]
    storage_url: str  # the sweep's database (Optuna keeps its studies there)
    enumerate_points: Callable[[], list[SpacePoint]]
    finished: bool = False  # the last round is over: no round is being proposed anywhere
    prior: LayerPrior | None = None  # the base model's layer prior, if the strategy asks for one

    @cached_property
    def points(self) -> list[SpacePoint]:
        """Every plan of the sweep's space that its filters kept, in enumeration order."""
        return self.enumerate_points()

    @property
    def top(self) -> int:
        return len(self.levels) - 1


@dataclass
class RoundPlan:
    """One round: plans to add (point, fidelity, trial), promotions, prunings, last or not."""

    add: list[tuple[SpacePoint, int, int | None]] = field(default_factory=list)
    promote: dict[int, int] = field(default_factory=dict)  # candidate id -> new fidelity
    prune: dict[int, str] = field(default_factory=dict)  # candidate id -> why
    last: bool = False
    # round 0 only: nothing to add yet, but the search goes on once the reference is evaluated
    # (its worker computes what the strategy waits for: the layer prior)
    wait: bool = False

    def __bool__(self) -> bool:
        return bool(self.add or self.promote or self.wait)


class Strategy(ABC):
    """A search strategy; one instance per use (it holds only its settings)."""

    kind: ClassVar[str]

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    @property
    def prior(self) -> PriorSpec | None:
        """The layer prior it uses (workers compute and store it with the reference), if any."""
        return None

    def levels(self, evals: Sequence) -> list[Level]:
        """Fidelity levels of this sweep, cheapest first; the top one is the full evals."""
        return [full_level(evals)]

    def check(self, evals: Sequence, space_kind: str, plans: int) -> None:
        """Raise StrategyError when this strategy cannot search this sweep."""
        self.levels(evals)

    def stored_plans(self, plans: int) -> int:
        """Most candidates it stores for a space of ``plans`` plans (the per-sweep cap)."""
        return plans

    def observe(self, state: SearchState) -> None:  # noqa: B027 - optional hook
        """Learn from finished rounds (idempotent: it may see the same round again)."""

    def forget(self, sweep_id: int, storage_url: str) -> None:  # noqa: B027 - optional hook
        """Drop what the strategy keeps for a deleted sweep."""

    def evaluations_to_come(self, reached: Sequence[int], top: int) -> dict[int, int]:
        """Evaluations it will still ask for in rounds after the current one, per fidelity
        level: an estimate from the level ``reached`` by each candidate so far (the base
        model's reference left out; pruned ones included). Strategies that store every
        candidate in their first round ask for nothing more."""
        return {}

    @abstractmethod
    def propose(self, state: SearchState) -> RoundPlan | None:
        """The next round, or None when the search is over."""
