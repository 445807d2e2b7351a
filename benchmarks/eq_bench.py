"""EQ-Bench: seconds per question of ``run_eq_bench`` on the base SmolLM2 at batch 1, 8 and 32.

On the real SmolLM2-135M-Instruct (GGUF dequantized to float32, CPU, chat template), the first
questions of the local EQ-Bench v2 file (shared data dir), greedy, lm-eval's default
``max_gen_toks``: the same questions generated at batch 1, 8 and 32 (HFLM's batching, left
padded), one after the other in one run. For each batch: seconds per question (lm-eval's run
over the number of questions), the eqbench score, and how many answers equal batch 1's.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import Section, fmt_seconds, smollm2, step
from frankensweep.evals.eq_bench import DEFAULT_MAX_GEN_TOKS, run_eq_bench

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT.parent / "shared" / "data" / "eq-bench" / "eq_bench_v2_questions_171.json"
FULL_QUESTIONS = 32  # one batch of 32
QUICK_QUESTIONS = 8  # batch 32 then runs as one batch of 8
BATCHES = (1, 8, 32)


def questions_file() -> Path:
    """The local EQ-Bench v2 question file (never copied into the project)."""
    if not QUESTIONS.is_file():
        raise FileNotFoundError(
            f"EQ-Bench questions not found at {QUESTIONS}: the eq_bench benchmark reads them "
            "from the shared data dir next to the repository "
            "(../shared/data/eq-bench/eq_bench_v2_questions_171.json)"
        )
    return QUESTIONS


def run(quick: bool) -> Section:
    count = QUICK_QUESTIONS if quick else FULL_QUESTIONS
    section = Section(name="eq_bench", summary="", quick=quick)  # machine state before the load
    path = questions_file()
    step("loading SmolLM2-135M-Instruct (GGUF)")
    base = smollm2().base
    section.summary = (
        f"EQ-Bench v2 (first pass, lm-eval scoring) with `run_eq_bench` on the base "
        f"SmolLM2-135M-Instruct (GGUF dequantized to float32, CPU), first {count} local "
        f"questions at batch {', '.join(map(str, BATCHES))}: seconds per question."
    )
    section.settings = {
        "questions": f"first {count} of ../shared/data/eq-bench/{path.name}",
        "max_gen_toks": str(DEFAULT_MAX_GEN_TOKS),
        "batch sizes": ", ".join(map(str, BATCHES)) + f" (capped at the {count} questions)",
        "chat template": "yes" if getattr(base.tokenizer, "chat_template", None) else "no",
        "decoding": "greedy",
    }

    results = {}
    for batch in BATCHES:
        step(f"EQ-Bench on {count} question(s) at batch {batch}")
        results[batch] = run_eq_bench(
            base.model, base.tokenizer, questions=path, limit=count, batch_size=batch
        )
    first = results[BATCHES[0]]
    reference = [item.answer for item in first.items]
    for batch, result in results.items():
        section.add(
            f"seconds per question, batch {batch}", fmt_seconds(result.seconds_per_question)
        )
    for batch in BATCHES[1:]:
        section.add(
            f"batch {batch} vs batch 1, seconds per question",
            f"{results[batch].seconds_per_question / first.seconds_per_question:.2f}x",
        )
    for batch in BATCHES[1:]:
        same = sum(a.answer == b for a, b in zip(results[batch].items, reference, strict=True))
        section.add(
            f"answers equal to batch 1's, batch {batch}",
            f"{same} / {count}",
            f"{count} / {count}",
            same == count,
        )
    section.add("eqbench (0-100, unparseable answers count 0), batch 1", f"{first.eqbench:.2f}")
    section.add("percent_parseable, batch 1", f"{first.percent_parseable:.0f} %")

    scores = "; ".join(
        f"q{item.question_id} " + (f"{item.score:.1f}" if item.parseable else "unparseable")
        for item in first.items
    )
    section.notes += [
        f"Scores per question (batch 1): {scores}.",
        "Seconds per question: lm-eval's wall-clock (set-up, chat template, generation, "
        "scoring) over the number of questions. lm-eval sorts requests longest first and "
        "left-pads each batch; every row of a batch generates until all rows stop "
        "(`[End of answer]`, EOS or max_gen_toks), so a batch costs its slowest answer.",
        "The model is the base SmolLM2 (no view): the figure is the cost of the eval itself; a "
        "view of a longer plan generates proportionally slower.",
        "Timing under load: the machine is shared; see the load averages.",
    ]
    return section
