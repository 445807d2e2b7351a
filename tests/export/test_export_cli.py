"""``frankensweep export`` as a real process: every format, per-layer metadata, and refusals.

Small GGUF files are written here with gguf's ``GGUFWriter`` (4 layers, F32 tensors, per-layer
metadata arrays), so the rules are checked on files whose every byte is known; the real SmolLM2
GGUF is the subject of ``test_gguf.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from gguf import GGUFReader, GGUFWriter

from frankensweep.export.gguf import prepare_gguf
from frankensweep.testing.processes import run_cli as run

LAYERS = 4


def tiny_gguf(path: Path, arch: str = "llama", **extra) -> Path:
    """A 4-layer GGUF: per-layer head counts as arrays, layer ``i``'s tensors filled with ``i``."""
    writer = GGUFWriter(path, arch)
    writer.add_uint32(f"{arch}.block_count", LAYERS)
    writer.add_uint32(f"{arch}.embedding_length", 8)
    writer.add_array(f"{arch}.attention.head_count_kv", [1, 2, 3, 4])
    writer.add_array(f"{arch}.feed_forward_length", [16, 32, 48, 64])
    writer.add_array(f"{arch}.rope.dimension_sections", [1, 2])  # not per layer: 2 entries
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    for key, value in extra.items():
        if isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_uint32(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), dtype=np.float32))
    for layer in range(LAYERS):
        writer.add_tensor(f"blk.{layer}.attn_q.weight", np.full((8, 8), layer, dtype=np.float32))
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.full(8, layer, dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_per_layer_arrays_follow_their_source_layer_and_the_rest_is_copied(tmp_path):
    source = tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "out.gguf"
    proc = run(
        "export", "--format", "gguf", "--model", str(source), "--plan", "0-3,1-4", "--out", str(out)
    )
    assert "wrote" in proc.stderr and proc.stdout == ""
    reader = GGUFReader(out)
    sources = [0, 1, 2, 1, 2, 3]
    assert reader.fields["llama.block_count"].contents() == 6
    assert reader.fields["llama.attention.head_count_kv"].contents() == [s + 1 for s in sources]
    assert reader.fields["llama.feed_forward_length"].contents() == [16 * (s + 1) for s in sources]
    assert reader.fields["llama.rope.dimension_sections"].contents() == [1, 2]
    assert reader.fields["tokenizer.ggml.tokens"].contents() == ["a", "b", "c"]
    names = [t.name for t in reader.tensors]
    assert names[0] == "token_embd.weight" and names[-1] == "output_norm.weight"
    for position, layer in enumerate(sources):
        tensor = next(t for t in reader.tensors if t.name == f"blk.{position}.attn_q.weight")
        assert tensor.data.shape == (8, 8) and (tensor.data == layer).all()
    assert out.stat().st_size == prepare_gguf(source, "0-3,1-4").size


def test_gemma2_exports_plans_that_keep_each_layer_s_attention_kind(tmp_path):
    source = tiny_gguf(tmp_path / "gemma2.gguf", arch="gemma2")
    out = tmp_path / "kept.gguf"
    run("export", "-f", "gguf", "-m", str(source), "-p", "0-2,0-4", "-o", str(out))
    assert GGUFReader(out).fields["gemma2.block_count"].contents() == 6


def test_gemma2_flags_written_as_an_array_follow_their_layers_in_any_plan(tmp_path):
    key = "gemma2.attention.sliding_window_pattern"
    flags = [True, False, True, False]
    source = tiny_gguf(tmp_path / "gemma2.gguf", arch="gemma2", **{key: flags})
    out = tmp_path / "moved.gguf"
    run("export", "-f", "gguf", "-m", str(source), "-p", "0-1,0-4", "-o", str(out))
    assert GGUFReader(out).fields[key].contents() == [True, True, False, True, False]


def test_mergekit_recipe_to_a_file_and_on_stdout_with_the_gguf_note(tmp_path):
    source = tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "recipe.yml"
    proc = run(
        "export",
        "-m",
        str(source),
        "-p",
        "0-3,1-4",
        "-f",
        "mergekit",
        "-o",
        str(out),
        "--layers",
        "4",
    )
    data = yaml.safe_load(out.read_text())
    assert data["slices"][1]["sources"][0] == {"model": str(source), "layer_range": [1, 4]}
    assert "frankensweep convert" in proc.stderr and "--recipe-model" in proc.stderr
    named = run(
        "export", "-m", str(source), "-p", "0-4", "--recipe-model", "base-hf/", "--layers", "4"
    )
    assert yaml.safe_load(named.stdout)["slices"][0]["sources"][0]["model"] == "base-hf/"
    assert "note:" not in named.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx"], "unknown export format 'onnx': use one of gguf, hf, mergekit"),
        (
            ["--format", "gguf", "--plan", "0-1,0-4"],
            "gemma2 cannot be exported for this plan: llama.cpp makes every 2th layer",
        ),
        (["--format", "gguf", "--plan", "0-8"], 'slice 1 "0-8"'),
        (["--format", "gguf", "--out", "EXISTING"], "exists: choose another --out or pass --force"),
        (["--format", "hf", "--out", "EXISTING"], "exists: choose another --out or pass --force"),
        (["--format", "gguf", "--out", None], "--format gguf needs --out"),
        (["--format", "gguf", "--model", "/no/such/model.gguf"], "model file not found"),
        (["--format", "hf", "--model", "/no/such/model.gguf"], "model file not found"),
        (["--format", "gguf", "--model", "org/model"], "GGUF export needs a .gguf base model"),
        (["--format", "gguf", "--model", "PHI3"], "GGUF architecture 'phi3' is not supported"),
        (["--format", "hf", "--dtype", "int3"], "dtype 'int3' is not supported"),
    ],
)
def test_bad_exports_fail_in_one_line_and_write_nothing(tmp_path, args, message):
    source = tiny_gguf(tmp_path / "gemma2.gguf", arch="gemma2")
    tiny_gguf(tmp_path / "phi3.gguf", arch="phi3")
    (tmp_path / "existing.gguf").write_bytes(b"keep me")
    options = {"--model": str(source), "--plan": "0-2,0-4", "--out": str(tmp_path / "new.gguf")}
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    options.update(pairs)
    replace = {"EXISTING": str(tmp_path / "existing.gguf"), "PHI3": str(tmp_path / "phi3.gguf")}
    argv = ["export"]
    for key, value in options.items():
        if value is not None:
            argv += [key, replace.get(value, value)]
    before = digest(tmp_path)
    proc = run(*argv, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert message in proc.stderr
    assert digest(tmp_path) == before  # nothing written, nothing left half-written


def test_force_replaces_an_existing_output(tmp_path):
    source = tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "out.gguf"
    out.write_bytes(b"old")
    run("export", "-f", "gguf", "-m", str(source), "-p", "0-4", "-o", str(out), "--force")
    assert GGUFReader(out).fields["llama.block_count"].contents() == LAYERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf", "tiny.gguf"]
