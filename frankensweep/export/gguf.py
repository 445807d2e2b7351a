"""GGUF export: a plan written as a GGUF file whose decoder tensors are the source file's bytes.

The rule, exactly (source: a ``.gguf`` base model; plan: a self-merge valid for its depth N):

- tensors named ``blk.<i>.<rest>`` are decoder layer ``i``'s; for each position ``p`` of the plan,
  running source layer ``s``, every ``blk.<s>.<rest>`` is written again as ``blk.<p>.<rest>``, its
  bytes copied unchanged in whatever type they have (Q4_1, Q8_0, F32...: nothing is dequantized,
  and a repeated layer is written once per position, since GGUF has no tensor aliasing);
- every other tensor (embeddings, final norm, output) is copied as is; the decoder tensors take the
  place of the source's first ``blk.*`` tensor, in position order (``blk.0``, ``blk.1``, ...;
  some converters sort them as text: ``blk.1``, ``blk.10``), each layer's in the source's order;
- ``<arch>.block_count`` becomes the plan's depth; every other ``<arch>.*`` metadata array with N
  entries is a per-layer value (head counts, feed-forward sizes, sliding-window flags written as
  arrays) and is remapped by source layer; all other metadata (tokenizer, names, chat template)
  is copied as is, in the source's order, with the source's alignment.

Refused, before anything is written: architectures other than :data:`ARCHITECTURES`; plans naming
other models; and plans that would move a layer of gemma2 / gemma3 to a position of the other
attention kind, because llama.cpp derives sliding-window attention from the layer *index* (every
2nd, resp. 6th, layer attends globally) unless the file carries the flags as an array.

Writing streams: the source's header is walked once (:func:`read_layout`), the output's
metadata and tensor table are encoded by gguf's ``GGUFWriter`` (a few MiB at most: the
tokenizer), and the tensor data is read from the source file at its offsets in chunks of
:data:`CHUNK` bytes and written out, so memory stays far below the file's size.
"""

from __future__ import annotations

import mmap
import re
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frankensweep.export.base import ExportError, ExportRequest
from frankensweep.search import Plan

__all__ = [
    "ARCHITECTURES",
    "CHUNK",
    "GgufExport",
    "Layout",
    "prepare",
    "prepare_gguf",
    "read_layout",
]

#: GGUF architecture -> period of llama.cpp's sliding-window pattern by layer index (None: all
#: layers alike). Gemma2 alternates sliding and global layers; Gemma3 has 5 sliding, 1 global.
ARCHITECTURES: dict[str, int | None] = {
    "llama": None,
    "qwen2": None,
    "qwen3": None,
    "gemma2": 2,
    "gemma3": 6,
}

#: bytes read from the source and written out at a time
CHUNK = 8 << 20

_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")


@dataclass(frozen=True)
class _Tensor:
    """One tensor of the output: its name, its layout, where its bytes are in the source."""

    name: str
    shape: tuple[int, ...]  # elements, numpy order (slowest first)
    ggml_type: int  # GGMLQuantizationType
    offset: int  # absolute offset of its bytes in the source file
    nbytes: int


@dataclass(frozen=True)
class GgufExport:
    """Everything needed to write the file, computed before any byte is written."""

    source: Path
    plan: Plan
    architecture: str
    alignment: int
    header: bytes  # magic, counts, metadata and tensor infos, padded to the alignment
    tensors: tuple[_Tensor, ...]

    @property
    def size(self) -> int:
        """The output's exact length in bytes."""
        return len(self.header) + sum(_pad(t.nbytes, self.alignment) for t in self.tensors)

    def chunks(self, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The file's bytes in order: the header, then each tensor's bytes and padding."""
        yield self.header
        if progress:
            progress(len(self.header))
        with self.source.open("rb") as src:
            for tensor in self.tensors:
                src.seek(tensor.offset)
                left = tensor.nbytes
                while left:
                    block = src.read(min(CHUNK, left))
                    if not block:
                        raise ExportError(f"{self.source} ended inside tensor {tensor.name}")
                    left -= len(block)
                    yield block
                    if progress:
                        progress(len(block))
                padding = _pad(tensor.nbytes, self.alignment) - tensor.nbytes
                if padding:
                    yield bytes(padding)
                    if progress:
                        progress(padding)

    @property
    def total(self) -> int:
        """Progress units of :meth:`write`: bytes."""
        return self.size

    def write(self, out: Path, progress: Callable[[int], None] | None = None) -> int:
        """Write the file at ``out``; return the bytes written."""
        written = 0
        with out.open("wb") as sink:
            for block in self.chunks(progress):
                sink.write(block)
                written += len(block)
        return written


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def prepare(request: ExportRequest) -> GgufExport:
    """The exporter's entry point (see :mod:`frankensweep.export`)."""
    return prepare_gguf(request.model, request.plan)


def prepare_gguf(source: str | Path, plan: Plan | str) -> GgufExport:
    """Read ``source``'s metadata and tensor table and lay out ``plan``'s GGUF file.

    Raises :class:`ExportError` for anything the file cannot express; reads no tensor data.
    """
    path = Path(source).expanduser()
    if path.suffix.lower() != ".gguf":
        raise ExportError(
            f"GGUF export needs a .gguf base model, got {source}: use --format hf or mergekit"
        )
    if not path.is_file():
        raise ExportError(f"model file not found: {source}")
    plan = Plan.coerce(plan)
    if not plan.is_self_merge:
        raise ExportError(f"plan {plan} names other models: a GGUF export takes one base model")
    if plan.is_scaled:
        raise ExportError(
            f"plan {plan} scales slices: a GGUF export copies the source's tensors as they are; "
            "export the recipe (--format mergekit), whose scale mergekit applies"
        )
    layout = read_layout(path)
    arch = layout.string("general.architecture")
    if arch not in ARCHITECTURES:
        raise ExportError(
            f"GGUF architecture {arch!r} is not supported for export "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    depth = layout.fields.get(f"{arch}.block_count", _NO_FIELD).value
    if not isinstance(depth, int):
        raise ExportError(f"{source} has no {arch}.block_count: cannot tell its decoder depth")
    plan.validate(depth)
    sources = plan.layers()
    _check_attention_pattern(layout, arch, sources)
    tensors = _tensors(layout, depth, sources)
    return GgufExport(
        source=path,
        plan=plan,
        architecture=arch,
        alignment=layout.alignment,
        header=_header(layout, arch, depth, sources, tensors),
        tensors=tuple(tensors),
    )


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """One metadata entry: its value as GGUFWriter takes it (strings as bytes) and its types."""

    value: Any
    type: int  # GGUFValueType
    sub_type: int | None = None  # element type of an array


_NO_FIELD = _Field(None, -1)


@dataclass(frozen=True)
class _Entry:
    """One row of the source's tensor table."""

    name: str
    shape: tuple[int, ...]  # elements, numpy order (slowest first)
    ggml_type: int
    offset: int  # absolute, in the source file
    nbytes: int


@dataclass(frozen=True)
class Layout:
    """A GGUF file's metadata (in file order) and tensor table, without its tensor data."""

    fields: dict[str, _Field]
    tensors: list[_Entry]
    alignment: int

    def string(self, key: str) -> str:
        value = self.fields.get(key, _NO_FIELD).value
        if not isinstance(value, bytes):
            raise ExportError(f"the GGUF file has no string {key}")
        return value.decode("utf-8")


#: struct format of each fixed-size GGUF value type (GGUFValueType order: u8 i8 u16 i16 u32 i32
#: f32 bool, then u64 i64 f64)
_SCALAR = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


def read_layout(path: Path) -> Layout:
    """Parse the metadata and tensor table of the GGUF file at ``path``.

    A walk of the header with :mod:`struct` over a memory map: it keeps each value once, as a
    Python object (gguf's ``GGUFReader`` keeps several numpy views per array element: ~160 MiB
    for SmolLM2's 98,000 tokenizer entries, more than the whole 94 MiB file).
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            magic, version, tensor_count, kv_count = struct.unpack_from("<4sIQQ", data, 0)
            if magic != b"GGUF" or version not in (2, 3):
                raise ExportError(f"{path} is not a GGUF file of version 2 or 3")
            pos = 24
            fields: dict[str, _Field] = {}
            for _ in range(kv_count):
                key, pos = _read_string(data, pos)
                (kind,) = struct.unpack_from("<I", data, pos)
                fields[key.decode("utf-8")], pos = _read_value(data, pos + 4, kind)
            table: list[tuple[str, tuple[int, ...], int, int]] = []
            for _ in range(tensor_count):
                raw_name, pos = _read_string(data, pos)
                (n_dims,) = struct.unpack_from("<I", data, pos)
                dims = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
                ggml_type, offset = struct.unpack_from("<IQ", data, pos + 4 + 8 * n_dims)
                pos += 4 + 8 * n_dims + 12
                table.append((raw_name.decode("utf-8"), dims, ggml_type, offset))
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise ExportError(f"{path} is not a readable GGUF file: {exc}") from None
    alignment = fields.get("general.alignment", _Field(32, 4)).value
    start = _pad(pos, alignment)
    tensors = []
    for name, dims, ggml_type, offset in table:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except (KeyError, ValueError):
            raise ExportError(f"tensor {name} has unknown ggml type {ggml_type}") from None
        elements = 1
        for dim in dims:
            elements *= dim
        shape = tuple(reversed(dims))
        tensors.append(_Entry(name, shape, ggml_type, start + offset, elements // block * size))
    return Layout(fields, tensors, alignment)


def _read_string(data: mmap.mmap, pos: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("<Q", data, pos)
    return data[pos + 8 : pos + 8 + length], pos + 8 + length


def _read_value(data: mmap.mmap, pos: int, kind: int) -> tuple[_Field, int]:
    if kind in _SCALAR:
        (value,) = struct.unpack_from("<" + _SCALAR[kind], data, pos)
        return _Field(value, kind), pos + struct.calcsize(_SCALAR[kind])
    if kind == _STRING:
        value, pos = _read_string(data, pos)
        return _Field(value, kind), pos
    if kind != _ARRAY:
        raise ValueError(f"unknown metadata value type {kind}")
    sub, count = struct.unpack_from("<IQ", data, pos)
    pos += 12
    if sub in _SCALAR:
        fmt = f"<{count}{_SCALAR[sub]}"
        return _Field(list(struct.unpack_from(fmt, data, pos)), kind, sub), pos + struct.calcsize(
            fmt
        )
    if sub != _STRING:
        raise ValueError("nested metadata arrays are not supported")
    values = []
    for _ in range(count):
        value, pos = _read_string(data, pos)
        values.append(value)
    return _Field(values, kind, sub), pos


# -- checking and laying out -----------------------------------------------------------------


def _check_attention_pattern(layout: Layout, arch: str, sources: list[int]) -> None:
    """Refuse a plan whose positions would change attention kind under llama.cpp's index rule."""
    period = ARCHITECTURES[arch]
    if period is None:
        return
    if arch == "gemma3" and not layout.fields.get(f"{arch}.attention.sliding_window"):
        return  # no sliding window: every layer attends globally
    pattern = layout.fields.get(f"{arch}.attention.sliding_window_pattern")
    if pattern is not None:
        if pattern.type == _ARRAY:
            return  # per-layer flags: remapped like any per-layer array
        period = int(pattern.value)

    def sliding(layer: int) -> bool:
        return period == 0 or layer % period < period - 1

    kinds = {True: "sliding-window", False: "global"}
    for position, layer in enumerate(sources):
        if sliding(position) != sliding(layer):
            raise ExportError(
                f"{arch} cannot be exported for this plan: llama.cpp makes every {period}th "
                f"layer by index global and the others sliding-window, so position {position} "
                f"would attend {kinds[sliding(position)]} while its source layer {layer} attends "
                f"{kinds[sliding(layer)]}; keep each layer at a position of the same kind "
                f"(e.g. repeat blocks of {period} layers) or use --format hf"
            )


def _tensors(layout: Layout, depth: int, sources: list[int]) -> list[_Tensor]:
    """The output's tensors in order: every position's decoder tensors where the first was."""
    layers: dict[int, list[tuple[str, _Entry]]] = {}
    before: list[_Tensor] = []
    after: list[_Tensor] = []
    for entry in layout.tensors:
        match = _BLOCK.fullmatch(entry.name)
        if match is None:
            (after if layers else before).append(_tensor(entry.name, entry))
            continue
        layer = int(match.group(1))
        if layer >= depth:
            raise ExportError(f"tensor {entry.name} is beyond the file's block_count {depth}")
        layers.setdefault(layer, []).append((match.group(2), entry))
    missing = sorted(set(range(depth)) - layers.keys())
    if missing:
        raise ExportError(f"the GGUF file has no tensors for layer(s) {missing}")
    decoder = [
        _tensor(f"blk.{position}.{rest}", entry)
        for position, layer in enumerate(sources)
        for rest, entry in layers[layer]
    ]
    return before + decoder + after


def _tensor(name: str, entry: _Entry) -> _Tensor:
    return _Tensor(name, entry.shape, entry.ggml_type, entry.offset, entry.nbytes)


def _header(
    layout: Layout, arch: str, depth: int, sources: list[int], tensors: list[_Tensor]
) -> bytes:
    """The output's header, metadata and tensor infos, encoded by gguf's ``GGUFWriter``."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter
    from gguf.quants import quant_shape_to_byte_shape

    with tempfile.TemporaryDirectory(prefix="frankensweep-gguf-") as tmp:
        target = Path(tmp) / "header.gguf"
        writer = GGUFWriter(target, arch)  # writes general.architecture first
        for key, field in layout.fields.items():
            if key == "general.architecture":
                continue
            if key == "general.alignment":
                writer.add_custom_alignment(field.value)
                continue
            value = field.value
            if key == f"{arch}.block_count":
                value = len(sources)
            elif field.type == _ARRAY and key.startswith(f"{arch}.") and len(value) == depth:
                value = [value[layer] for layer in sources]  # one entry per layer: remapped
            if field.type == _ARRAY and not value:
                raise ExportError(f"metadata {key} is an empty array: the GGUF writer refuses it")
            sub = None if field.sub_type is None else GGUFValueType(field.sub_type)
            writer.add_key_value(key, value, GGUFValueType(field.type), sub)
        for tensor in tensors:
            kind = GGMLQuantizationType(tensor.ggml_type)
            writer.add_tensor_info(
                tensor.name,
                quant_shape_to_byte_shape(tensor.shape, kind),
                np.dtype(np.uint8),
                tensor.nbytes,
                raw_dtype=kind,
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        header = target.read_bytes()
    return header + bytes(_pad(len(header), writer.data_alignment) - len(header))
