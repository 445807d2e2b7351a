"""The eval registry: ``kind -> implementation``, each with its settings model and relative cost.

An eval suite is a list of eval specs (pydantic models, discriminated by ``kind``). Each kind
declares its relative ``cost`` (strategies run cheap evals first), its primary ``metric`` and
whether higher is better. ``eval_key(spec)`` names the settings: identical (model, plan, key)
triples are evaluated once and shared across sweeps.

A spec's ``fingerprint`` is a digest of the data the eval reads (the corpus text, the question
set, the prompts), filled in at submission by ``Eval.fingerprint``: it is part of the key, so a
rewritten corpus file never reuses scores computed on its old text, and a worker refuses to run an
eval whose data changed after submission (it would store new scores under the old key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic.json_schema import SkipJsonSchema

from frankensweep.core.errors import UserError
from frankensweep.core.fingerprint import file_digest
from frankensweep.search import Plan  # torch-free; implementations import torch lazily


def kind_required(schema: dict[str, Any]) -> None:
    """In JSON, ``kind`` picks the eval (a discriminator): the schema says it is required."""
    required = schema.setdefault("required", [])
    if "kind" not in required:
        required.insert(0, "kind")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required)
    # digest of the eval's data, set at submission (a client's value is replaced)
    fingerprint: SkipJsonSchema[str | None] = None


class PerplexitySpec(_Spec):
    """Perplexity over non-overlapping windows (see ``evals/perplexity.py``)."""

    kind: Literal["perplexity"] = "perplexity"
    corpus: str = Field("pydoc_data.topics", description="UTF-8 text file or pydoc_data.topics")
    tokens: int = Field(2048, ge=2, description="tokens scored, rounded down to a multiple of ctx")
    ctx: int = Field(512, ge=2, le=131072, description="window length in tokens")


#: the largest EQ-Bench batch a spec may ask for (a candidate has 171 questions)
MAX_EQ_BENCH_BATCH = 1024
#: EQ-Bench questions generated per batch: a whole number, or ``auto``
BatchSize = Annotated[int, Field(strict=True, ge=1, le=MAX_EQ_BENCH_BATCH)] | Literal["auto"]


class EqBenchSpec(_Spec):
    """EQ-Bench v2 through lm-eval (see ``evals/eq_bench.py``)."""

    kind: Literal["eq_bench"] = "eq_bench"
    questions: str = Field("pbevan11/EQ-Bench", description="question file or hub dataset id")
    limit: int | None = Field(None, ge=1, description="first N questions (None: all)")
    max_gen_toks: int = Field(80, ge=1, le=4096)
    batch_size: BatchSize = Field(
        "auto",
        description="questions generated per batch, or auto (the largest batch that fits)",
    )


class PreferenceSpec(_Spec):
    """Wanted vs unwanted continuations of prompts (see ``evals/preference.py``)."""

    kind: Literal["preference"] = "preference"
    prompts: str | list[dict[str, Any]] = Field(description="JSON/YAML file or inline list")
    chat: bool = False


class ProbeSpec(_Spec):
    """Multi-digit arithmetic from a seed, partial credit per digit (see ``evals/probe.py``)."""

    kind: Literal["probe"] = "probe"
    questions: int = Field(16, ge=1, le=1024, description="questions asked (the first N)")
    digits: int = Field(3, ge=1, le=12, description="digits of every operand")
    operations: tuple[Literal["+", "-", "*"], ...] = Field(
        ("+", "-", "*"), min_length=1, description="operations drawn from, each named once"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_gen_toks: int = Field(16, ge=1, le=256, description="new tokens per answer at most")
    chat: bool = Field(True, description="ask through the tokenizer's chat template")

    @field_validator("operations")
    @classmethod
    def _each_once(cls, operations: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(operations)) != len(operations):
            raise ValueError(f"{list(operations)} names an operation twice: name each once")
        return operations


#: any eval's settings
AnyEvalSpec = PerplexitySpec | EqBenchSpec | PreferenceSpec | ProbeSpec
#: the same, as a request field: the ``kind`` picks the model
EvalSpec = Annotated[AnyEvalSpec, Field(discriminator="kind")]
_EVAL_SPEC: TypeAdapter = TypeAdapter(EvalSpec)


def parse_eval(data: Any) -> AnyEvalSpec:
    return _EVAL_SPEC.validate_python(data)


#: settings that say how an eval runs, not what it measures: left out of its key
_RUN_SETTINGS = {"batch_size"}


def eval_key(spec: AnyEvalSpec) -> str:
    """``kind:digest`` of the canonical settings; the same settings always give the same key.

    How the eval runs (EQ-Bench's ``batch_size``: batched greedy answers equal batch 1's) is not
    part of the key, so results are shared across batch sizes.
    """
    # sweeps stored before fingerprints keep their keys (and their scores)
    unset = {"fingerprint"} if spec.fingerprint is None else set()
    data = spec.model_dump(mode="json", exclude=unset | _RUN_SETTINGS)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return f"{spec.kind}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


@dataclass
class Outcome:
    """One plan's scores for one eval."""

    metrics: dict[str, float]
    details: dict[str, Any] | None = None
    seconds: float = 0.0


@dataclass
class EvalContext:
    """What an eval needs of the worker: the base model, its tokenizer and a view builder."""

    base: Any  # nn.Module *ForCausalLM
    tokenizer: Any
    make_view: Callable[[Plan], Any]
    progress: Callable[[int], None] | None = None
    # the memory planner's largest EQ-Bench batch that fits a plan generating N tokens
    # (None, or a None answer: the eval's fixed ``auto`` batch)
    largest_batch: Callable[[Plan, int], int | None] | None = None
    memory_budget: int = 1 << 30
    cache: dict[str, Any] = field(default_factory=dict)  # prepared data, per base model


SpecT = TypeVar("SpecT", bound=_Spec)


class Eval(Generic[SpecT]):
    """An eval kind: settings model, cost, metric, and how to score many plans at once."""

    kind: ClassVar[str]
    spec: ClassVar[type[_Spec]]
    cost: ClassVar[float]  # relative cost per candidate (perplexity on 2k tokens = 1)
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def validate(self, spec: SpecT) -> None:
        """Read the eval's data; raise EvalDataError (naming the field) if it cannot be used."""

    def digest(self, spec: SpecT) -> str:
        """A digest of the eval's data as it is now (cheap: files are hashed once per version)."""
        raise NotImplementedError

    def fingerprint(self, spec: SpecT) -> str:
        """Check the eval's data can be used and return the digest of its content."""
        self.validate(spec)
        return self.digest(spec)

    def with_fingerprint(self, spec: SpecT) -> SpecT:
        """``spec`` with the fingerprint of its data as it is now."""
        return spec.model_copy(update={"fingerprint": self.fingerprint(spec)})

    def check_unchanged(self, spec: SpecT) -> None:
        """Raise EvalDataError if the data changed since ``spec`` was fingerprinted."""
        if spec.fingerprint is not None and self.digest(spec) != spec.fingerprint:
            raise EvalDataError(
                f"the data of the {self.kind} eval changed after the sweep was submitted: "
                "its scores would be stored under the old data's key; submit a new sweep"
            )

    def units(self, spec: SpecT) -> int:
        """Progress units per plan."""
        return 1

    def work(self, spec: SpecT) -> int:
        """Its size per plan position, the unit its cost is measured in (ETAs): scored tokens
        for perplexity (positions x tokens: layer-tokens), questions for EQ-Bench."""
        return 1

    def run(self, spec: SpecT, plans: Sequence[Plan], ctx: EvalContext) -> dict[Plan, Outcome]:
        raise NotImplementedError


class EvalDataError(UserError, ValueError):
    """An eval's settings or data cannot be used; the message names the field."""


def _text_digest(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def _file_digest(path: str, field_name: str) -> str:
    try:
        return file_digest(path)
    except OSError as exc:
        raise EvalDataError(f"{field_name}: cannot read {path}: {exc.strerror or exc}") from None


class PerplexityEval(Eval[PerplexitySpec]):
    kind = "perplexity"
    spec = PerplexitySpec
    cost = 1.0
    metric = "perplexity"
    higher_is_better = False

    def validate(self, spec: PerplexitySpec) -> None:
        from frankensweep.evals.corpus import CorpusError, load_corpus

        try:
            load_corpus(spec.corpus)
        except CorpusError as exc:
            raise EvalDataError(f"corpus: {exc}") from None

    def digest(self, spec: PerplexitySpec) -> str:
        from frankensweep.evals.corpus import bundled_text, is_bundled

        if is_bundled(spec.corpus):  # it differs between Python versions
            return _text_digest(bundled_text())
        return _file_digest(spec.corpus, "corpus")

    def units(self, spec: PerplexitySpec) -> int:
        return max(1, spec.tokens // spec.ctx)

    def work(self, spec: PerplexitySpec) -> int:
        return max(1, spec.tokens // spec.ctx * spec.ctx)

    def run(self, spec: PerplexitySpec, plans, ctx: EvalContext) -> dict[Plan, Outcome]:
        import time

        from frankensweep.evals.corpus import load_corpus
        from frankensweep.evals.perplexity import make_windows, tokenize_corpus
        from frankensweep.evals.prefix import shared_perplexities

        key = f"windows:{eval_key(spec)}"  # the fingerprint in it: a rewritten corpus re-reads
        if key not in ctx.cache:
            ids = tokenize_corpus(ctx.tokenizer, load_corpus(spec.corpus))
            ctx.cache[key] = make_windows(ids, spec.tokens, spec.ctx)
        windows = ctx.cache[key]
        start = time.perf_counter()
        results, stats = shared_perplexities(
            ctx.base,
            plans,
            windows,
            ctx.make_view,
            memory_budget=ctx.memory_budget,
            progress=ctx.progress,
        )
        share = (time.perf_counter() - start) / max(1, len(results))
        prefix = {
            "layer_evals": stats.layer_evals,
            "separate_layer_evals": stats.separate_layer_evals,
        }
        return {
            plan: Outcome(
                metrics={
                    "perplexity": r.perplexity,
                    "nll": r.nll,
                    "scored_tokens": float(r.scored_tokens),
                },
                details={"prefix_sharing": prefix, "windows": int(windows.shape[0])},
                seconds=share,
            )
            for plan, r in results.items()
        }


class EqBenchEval(Eval[EqBenchSpec]):
    kind = "eq_bench"
    spec = EqBenchSpec
    cost = 50.0
    metric = "eqbench"
    higher_is_better = True

    def validate(self, spec: EqBenchSpec) -> None:
        from frankensweep.evals.eq_bench import EqBenchDataError, load_questions

        try:
            load_questions(spec.questions, spec.limit)
        except EqBenchDataError as exc:
            raise EvalDataError(f"questions: {exc}") from None

    def digest(self, spec: EqBenchSpec) -> str:
        from frankensweep.evals.eq_bench import load_questions, questions_are_local

        if questions_are_local(spec.questions):
            return _file_digest(spec.questions, "questions")
        records = load_questions(spec.questions)  # a hub dataset: what it holds now
        return _text_digest(json.dumps(records, sort_keys=True))

    def units(self, spec: EqBenchSpec) -> int:
        return spec.limit or 171

    def work(self, spec: EqBenchSpec) -> int:
        return self.units(spec)

    def run(self, spec: EqBenchSpec, plans, ctx: EvalContext) -> dict[Plan, Outcome]:
        from frankensweep.evals.eq_bench import run_eq_bench

        outcomes = {}
        for plan in plans:
            result = run_eq_bench(
                ctx.make_view(plan),
                ctx.tokenizer,
                spec.questions,
                limit=spec.limit,
                max_gen_toks=spec.max_gen_toks,
                batch_size=spec.batch_size,
                progress=ctx.progress,
                largest_batch=(
                    ctx.largest_batch(plan, spec.max_gen_toks) if ctx.largest_batch else None
                ),
            )
            outcomes[plan] = Outcome(
                metrics={
                    "eqbench": result.eqbench,
                    "percent_parseable": result.percent_parseable,
                },
                details={"items": [item.__dict__ for item in result.items]},
                seconds=result.seconds,
            )
        return outcomes


class PreferenceEval(Eval[PreferenceSpec]):
    kind = "preference"
    spec = PreferenceSpec
    cost = 0.2
    metric = "preference"
    higher_is_better = True

    def validate(self, spec: PreferenceSpec) -> None:
        from frankensweep.evals.preference import PreferenceDataError, load_prompts

        try:
            load_prompts(spec.prompts)
        except PreferenceDataError as exc:
            raise EvalDataError(f"prompts: {exc}") from None

    def digest(self, spec: PreferenceSpec) -> str:
        if isinstance(spec.prompts, str):
            return _file_digest(spec.prompts, "prompts")
        return _text_digest(json.dumps(spec.prompts, sort_keys=True))

    def run(self, spec: PreferenceSpec, plans, ctx: EvalContext) -> dict[Plan, Outcome]:
        import time

        from frankensweep.evals.preference import load_prompts, preference, prepare

        prompts = load_prompts(spec.prompts)
        batch = prepare(ctx.tokenizer, prompts, spec.chat)
        outcomes = {}
        for plan in plans:
            start = time.perf_counter()
            result = preference(ctx.make_view(plan), batch, prompts)
            outcomes[plan] = Outcome(
                metrics={
                    "preference": result.preference,
                    "wanted_logprob": result.wanted,
                    "unwanted_logprob": result.unwanted,
                },
                details={"per_prompt": result.per_prompt},
                seconds=time.perf_counter() - start,
            )
            if ctx.progress:
                ctx.progress(1)
        return outcomes


class ProbeEval(Eval[ProbeSpec]):
    kind = "probe"
    spec = ProbeSpec
    cost = 3.0
    metric = "probe"
    higher_is_better = True

    def _questions(self, spec: ProbeSpec):
        from frankensweep.evals.probe import make_questions

        return make_questions(spec.questions, spec.digits, spec.operations, spec.seed)

    def digest(self, spec: ProbeSpec) -> str:
        """The questions themselves: a change of the generator never reuses old scores."""
        questions = [(q.a, q.op, q.b) for q in self._questions(spec)]
        return _text_digest(json.dumps(questions))

    def units(self, spec: ProbeSpec) -> int:
        return spec.questions

    def run(self, spec: ProbeSpec, plans, ctx: EvalContext) -> dict[Plan, Outcome]:
        import time

        from frankensweep.evals.probe import generate_answers, prompts, score

        questions = self._questions(spec)
        key = f"probe:{eval_key(spec)}"
        if key not in ctx.cache:
            ctx.cache[key] = prompts(ctx.tokenizer, questions, spec.chat)
        outcomes = {}
        for plan in plans:
            start = time.perf_counter()
            answers = generate_answers(
                ctx.make_view(plan), ctx.tokenizer, ctx.cache[key], spec.max_gen_toks
            )
            result = score(questions, answers)
            outcomes[plan] = Outcome(
                metrics={"probe": result.probe, "exact": result.exact},
                details={"items": [item.__dict__ for item in result.items]},
                seconds=time.perf_counter() - start,
            )
            if ctx.progress:
                ctx.progress(spec.questions)
        return outcomes


REGISTRY: dict[str, Eval[Any]] = {
    e.kind: e for e in (PerplexityEval(), EqBenchEval(), PreferenceEval(), ProbeEval())
}


def get_eval(kind: str) -> Eval[Any]:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise EvalDataError(
            f"unknown eval kind {kind!r}: use one of {', '.join(REGISTRY)}"
        ) from None


def by_cost(specs: Sequence[AnyEvalSpec]) -> list[AnyEvalSpec]:
    """Specs ordered cheapest first (stable)."""
    return sorted(specs, key=lambda s: REGISTRY[s.kind].cost)
