"""The layer prior: its statistics checked against hidden states taken independently, determinism,
one computation per model (cached in the database by the model's fingerprint), the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from frankensweep.db import make_engine, make_sessionmaker, upgrade
from frankensweep.evals.corpus import load_corpus
from frankensweep.evals.perplexity import make_windows, tokenize_corpus
from frankensweep.evals.prior import LayerPrior, PriorSpec, compute_prior, prior_key
from frankensweep.models import LoadOptions
from frankensweep.search import Plan
from frankensweep.testing.models import tiny_model_dir
from frankensweep.worker.loading import load_base_model
from frankensweep.worker.prior import prior_of, stored_prior_of
from frankensweep.worker.views import build_view

SPEC = PriorSpec(tokens=96, ctx=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tiny_model_dir(tmp_path_factory.mktemp("prior") / "tiny", layers=6)
    return path, load_base_model(str(path), device="cpu", dtype="float32")


def test_statistics_equal_those_of_hidden_states_taken_by_transformers(tiny):
    """``change`` and ``similarity`` of every layer but the last agree with the hidden states
    transformers returns (``output_hidden_states``: the input of each layer; its last entry is
    after the final norm, so the last layer is checked by the prior's own hook only)."""
    _, base = tiny
    prior = compute_prior(build_view(base.model, Plan.base(6)), base.tokenizer, SPEC)
    ids = tokenize_corpus(base.tokenizer, load_corpus(SPEC.corpus))
    windows = make_windows(ids, SPEC.tokens, SPEC.ctx)
    change = torch.zeros(5, dtype=torch.float64)
    cosine = torch.zeros(5, dtype=torch.float64)
    with torch.inference_mode():
        for window in windows:
            states = base.model(input_ids=window[None], output_hidden_states=True).hidden_states
            h = [s[0, 1:].double() for s in states]
            for layer in range(5):
                change[layer] += (
                    (h[layer + 1] - h[layer]).norm(dim=1) / h[layer].norm(dim=1)
                ).sum()
                cosine[layer] += torch.cosine_similarity(h[layer], h[layer + 1], dim=1).sum()
    scored = windows.shape[0] * (SPEC.ctx - 1)
    assert prior.tokens == scored and prior.num_layers == 6
    assert prior.change[:5] == pytest.approx((change / scored).tolist(), rel=1e-9)
    assert [prior.similarity[layer][layer + 1] for layer in range(5)] == pytest.approx(
        (cosine / scored).tolist(), rel=1e-9
    )
    assert all(prior.similarity[a][a] == pytest.approx(1.0) for a in range(7))
    assert all(prior.distance[a][a] == pytest.approx(0.0, abs=1e-6) for a in range(7))
    # a plan's score is the sum of its junctions' mismatches; a contiguous plan scores 0
    assert prior.score(Plan.parse("0-4,2-6")) == prior.distance[4][2]
    assert prior.score(Plan.parse("0-3,3-6")) == 0.0
    assert prior.score(Plan.parse("0-4,2-5,1-6")) == prior.distance[4][2] + prior.distance[5][1]
    i, j = prior.best_block()
    assert all(
        prior.distance[j][i] <= prior.distance[b][a] for a in range(6) for b in range(a + 1, 7)
    )


def test_the_prior_is_deterministic_and_leaves_the_base_model_without_hooks(tiny):
    _, base = tiny

    def hooks() -> list:
        layers = base.model.model.layers
        return [(dict(x._forward_pre_hooks), dict(x._forward_hooks)) for x in layers]

    before = hooks()
    first = compute_prior(build_view(base.model, Plan.base(6)), base.tokenizer, SPEC)
    second = compute_prior(build_view(base.model, Plan.base(6)), base.tokenizer, SPEC)
    assert first == second  # bit for bit: every float equal
    assert LayerPrior.from_json(json.loads(json.dumps(first.to_json()))) == first
    assert hooks() == before  # the hooks went on the views' own layer objects


def test_computed_once_per_model_and_settings_then_read_from_the_database(tiny, tmp_path):
    path, base = tiny
    url = f"sqlite:///{tmp_path / 'priors.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    assert stored_prior_of(sessions, str(path), 6, SPEC) is None
    prior, computed = prior_of(sessions, base, SPEC)
    assert computed
    again, computed = prior_of(sessions, base, SPEC)
    assert not computed and again == prior
    # the same files under another name share it (the key is their fingerprint) ...
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    assert stored_prior_of(sessions, str(copy), 6, SPEC) == prior
    # ... other settings, or rewritten weights, do not
    other = PriorSpec(tokens=64, ctx=32)
    assert prior_key(other) != prior_key(SPEC)
    assert stored_prior_of(sessions, str(path), 6, other) is None
    tiny_model_dir(copy, layers=6, seed=1)
    assert stored_prior_of(sessions, str(copy), 6, SPEC) is None


def test_kept_apart_by_the_load_options_that_change_the_numbers(tiny, tmp_path):
    """As scores are: a bfloat16 or nf4 prior is never read for a sweep loading the defaults,
    while placement (device_map) shares it."""
    path, base = tiny
    url = f"sqlite:///{tmp_path / 'priors.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    prior, computed = prior_of(sessions, base, SPEC, LoadOptions())
    assert computed
    assert stored_prior_of(sessions, str(path), 6, SPEC) == prior  # defaults: the plain key
    assert stored_prior_of(sessions, str(path), 6, SPEC, LoadOptions(device_map="auto")) == prior
    for other in (LoadOptions(dtype="bfloat16"), LoadOptions(quantization="nf4")):
        assert stored_prior_of(sessions, str(path), 6, SPEC, other) is None
    bf16, computed = prior_of(sessions, base, SPEC, LoadOptions(dtype="bfloat16"))
    assert computed  # stored apart (the numbers here are fp32's: the key is what was asked)
    assert stored_prior_of(sessions, str(path), 6, SPEC, LoadOptions(dtype="bfloat16")) == bf16


@pytest.mark.slow
def test_command_line_prints_the_prior_and_computes_it_once(tiny, tmp_path):
    path, _ = tiny
    env = {"FRANKENSWEEP_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    command = [
        sys.executable, "-m", "frankensweep", "prior", "--model", str(path),
        "--tokens", "96", "--ctx", "32", "--device", "cpu",
    ]  # fmt: skip

    def run(*extra: str) -> subprocess.CompletedProcess:
        import os

        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, env=os.environ | env, timeout=600
        )

    first = run("--json")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["computed"] is True and data["layers"] == 6 and len(data["change"]) == 6
    second = json.loads(run("--json").stdout)
    assert second["computed"] is False and second["distance"] == data["distance"]
    table = run()
    assert "from the database" in table.stdout and "best repeated block: layers" in table.stdout
    missing = run("--corpus", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "error: corpus not found" in missing.stderr
