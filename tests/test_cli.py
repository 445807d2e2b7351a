"""The frankensweep command line, run as a real process."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from frankensweep.search import Plan, recipe_to_plan
from frankensweep.testing.processes import run_cli as run

EXE = shutil.which("frankensweep", path=str(Path(sys.executable).parent))


def test_plans_prints_one_json_object_per_plan_and_counts_to_stderr():
    proc = run(
        "plans", "--layers", "30", "--slice-size", "10", "--jump", "3:5", "--last-slice", "6"
    )
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["plan"] for r in records] == [
        "0-10,7-17,14-24,24-30",
        "0-10,6-16,12-22,18-28,24-30",
        "0-10,5-15,10-20,15-25,24-30",
    ]
    assert records[0]["positions"] == 36
    assert records[0]["params"] == {"slice_size": 10, "jump": 3, "last_slice": 6, "first_slice": 10}
    assert records[0]["digest"] == Plan.parse(records[0]["plan"]).digest
    assert "3 points: 3 kept, 0 infeasible" in proc.stderr


def test_plans_rys_and_study_filters():
    assert len(run("plans", "--layers", "30", "--rys").stdout.splitlines()) == 466
    filtered = run("plans", "--layers", "30", "--rys", "--max-repeats", "2")
    assert len(filtered.stdout.splitlines()) == 466  # a RYS plan repeats each layer at most twice
    study = run(
        "plans",
        "--layers",
        "30",
        "--slice-size",
        "8:14:2",
        "--jump",
        "2:6",
        "--last-slice",
        "4:8:2",
        "--study-filters",
    )
    plans = [Plan.parse(json.loads(line)["plan"]) for line in study.stdout.splitlines()]
    assert plans and all(p.max_repeats() <= 2 and len(p.slices[-1]) >= 6 for p in plans)
    assert "filtered (max_repeats" in study.stderr


def test_export_prints_a_mergekit_recipe_that_reads_back():
    proc = run(
        "export",
        "--model",
        "org/base",
        "--plan",
        "0-16,8-24,16-30",
        "--layers",
        "30",
        "--dtype",
        "float16",
    )
    data = yaml.safe_load(proc.stdout)
    assert data["merge_method"] == "passthrough" and data["dtype"] == "float16"
    assert data["slices"][1] == {"sources": [{"model": "org/base", "layer_range": [8, 24]}]}
    assert recipe_to_plan(proc.stdout).plan == Plan.parse("0-16,8-24,16-30")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--model", "o/m", "--layers", "30", "--plan", "0-16,8-40"], 'slice 2 "8-40"'),
        (["export", "--model", "o/m", "--layers", "30", "--plan", "12-4"], 'slice 1 "12-4"'),
        (["export", "--model", "o/m", "--layers", "30", "--plan", "6-6"], 'slice 1 "6-6"'),
        (["export", "--model", "o/m", "--layers", "30", "--plan", ""], "plan is empty"),
        (
            ["export", "--model", "o/m", "--layers", "30", "--plan", "0-8", "--dtype", "int3"],
            "int3",
        ),
        (["export", "--model", "/no/such/model.gguf", "--plan", "0-8"], "model file not found"),
        (["eval", "--model", "/no/such/model.gguf", "--plan", "0-8"], "model file not found"),
        (["eval", "--model", "./no-such-dir", "--plan", "0-8"], "model not found"),
        (["eval", "--model", "o/m", "--plan", "0-8", "--ppl-corpus", "/no/such.txt"], "corpus"),
        (["eval", "--model", "o/m", "--plans-file", "/no/plans.txt"], "plans file not found"),
        (["eval", "--model", "o/m"], "--plans-file"),
        (["eval", "--model", "o/m", "--plan", "0-8", "--eq-bench", "/no/q.json"], "/no/q.json"),
        (["eval", "--model", "o/m", "--plan", "0-8", "--eq-bench-batch", "0"], "--eq-bench-batch"),
        (["eval", "--model", "o/m", "--plan", "0-8", "--eq-bench-batch", "big"], "auto or a"),
        (["eval", "--model", "o/m", "--plan", "0-8", "--eq-bench-batch", "2000"], "1 to 1024"),
        (
            ["plans", "--layers", "30", "--slice-size", "40", "--jump", "3", "--last-slice", "6"],
            "no feasible point",
        ),
        (
            ["plans", "--layers", "30", "--slice-size", "x", "--jump", "3", "--last-slice", "6"],
            "--slice-size",
        ),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_code_2(args, message):
    proc = run(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert proc.stdout == ""


@pytest.mark.slow
def test_eval_json_matches_in_process_perplexity(smollm2, shared_data, tmp_path):
    from frankensweep.evals.corpus import bundled_text
    from frankensweep.evals.perplexity import make_windows, perplexity, tokenize_corpus
    from frankensweep.models import smollm2_path
    from frankensweep.worker.views import build_view

    plans_file = tmp_path / "plans.txt"
    plans_file.write_text("# one plan per line\n0-20,10-30\n\n")
    questions = shared_data / "eq-bench" / "eq_bench_v2_questions_171.json"
    proc = run(
        "eval",
        "--model",
        str(smollm2_path()),
        "--plan",
        "0-30",
        "--plans-file",
        str(plans_file),
        "--ppl-tokens",
        "300",
        "--ctx",
        "128",
        "--eq-bench",
        str(questions),
        "--eq-bench-limit",
        "1",
        "--json",
        "--device",
        "cpu",
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["plan"] for r in rows] == ["0-30", "0-20,10-30"]
    assert all(0 <= r["percent_parseable"] <= 100 and "eqbench" in r for r in rows)
    assert rows[0]["scored_tokens"] == 2 * 127
    windows = make_windows(tokenize_corpus(smollm2.tokenizer, bundled_text()), 300, 128)
    for row in rows:
        want = perplexity(build_view(smollm2.model, Plan.parse(row["plan"])), windows)
        assert row["perplexity"] == want.perplexity
    assert 1 < rows[0]["perplexity"] < rows[1]["perplexity"]


def test_client_commands_default_to_frankensweep_url(monkeypatch):
    """FRANKENSWEEP_URL points every client command at a server; --url still wins."""
    from frankensweep.core.net import free_port

    there, other = (f"http://127.0.0.1:{free_port()}" for _ in range(2))  # nothing listens
    monkeypatch.setenv("FRANKENSWEEP_URL", there)
    for args in (["leaderboard", "1"], ["export", "--candidate", "1"]):
        proc = run(*args, check=False)
        assert proc.returncode == 2 and f"error: cannot reach {there}" in proc.stderr, args
    proc = run("leaderboard", "1", "--url", other, check=False)
    assert proc.returncode == 2 and f"error: cannot reach {other}" in proc.stderr


def test_plans_of_the_repeat_and_interleave_spaces():
    from frankensweep.search import RepeatSpace

    proc = run(
        "plans", "--layers", "12", "--repeat", "--blocks", "1:2", "--repeats", "2:3",
        "--max-added", "6", "--scale", "1,0.5",
    )  # fmt: skip
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    size = RepeatSpace(12, blocks=[1, 2], repeats=[2, 3], max_added=6, scale=(1, 0.5)).size
    assert len(records) == size
    assert f"{size} points: {size} kept" in proc.stderr
    scaled = [r for r in records if r["params"]["scale"] == 0.5]
    assert all("*0.5" in r["plan"] for r in scaled) and len(scaled) == size // 2
    proc = run(
        "plans", "--layers", "30", "--interleave", "base,b", "--slice-size", "10",
        "--overlap", "5", "--first", "base,b",
    )  # fmt: skip
    assert [json.loads(line)["plan"] for line in proc.stdout.splitlines()] == [
        "0-10,5-15@b,10-20,15-25@b,20-30",
        "0-10@b,5-15,10-20@b,15-25,20-30@b",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--model", "o/m", "--plan", "0-8,8-16@b"], "give --source b=MODEL"),
        (["eval", "--model", "o/m", "--plan", "0-8", "--source", "b"], "is not NAME=MODEL"),
        (["eval", "--model", "o/m", "--plan", "0-8", "--source", "base=x/y"], "names the base"),
        (["eval", "--model", "o/m", "--plan", "0-8,8-16*0"], "finite number > 0"),
        (["plans", "--layers", "30", "--repeat", "--repeats", "1"], "repeats must be 2..16"),
        (["plans", "--layers", "30", "--repeat", "--scale", "1,x"], "--scale '1,x'"),
        (["plans", "--layers", "30", "--rys", "--repeat"], "give one space"),
        (["plans", "--layers", "30", "--interleave", "base,b"], "needs --slice-size"),
        (
            [
                "plans",
                "--layers",
                "30",
                "--interleave",
                "base",
                "--slice-size",
                "8",
                "--overlap",
                "2",
            ],
            "at least two models",
        ),
    ],
)
def test_bad_model_names_and_scales_give_one_line_errors(args, message):
    test_bad_input_gives_one_line_error_and_exit_code_2(args, message)


def test_eval_and_export_with_a_source_model(tmp_path):
    """Perplexity through --source equals a view over the same two models, in process."""
    from frankensweep.evals.corpus import bundled_text
    from frankensweep.evals.perplexity import make_windows, perplexity, tokenize_corpus
    from frankensweep.testing.models import tiny_model_dir
    from frankensweep.worker.loading import load_base_model
    from frankensweep.worker.views import build_view

    base_dir = tiny_model_dir(tmp_path / "base", seed=0)
    other_dir = tiny_model_dir(tmp_path / "other", seed=1)
    plans = ["0-3,1-4@b,3-6", "0-4,2-4*0.5,4-6", "0-3,1-4,3-6"]
    args = ["--ppl-tokens", "128", "--ctx", "64", "--json", "--device", "cpu"]
    plan_args = [arg for p in plans for arg in ("--plan", p)]
    proc = run("eval", "--model", str(base_dir), "--source", f"b={other_dir}", *plan_args, *args)
    rows = {r["plan"]: r["perplexity"] for r in map(json.loads, proc.stdout.splitlines())}
    base = load_base_model(str(base_dir), "cpu", "float32")
    other = load_base_model(str(other_dir), "cpu", "float32")
    windows = make_windows(tokenize_corpus(base.tokenizer, bundled_text()), 128, 64)
    for plan, value in rows.items():
        view = build_view(base.model, Plan.parse(plan), {"b": other.model})
        assert value == perplexity(view, windows).perplexity, plan
    assert len(set(rows.values())) == 3  # the other model's layers and the scale change it
    recipe = run("export", "--model", str(base_dir), "--plan", plans[0], "--source",
                 f"b={other_dir}", "--dtype", "float32").stdout  # fmt: skip
    read = recipe_to_plan(recipe, str(base_dir), {str(other_dir): "b"})
    assert str(read.plan) == plans[0]
    deep = tiny_model_dir(tmp_path / "deep", layers=8)
    proc = run("eval", "--model", str(base_dir), "--source", f"b={deep}", "--plan", plans[0],
               *args, check=False)  # fmt: skip
    assert proc.returncode == 2 and "num_hidden_layers: 8 (base model: 6)" in proc.stderr
