"""A GGUF base model is parsed once per load, and loads to exactly what transformers loads."""

from __future__ import annotations

import gguf
import pytest
import torch

from frankensweep.models import resolve_spec, smollm2_path
from frankensweep.worker.loading import load_base_model

pytestmark = pytest.mark.slow

TEXT = "The three primary colours are red, yellow and blue."


def test_load_base_model_parses_the_file_once_and_loads_what_transformers_loads(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parses: list[str] = []
    reader = gguf.GGUFReader

    def counted(*args, **kwargs):
        parses.append(str(args[0]))
        return reader(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counted)
    spec = str(smollm2_path())
    location, kwargs = resolve_spec(spec)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    plain = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
    assert len(parses) == 3  # control: the tokenizer's config, the model's config, the tensors

    parses.clear()
    base = load_base_model(spec, device="cpu", dtype="float32")
    assert len(parses) == 1
    assert gguf.GGUFReader is counted  # restored after the load

    mine, theirs = base.model.state_dict(), plain.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs)
    assert base.tokenizer(TEXT).input_ids == tokenizer(TEXT).input_ids
