#!/usr/bin/env bash
# The GPU check: the CUDA tests, then the GPU benchmark (python -m benchmarks.gpu), in under
# 8 minutes on one GPU. Without a GPU it runs the CPU-sized benchmark (tiny models of the same
# architectures, ~1-2 minutes) and the CUDA tests skip.
#
#   scripts/gpu-check.sh [OUT_DIR]      # default OUT_DIR: gpu-check/ (gpu-check.json, .md, the
#                                       # CUDA tests' log)
#   GPU_CHECK_SIZE=cpu|gpu|auto         # auto (default): gpu when CUDA is present
#   PYTHON=...                          # default: .venv/bin/python, else python3
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-gpu-check}
size=${GPU_CHECK_SIZE:-auto}
python=${PYTHON:-}
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
mkdir -p "$out"

cuda=$("$python" -c 'import torch; print(int(torch.cuda.is_available()))')
if [[ "$size" == auto ]]; then
    size=$([[ "$cuda" == 1 ]] && echo gpu || echo cpu)
fi
echo "gpu-check: ${size}-sized run (CUDA available: $cuda), results in $out/" >&2

# The CUDA tests (every load option and eval in bfloat16 and float16). A test failure fails the
# check, after the benchmark has run.
tests=0
timeout 180 "$python" -m pytest -p no:cacheprovider -q -m cuda \
    tests/worker/test_cuda_load.py tests/worker/test_cuda_evals.py 2>&1 | tee "$out/cuda-tests.log" \
    || tests=$?
if [[ "$tests" == 5 ]]; then tests=0; fi  # pytest: nothing collected/selected is no failure

# The benchmark: models not started within the budget are skipped (their rows say so).
bench=0
budget=$([[ "$size" == gpu ]] && echo 150 || echo 240)
timeout 290 "$python" -m benchmarks.gpu --out "$out" --size "$size" --budget "$budget" || bench=$?

if [[ "$tests" != 0 || "$bench" != 0 ]]; then
    echo "gpu-check: FAILED (CUDA tests exit $tests, benchmark exit $bench)" >&2
    exit 1
fi
echo "gpu-check: done; figures in $out/gpu-check.md and $out/gpu-check.json" >&2
