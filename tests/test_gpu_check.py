"""scripts/gpu-check.sh in its CPU-sized form (what CI can run): the CUDA tests are collected
and skip, the benchmark measures every model on tiny random models of the real architectures and
writes its figures as JSON and a markdown table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpu_sized_gpu_check_writes_every_figure(tmp_path):
    env = {**os.environ, "GPU_CHECK_SIZE": "cpu", "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu-check.json").read_text())
    assert data["size"] == "cpu"
    runs = [(r["model"], r["quantization"]) for r in data["results"]]
    assert runs == [("llama3-8b", "none"), ("llama3-8b", "nf4"), ("qwen2-32b", "nf4")]
    for result in data["results"]:
        assert result["skipped"] is None, result
        assert result["view_depth"] == result["layers"] * 3 // 2
        assert set(result["prefill_tokens_per_s"]) == {"base", "view"}
        assert all(rate > 0 for rate in result["prefill_tokens_per_s"].values())
        sweep = result["sweep"]
        assert len(sweep["plans"]) == len(set(sweep["plans"])) == 10
        assert sweep["bitwise_equal"] is True
        assert sweep["layer_evals"] < sweep["separate_layer_evals"]
        assert set(result["seconds_per_question"]) == {"1", "8", "32"}
        assert "generate batch 32" in result["peak_bytes"]
        assert result["planner_inputs"]["depth"] == result["view_depth"]
    table = (tmp_path / "gpu-check.md").read_text()
    assert "| llama3-8b | nf4 | 8 / 12 |" in table and "| qwen2-32b | nf4 |" in table
    log = (tmp_path / "cuda-tests.log").read_text()
    assert "skipped" in log or "deselected" in log  # collected, and skipped without CUDA
