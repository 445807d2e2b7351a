"""Every load option and every eval on CUDA, in bfloat16 and float16 (skipped without a GPU).

Each load configuration (a dtype alone, nf4 and int8 with that compute dtype, ``device_map:
auto``) loads SmolLM2 onto the GPU once; on it, a view with an overlap runs perplexity (close to
the float32 CPU figure), the prefix-shared sweep (bitwise equal to separate evaluation),
preference (the right answer preferred) and EQ-Bench in a batch (answers for every question).
Nothing here may assume CPU tensors: inputs go to the model's device, logits come back in the
load dtype and are scored in float32.
"""

from __future__ import annotations

import math

import pytest
import torch

from frankensweep.evals.corpus import bundled_text
from frankensweep.evals.perplexity import make_windows, perplexity, tokenize_corpus
from frankensweep.evals.preference import parse_prompts, preference, prepare
from frankensweep.models import LoadOptions, smollm2_path
from frankensweep.search import Plan
from frankensweep.testing.models import cached_and_recomputed
from frankensweep.worker.loading import load_base_model
from frankensweep.worker.prefix_views import shared_view_perplexities
from frankensweep.worker.views import build_view

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

PLAN = Plan.parse("0-20,10-30")
SWEEP = [Plan.parse(p) for p in ("0-30", "0-20,10-30", "0-24,12-30", "0-20,12-30", "0-16,8-30")]
PROMPTS = [
    {"prompt": "The capital of France is", "wanted": [" Paris."], "unwanted": [" a banana."]},
    {"prompt": "Two plus two equals", "wanted": [" four."], "unwanted": [" purple elephants."]},
]
# relative perplexity gap to float32 on CPU: half precision rounds, int8/nf4 quantize (nf4 on
# this 135M model measured +35% over 62 tokens on CPU, tests/test_cli_load.py; the GPU bounds
# are not measured yet)
GAP = {"none": 0.05, "int8": 0.15, "nf4": 0.5}

CONFIGS = {
    "float32": LoadOptions(dtype="float32"),
    **{dtype: LoadOptions(dtype=dtype) for dtype in ("bfloat16", "float16")},
    **{
        f"{q}-{dtype}": LoadOptions(dtype=dtype, quantization=q)
        for q in ("nf4", "int8")
        for dtype in ("bfloat16", "float16")
    },
    **{
        f"auto-{dtype}": LoadOptions(dtype=dtype, device_map="auto")
        for dtype in ("bfloat16", "float16")
    },
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(scope="module", params=list(CONFIGS))
def loaded(request):
    base = load_base_model(str(smollm2_path()), device="cuda", load=CONFIGS[request.param])
    yield base
    del base
    torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def windows(smollm2):
    return make_windows(tokenize_corpus(smollm2.tokenizer, bundled_text()), 1024, 256)


def test_weights_and_logits_on_the_gpu_in_the_load_dtype(loaded):
    want = DTYPES[loaded.load.dtype]
    assert loaded.dtype == want
    assert loaded.device.type == "cuda"
    assert {p.device.type for p in loaded.model.parameters()} == {"cuda"}
    assert loaded.model.get_input_embeddings().weight.dtype == want
    ids = loaded.tokenizer("The three primary colours are", return_tensors="pt").input_ids
    view = build_view(loaded.model, PLAN)
    with torch.inference_mode():
        logits = view(input_ids=ids.to(loaded.device), use_cache=False).logits
    assert logits.device.type == "cuda" and logits.dtype in (want, torch.float32)
    assert torch.isfinite(logits).all()
    cached, recomputed = cached_and_recomputed(view, ids.to(loaded.device), tokens=12)
    assert torch.equal(cached, recomputed)


def test_perplexity_close_to_float32_on_cpu(loaded, smollm2, windows):
    got = perplexity(build_view(loaded.model, PLAN), windows)
    want = perplexity(build_view(smollm2.model, PLAN), windows)
    assert math.isfinite(got.perplexity)
    assert got.scored_tokens == want.scored_tokens
    assert abs(got.perplexity / want.perplexity - 1) < GAP[loaded.load.quantization]


def test_prefix_shared_sweep_equals_separate_evaluation(loaded, windows):
    shared, stats = shared_view_perplexities(loaded.model, SWEEP, windows, batch_size=2)
    assert stats.layer_evals < stats.separate_layer_evals
    for plan in SWEEP:
        separate = perplexity(build_view(loaded.model, plan), windows, batch_size=2)
        assert shared[plan].nll == separate.nll, plan


def test_preference_prefers_the_right_answers(loaded):
    prompts = parse_prompts(PROMPTS)
    result = preference(loaded.model, prepare(loaded.tokenizer, prompts), prompts)
    assert math.isfinite(result.preference)
    assert result.preference > 0


def test_eq_bench_in_a_batch(loaded, shared_data):
    from frankensweep.evals.eq_bench import run_eq_bench

    questions = shared_data / "eq-bench" / "eq_bench_v2_questions_171.json"
    calls: list[int] = []
    view = build_view(loaded.model, PLAN)
    result = run_eq_bench(
        view, loaded.tokenizer, questions, limit=4, batch_size=4, progress=calls.append
    )
    assert calls == [4]
    assert [i.question_id for i in result.items] == ["1", "2", "3", "4"]
    assert any(item.answer.strip() for item in result.items)  # text came out
    if loaded.load.dtype == "float32" and loaded.load.quantization == "none":
        alone = run_eq_bench(view, loaded.tokenizer, questions, limit=4, batch_size=1)
        assert [i.answer for i in alone.items] == [i.answer for i in result.items]
