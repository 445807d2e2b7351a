"""Turn a submitted sweep into stored candidates, validating everything before storing anything.

:func:`build_sweep` runs every check that can be made at submission, in order: the files it
names lie under the path roots, the load options (``models/load.py``), the model's depth (from
its config), the source models (their configs match the base model's architecture, depth and
vocabulary), the space (parsed, under the enumeration cap, non-empty after its filters, naming
only declared models), the strategy (its plan count under the per-sweep cap, its fidelity
ladder, the corpus of its layer prior), the evals (their data found, their sizes under the caps).
Each failure is a :class:`SubmissionError` naming the field. :func:`store_sweep` then stores the
sweep and its strategy's first round, whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from frankensweep.core.config import Settings
from frankensweep.core.errors import UserError
from frankensweep.core.paths import PathRefused, check_file_or_hub
from frankensweep.db import Candidate, Sweep
from frankensweep.db.store import active_sweeps, write_lock
from frankensweep.evals.corpus import CorpusError, is_bundled, load_corpus
from frankensweep.evals.prior import PriorSpec
from frankensweep.evals.registry import (
    AnyEvalSpec,
    EqBenchSpec,
    PerplexitySpec,
    PreferenceSpec,
    get_eval,
)
from frankensweep.models import (
    LoadOptions,
    LoadOptionsError,
    ModelLoadError,
    check_checkpoint,
    check_environment,
    config_mismatches,
    default_load,
    model_fingerprint,
    read_config,
    read_num_layers,
)
from frankensweep.models.memory import refusal
from frankensweep.search import (
    BASE_NAME,
    ExplicitSpace,
    Filters,
    InfeasibleSpaceError,
    Plan,
    PlanError,
    RecipeError,
    Space,
    SpacePoint,
    SpaceResult,
    enumerate_space,
    recipe_to_plan,
    space_from_spec,
)
from frankensweep.strategies import FidelityError, Strategy, StrategyError, make_strategy
from frankensweep.sweeps.config import model_identity, model_key
from frankensweep.sweeps.memory import SweepMemory, sweep_memory
from frankensweep.sweeps.request import ExplicitSpaceIn, InterleaveSpaceIn, SweepCreate
from frankensweep.sweeps.rounds import begin

__all__ = [
    "Submission",
    "SubmissionError",
    "TooManyActive",
    "build_sweep",
    "check_active",
    "check_memory",
    "store_sweep",
]

Loc = tuple[str | int, ...]


class SubmissionError(UserError, ValueError):
    """A field of the submission is wrong; ``loc`` names it, the message says what to change."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


class Submission(NamedTuple):
    """A validated sweep (only its reference candidate yet), the space's counts, its plans."""

    sweep: Sweep
    summary: dict[str, Any]
    points: list[SpacePoint]


# -- the steps of build_sweep, in order ----------------------------------------------------------


def _named_files(payload: SweepCreate) -> Iterator[tuple[Loc, str, str, bool, tuple[str, ...]]]:
    """``(loc, name, what, hub_ok, local_suffixes)`` of every file name in the submission."""
    yield ("body", "model"), payload.model, "model file", True, (".gguf",)
    for name, source in payload.models.items():
        yield ("body", "models", name), source, "model file", True, (".gguf",)
    for i, spec in enumerate(payload.evals):
        if isinstance(spec, PerplexitySpec) and not is_bundled(spec.corpus):
            yield ("body", "evals", i, "corpus"), spec.corpus, "corpus", False, ()
        elif isinstance(spec, EqBenchSpec):
            yield ("body", "evals", i, "questions"), spec.questions, "questions", True, (".json",)
        elif isinstance(spec, PreferenceSpec) and isinstance(spec.prompts, str):
            yield ("body", "evals", i, "prompts"), spec.prompts, "prompts file", False, ()
    prior = _prior(payload)
    if prior is not None and not is_bundled(prior.corpus):
        yield ("body", "strategy", "prior", "corpus"), prior.corpus, "corpus", False, ()


def _prior(payload: SweepCreate) -> PriorSpec | None:
    """The layer prior the submitted strategy asks for, if any."""
    prior = getattr(payload.strategy, "prior", None)
    return prior if isinstance(prior, PriorSpec) else None


def check_prior(payload: SweepCreate) -> None:
    """The layer prior's corpus can be read and gives at least one window."""
    prior = _prior(payload)
    if prior is None:
        return
    loc: Loc = ("body", "strategy", "prior")
    if prior.tokens < prior.ctx:
        raise SubmissionError(
            (*loc, "tokens"),
            f"{prior.tokens} tokens is less than one window of ctx={prior.ctx}: raise tokens or "
            "lower ctx",
        )
    try:
        load_corpus(prior.corpus)
    except CorpusError as exc:
        raise SubmissionError((*loc, "corpus"), str(exc)) from None


def check_paths(payload: SweepCreate, settings: Settings) -> None:
    """Every file the submission names lies under ``settings.roots()`` (or is a hub id).

    Only the API applies this check; the command line reads whatever local files it is given.
    """
    roots = settings.roots()
    for loc, name, what, hub_ok, suffixes in _named_files(payload):
        try:
            check_file_or_hub(name, roots, what, hub_ok=hub_ok, local_suffixes=suffixes)
        except PathRefused as exc:
            raise SubmissionError(loc, str(exc)) from None


class ModelFacts(NamedTuple):
    """What a submission needs to know of its model, from its config and files."""

    num_layers: int  # depth N
    max_positions: int | None  # longest context it was trained for, if its config says


def make_load(payload: SweepCreate, settings: Settings) -> LoadOptions:
    """The sweep's load options: those of the request, the others from the settings.

    bitsandbytes must be installed for a quantization (the API and the workers install the same
    package); GPUs named in ``max_memory`` and the needs of a pre-quantized checkpoint are
    checked against this machine in embedded mode only (scaled: the workers' machines differ,
    and their loads fail with the reason)."""
    given = (
        {f: getattr(payload.load, f) for f in payload.load.model_fields_set} if payload.load else {}
    )
    try:
        load = default_load(settings, **given)
        check_environment(load, devices=settings.embedded)
        check_checkpoint(payload.model, load, environment=settings.embedded)
    except LoadOptionsError as exc:
        raise SubmissionError(("body", "load", exc.field), str(exc)) from None
    except ModelLoadError as exc:
        raise SubmissionError(("body", "model"), str(exc)) from None
    return load


def model_facts(spec: str) -> ModelFacts:
    """Depth and context length of the named model (no weights are loaded); its files must be
    readable (they are fingerprinted for the results key)."""
    try:
        num_layers = read_num_layers(spec)
        max_positions = getattr(read_config(spec), "max_position_embeddings", None)
        model_fingerprint(spec)
    except ModelLoadError as exc:
        raise SubmissionError(("body", "model"), str(exc)) from None
    return ModelFacts(num_layers, max_positions if isinstance(max_positions, int) else None)


def _same_model(a: str, b: str) -> bool:
    """Whether two names mean the same model (local paths compared once resolved)."""
    if a == b:
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def check_positions(plan: Plan, loc: Loc, settings: Settings) -> None:
    """A plan longer than ``FRANKENSWEEP_MAX_PLAN_POSITIONS`` is refused (its view, its KV cache
    and its page would be unbounded)."""
    if len(plan) > settings.max_plan_positions:
        raise SubmissionError(
            loc,
            f"plan {str(plan)[:80]}{'...' if len(str(plan)) > 80 else ''} has {len(plan)} "
            f"positions, over the cap of {settings.max_plan_positions} "
            "(FRANKENSWEEP_MAX_PLAN_POSITIONS): shorten it",
        )


def check_sources(payload: SweepCreate) -> None:
    """Each source model's config matches the base model's (``config_mismatches``)."""
    if not payload.models:
        return
    base = read_config(payload.model)  # readable: model_facts read it
    for name, spec in payload.models.items():
        loc = ("body", "models", name)
        if name == BASE_NAME:
            raise SubmissionError(loc, f'"{BASE_NAME}" names the base model: call it otherwise')
        try:
            mismatches = config_mismatches(base, read_config(spec))
            model_fingerprint(spec)  # its files are read for the results key
        except ModelLoadError as exc:
            raise SubmissionError(loc, f"source model {name}: {exc}") from None
        if mismatches:
            raise SubmissionError(
                loc,
                f"source model {name} ({spec}) does not match the base model: "
                + "; ".join(mismatches)
                + ": use a model of the same architecture, depth and vocabulary",
            )


def _undeclared(plan: Plan, payload: SweepCreate) -> str | None:
    """The first model ``plan`` names that the sweep does not declare, if any."""
    return next((m for m in plan.models() if m not in payload.models), None)


def _declared_message(payload: SweepCreate) -> str:
    names = ", ".join(sorted(payload.models))
    return f"declare it in models (declared: {names})" if names else "declare it in models"


def _explicit_space(
    payload: SweepCreate, space_in: ExplicitSpaceIn, num_layers: int, settings: Settings
) -> Space:
    plans: list[Plan] = []
    for i, text in enumerate(space_in.plans):
        try:
            plans.append(Plan.parse(text))
        except PlanError as exc:
            raise SubmissionError(("body", "space", "plans", i), str(exc)) from None
        check_positions(plans[-1], ("body", "space", "plans", i), settings)
    for i, plan in enumerate(plans):
        name = _undeclared(plan, payload)
        if name is not None:
            raise SubmissionError(
                ("body", "space", "plans", i),
                f'plan "{plan}" takes a slice from {name}, which the sweep does not declare: '
                + _declared_message(payload),
            )
    # a recipe names models by path: the base model's and each declared source model's
    names = {spec: name for name, spec in payload.models.items()} | {n: n for n in payload.models}
    for i, text in enumerate(space_in.recipes):
        loc = ("body", "space", "recipes", i)
        try:
            if payload.models:
                recipe = recipe_to_plan(text, payload.model, names)
            else:
                recipe = recipe_to_plan(text)
        except RecipeError as exc:
            raise SubmissionError(loc, str(exc)) from None
        if not _same_model(recipe.model, payload.model):  # never silently re-based
            raise SubmissionError(
                loc,
                f"the recipe is written for model {recipe.model}, this sweep's model is "
                f"{payload.model}: submit it with that model, or write the sweep's model in it",
            )
        check_positions(recipe.plan, loc, settings)
        plans.append(recipe.plan)
        name = _undeclared(plans[-1], payload)
        if name is not None:
            raise SubmissionError(
                ("body", "space", "recipes", i),
                f"the recipe takes slices from {name}, neither the base model nor a declared "
                "source model: " + _declared_message(payload),
            )
    if not plans:
        raise SubmissionError(("body", "space"), "an explicit space needs plans or recipes")
    try:
        return ExplicitSpace(plans, num_layers=num_layers)
    except PlanError as exc:
        raise SubmissionError(("body", "space", "plans"), str(exc)) from None


def make_space(payload: SweepCreate, num_layers: int, settings: Settings) -> Space:
    """The submitted space over a model of ``num_layers``, small enough to enumerate."""
    if isinstance(payload.space, ExplicitSpaceIn):
        space: Space = _explicit_space(payload, payload.space, num_layers, settings)
    else:
        if isinstance(payload.space, InterleaveSpaceIn):
            for i, name in enumerate(payload.space.models):
                if name != BASE_NAME and name not in payload.models:
                    raise SubmissionError(
                        ("body", "space", "models", i),
                        f"{name} is not a declared source model (nor {BASE_NAME}, the base "
                        "model): " + _declared_message(payload),
                    )
        spec = payload.space.model_dump(exclude={"filters"}, exclude_none=True)
        try:
            space = space_from_spec(spec, num_layers=num_layers)
        except (ValueError, PlanError) as exc:
            raise SubmissionError(("body", "space"), str(exc)) from None
    if space.size > settings.max_plans_per_sweep * 20:
        raise SubmissionError(
            ("body", "space"),
            f"the space has {space.size} points, too many to enumerate for a sweep capped at "
            f"{settings.max_plans_per_sweep} plans: narrow the ranges",
        )
    return space


def make_filters(payload: SweepCreate) -> Filters:
    filters_in = payload.space.filters
    return Filters.from_dict(filters_in.model_dump(exclude_none=True) if filters_in else None)


def enumerate_plans(space: Space, filters: Filters, settings: Settings) -> SpaceResult:
    """The space's plans kept by the filters; at least one, none over the positions cap."""
    try:
        result = enumerate_space(space, filters)
    except InfeasibleSpaceError as exc:
        raise SubmissionError(("body", "space"), str(exc)) from None
    if not result.points:
        raise SubmissionError(
            ("body", "space"), f"no plan is left to evaluate: {result.summary()}; relax the filters"
        )
    longest = max((p.plan for p in result.points), key=len)
    check_positions(longest, ("body", "space"), settings)
    return result


def check_strategy_size(strategy: Strategy, kept: int, settings: Settings) -> int:
    """Most candidates the strategy stores for ``kept`` plans, under the per-sweep cap."""
    stored = strategy.stored_plans(kept)
    if stored > settings.max_plans_per_sweep:
        raise SubmissionError(
            ("body", "space"),
            f"the space gives {kept} plans, the {strategy.kind} strategy would evaluate "
            f"{stored}, over the cap of {settings.max_plans_per_sweep} "
            "(FRANKENSWEEP_MAX_PLANS_PER_SWEEP): narrow the ranges, add filters or give the "
            "strategy a budget",
        )
    return stored


def _check_sizes(spec: AnyEvalSpec, i: int, model: ModelFacts, settings: Settings) -> None:
    """A perplexity eval scores at least one window, under the caps and the model's context."""
    if not isinstance(spec, PerplexitySpec):
        return
    loc: Loc = ("body", "evals", i)
    if spec.tokens > settings.max_eval_tokens:
        raise SubmissionError(
            (*loc, "tokens"),
            f"{spec.tokens} tokens is over the cap of {settings.max_eval_tokens} "
            "(FRANKENSWEEP_MAX_EVAL_TOKENS)",
        )
    if spec.tokens < spec.ctx:
        raise SubmissionError(
            (*loc, "tokens"),
            f"{spec.tokens} tokens is less than one window of ctx={spec.ctx}: nothing would be "
            "scored; raise tokens or lower ctx",
        )
    if model.max_positions is not None and spec.ctx > model.max_positions:
        raise SubmissionError(
            (*loc, "ctx"),
            f"ctx={spec.ctx} is beyond the model's context length ({model.max_positions} "
            "positions, max_position_embeddings in its config): lower ctx",
        )


def fingerprint_evals(
    payload: SweepCreate, model: ModelFacts, settings: Settings
) -> list[AnyEvalSpec]:
    """Each eval's data read and fingerprinted (the specs to store); sizes under the caps."""
    specs = []
    for i, spec in enumerate(payload.evals):
        _check_sizes(spec, i, model, settings)
        try:
            specs.append(get_eval(spec.kind).with_fingerprint(spec))
        except UserError as exc:
            raise SubmissionError(("body", "evals", i), str(exc)) from None
    return specs


def check_strategy(strategy: Strategy, payload: SweepCreate, space: Space, kept: int) -> None:
    try:
        strategy.check(payload.evals, space.kind, kept)
    except (StrategyError, FidelityError) as exc:
        raise SubmissionError(("body", "strategy"), str(exc)) from None


def check_memory(
    payload: SweepCreate,
    load: LoadOptions,
    evals: list[AnyEvalSpec],
    result: SpaceResult,
    num_layers: int,
    settings: Settings,
) -> SweepMemory:
    """The planner's estimate for the sweep's deepest plan, refused over the worker memory
    (the field named: ``load.quantization`` when the weights and their loading alone do not
    fit, else the eval that reaches the peak)."""
    deepest = max([Plan.base(num_layers), *(p.plan for p in result.points)], key=len)
    try:
        memory = sweep_memory(payload.model, load, evals, deepest, settings, payload.models)
    except ModelLoadError as exc:
        raise SubmissionError(("body", "model"), str(exc)) from None
    except UserError as exc:  # questions the fingerprint read but the planner could not
        raise SubmissionError(("body", "evals"), str(exc)) from None
    if memory.fits:
        return memory
    found = memory.estimate
    loc: Loc = ("body", "load", "quantization")
    kinds = [spec.kind for spec in evals]
    if found.parts["weights"] + found.parts["loading"] <= memory.limit and found.peak in kinds:
        loc = ("body", "evals", kinds.index(found.peak))
    raise SubmissionError(loc, refusal(found, memory.limit, memory.deepest))


def _summary(result: SpaceResult, strategy: Strategy, stored: int) -> dict[str, Any]:
    """How the space was enumerated, as the API answers it."""
    summary: dict[str, Any] = {
        "size": result.size,
        "kept": result.kept,
        "infeasible": result.infeasible,
        "duplicates": result.duplicates,
        "removed_by_filter": result.removed_by_filter,
        "summary": result.summary(),
    }
    if stored < result.kept:
        summary["strategy"] = f"{strategy.kind} evaluates at most {stored} of {result.kept} plans"
    return summary


def _new_sweep(
    payload: SweepCreate,
    load: LoadOptions,
    model: ModelFacts,
    space: Space,
    filters: Filters,
    evals: list[AnyEvalSpec],
    strategy: Strategy,
    memory: SweepMemory,
) -> Sweep:
    """The sweep row with its reference candidate (the base model, at full fidelity)."""
    identity = model_identity(payload.model, payload.models, load)
    sweep = Sweep(
        name=payload.name,
        model=payload.model,
        model_key=model_key(payload.model, identity),
        identity=identity,
        models=dict(payload.models) or None,
        load_options=load.model_dump(mode="json"),
        memory=memory.to_json(),
        num_layers=model.num_layers,
        space={
            **space.to_spec(),
            **({"filters": filters.to_dict()} if filters.active else {}),
        },
        evals=[spec.model_dump(mode="json") for spec in evals],
        strategy=strategy.spec.model_dump(mode="json"),
    )
    base = Plan.base(model.num_layers)
    top = len(strategy.levels(evals)) - 1
    sweep.candidates = [
        Candidate(
            ordinal=0,
            plan=str(base),
            digest=base.digest,
            params={},
            is_reference=True,
            fidelity=top,
        )
    ]
    return sweep


# -- submission ----------------------------------------------------------------------------------


def build_sweep(payload: SweepCreate, settings: Settings) -> Submission:
    """Validate everything about a submission; nothing is stored (see ``store_sweep``)."""
    check_paths(payload, settings)  # before any file is opened: only names under the path roots
    load = make_load(payload, settings)
    model = model_facts(payload.model)
    check_sources(payload)
    space = make_space(payload, model.num_layers, settings)
    filters = make_filters(payload)
    result = enumerate_plans(space, filters, settings)
    strategy = make_strategy(payload.strategy)
    stored = check_strategy_size(strategy, result.kept, settings)
    evals = fingerprint_evals(payload, model, settings)
    check_strategy(strategy, payload, space, result.kept)
    check_prior(payload)
    memory = check_memory(payload, load, evals, result, model.num_layers, settings)
    sweep = _new_sweep(payload, load, model, space, filters, evals, strategy, memory)
    base = Plan.base(model.num_layers).positions()
    points = [p for p in result.points if p.plan.positions() != base]
    return Submission(sweep, _summary(result, strategy, stored), points)


class TooManyActive(UserError):
    """The cap on queued and running sweeps is reached (a retryable refusal: 429)."""


def check_active(session: Session, max_active: int) -> None:
    """Raise TooManyActive when ``max_active`` sweeps are queued or running."""
    active = active_sweeps(session)
    if active >= max_active:
        raise TooManyActive(
            f"{active} sweeps are queued or running, the cap is {max_active} "
            "(FRANKENSWEEP_MAX_ACTIVE_SWEEPS): wait for one to end, or cancel one"
        )


def store_sweep(session: Session, submission: Submission, max_active: int | None = None) -> int:
    """Store the sweep and its strategy's first round; the number of candidates stored.

    With ``max_active``, the count of queued and running sweeps and the insert happen under one
    lock (``write_lock``), so a burst of submissions never passes the cap.
    """
    if max_active is not None:
        write_lock(session)
        try:
            check_active(session, max_active)
        except TooManyActive:
            session.rollback()
            raise
    session.add(submission.sweep)
    session.commit()
    try:
        return 1 + begin(session, submission.sweep.id, submission.points)
    except Exception:  # no half-made sweep: it is stored whole or not at all
        session.rollback()
        session.delete(session.get(Sweep, submission.sweep.id))
        session.commit()
        raise
