"""GGUF export on the real SmolLM2 Q4_1 file: the bytes, transformers and llama.cpp.

Checked with gguf's own ``GGUFReader`` (not the exporter's reader): the identity plan keeps every
tensor and every metadata entry; an overlap plan loads in transformers to logits equal bit for
bit to the view over the dequantized base, and in llama.cpp (llama-cpp-python) to a mean NLL that
differs from the view's by no more than llama.cpp's own difference on the base model + 0.5%.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from gguf import GGUFReader

from frankensweep.export.gguf import prepare_gguf
from frankensweep.models import smollm2_path
from frankensweep.search import Plan
from frankensweep.worker.views import build_view

pytestmark = pytest.mark.slow

BASE = "0-30"
OVERLAP = "0-16,8-24,16-30"  # 46 positions
PROMPT = "The three primary colours are red, yellow and"


def fields(reader: GGUFReader) -> dict:
    """Every metadata entry (the tensor count aside) as (types, contents), in file order."""
    return {
        key: ([t.name for t in field.types], field.contents())
        for key, field in reader.fields.items()
        if key != "GGUF.tensor_count"
    }


def tensors(reader: GGUFReader) -> dict:
    return {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    paths = {}
    for plan in (BASE, OVERLAP):
        path = folder / f"{plan.replace(',', '_')}.gguf"
        job = prepare_gguf(smollm2_path(), plan)
        assert job.write(path) == job.size == path.stat().st_size
        paths[plan] = path
    return paths


def test_the_identity_plan_keeps_every_tensor_byte_for_byte_and_all_metadata(exported):
    source, copy = GGUFReader(smollm2_path()), GGUFReader(exported[BASE])
    assert list(fields(copy)) == list(fields(source))
    assert fields(copy) == fields(source)
    original, written = tensors(source), tensors(copy)
    assert written.keys() == original.keys() and len(written) == 272
    for name, tensor in original.items():
        assert written[name].tensor_type == tensor.tensor_type, name
        assert written[name].shape.tolist() == tensor.shape.tolist(), name
        assert bytes(written[name].data) == bytes(tensor.data), name
    assert {t.tensor_type.name for t in original.values()} == {"Q8_0", "Q4_1", "F32"}


def test_an_overlap_plan_repeats_each_source_layer_s_bytes_and_sets_the_depth(exported):
    source, copy = tensors(GGUFReader(smollm2_path())), GGUFReader(exported[OVERLAP])
    assert copy.fields["llama.block_count"].contents() == 46
    written = tensors(copy)
    assert len(written) == 2 + 46 * 9  # embeddings, final norm, 9 tensors per layer
    for position, layer in enumerate(Plan.parse(OVERLAP).layers()):
        for part in ("attn_q.weight", "ffn_down.weight", "attn_norm.weight"):
            mine, theirs = written[f"blk.{position}.{part}"], source[f"blk.{layer}.{part}"]
            assert mine.tensor_type == theirs.tensor_type
            assert bytes(mine.data) == bytes(theirs.data)
    others = {k: v for k, v in fields(copy).items() if k != "llama.block_count"}
    assert others == {
        k: v for k, v in fields(GGUFReader(smollm2_path())).items() if k != "llama.block_count"
    }


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        return model(ids, use_cache=False).logits


def test_transformers_loads_the_overlap_file_to_the_view_s_logits_bit_for_bit(smollm2, exported):
    from transformers import AutoModelForCausalLM

    path = exported[OVERLAP]
    loaded = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    assert loaded.config.num_hidden_layers == 46
    view = build_view(smollm2.model, Plan.parse(OVERLAP))
    got, want = _logits(loaded, smollm2.tokenizer), _logits(view, smollm2.tokenizer)
    assert torch.equal(got, want)
    # control: the view of a plan one layer off is not what the file holds
    other = build_view(smollm2.model, Plan.parse("0-16,9-25,16-30"))
    assert not torch.equal(got, _logits(other, smollm2.tokenizer))


# -- llama.cpp --------------------------------------------------------------------------------


def _view_nll(smollm2, plan: str, ids: list[int]) -> float:
    view = build_view(smollm2.model, Plan.parse(plan))
    with torch.inference_mode():
        logits = view(torch.tensor([ids]), use_cache=False).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])).item()


def _llama_cpp_nll(path: Path, ids: list[int]) -> float:
    import numpy as np
    from llama_cpp import Llama

    model = Llama(
        model_path=str(path),
        n_ctx=len(ids),
        n_batch=len(ids),
        logits_all=True,
        n_threads=2,
        seed=0,
        verbose=False,
    )
    try:
        assert model.n_ctx() == len(ids)
        model.eval(ids)
        logits = torch.from_numpy(np.array(model.scores[: len(ids) - 1], dtype=np.float32))
    finally:
        model.close()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])).item()


def test_llama_cpp_loads_the_files_and_agrees_with_the_view_on_the_same_tokens(
    smollm2, exported, capsys
):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is a dev extra (make install)")
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    ids = smollm2.tokenizer(text).input_ids[:256]
    relative = {}
    for plan in (BASE, OVERLAP):
        mine, theirs = _view_nll(smollm2, plan, ids), _llama_cpp_nll(exported[plan], ids)
        assert math.isfinite(theirs)
        relative[plan] = abs(theirs - mine) / mine
        with capsys.disabled():
            print(f"\n{plan}: view NLL {mine:.5f}, llama.cpp {theirs:.5f} ({relative[plan]:.3%})")
    assert relative[OVERLAP] <= relative[BASE] + 0.005
    # the overlap file is a different model, not the base again: its NLL moved far more
    assert abs(_view_nll(smollm2, OVERLAP, ids) - _view_nll(smollm2, BASE, ids)) > 0.05
