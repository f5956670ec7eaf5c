"""A GGUF file's metadata and tensor table, read in one pass.

`gguf.GGUFReader` builds a numpy view per array item, which takes ~10 s for the 98k token and merge
strings of a 49k-id vocabulary; this reads the same layout (GGUF v2/v3, little-endian) with
`struct` in well under a second and maps tensor data without copying. Dequantization stays the
`gguf` package's.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .llama_config import UnsupportedSource

MAGIC = b"GGUF"
STRING, ARRAY = 8, 9
# GGUF value types (gguf-py's GGUFValueType) -> struct formats.
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
         7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


@dataclass
class GGUFTensor:
    """One tensor: its name, ggml type and raw bytes shaped (rows..., bytes per row)."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # numpy order (outermost first)
    data: np.ndarray  # uint8


class _Cursor:
    def __init__(self, buf: mmap.mmap):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        self.pos += n
        return self.buf[self.pos - n:self.pos].decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in NUMPY:  # numbers in one read
                arr = np.frombuffer(self.buf, NUMPY[item], count, self.pos)
                self.pos += arr.nbytes
                return arr.tolist()
            return [self.value(item) for _ in range(count)]
        if kind not in SCALARS:
            raise UnsupportedSource(f"GGUF value type {kind} is unknown")
        return self.unpack(SCALARS[kind])


def read_gguf_file(path: Path) -> tuple[dict[str, Any], list[GGUFTensor]]:
    """The metadata (key -> Python value) and the tensors (memory-mapped) of a GGUF file."""
    import gguf

    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise UnsupportedSource(f"cannot read {path}: {e}") from None
    cur = _Cursor(buf)
    if buf[:4] != MAGIC:
        raise UnsupportedSource(f"{path} is not a GGUF file (no GGUF magic)")
    cur.pos = 4
    version, n_tensors, n_kv = cur.unpack("I"), cur.unpack("Q"), cur.unpack("Q")
    if version not in (2, 3):
        raise UnsupportedSource(f"GGUF version {version} is not supported (2 or 3)")
    meta = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.unpack("I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.unpack("Q") for _ in range(cur.unpack("I"))]
        infos.append((name, dims, cur.unpack("I"), cur.unpack("Q")))
    align = meta.get("general.alignment", 32)
    start = -(-cur.pos // align) * align
    tensors = []
    for name, dims, kind, offset in infos:
        try:
            qtype = gguf.GGMLQuantizationType(kind)
        except ValueError:
            raise UnsupportedSource(f"GGUF tensor {name} has unknown type id {kind}") from None
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        shape = tuple(reversed(dims))
        row_bytes = dims[0] // block * size
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        data = np.frombuffer(buf, np.uint8, rows * row_bytes, start + offset)
        tensors.append(GGUFTensor(name, qtype, shape, data.reshape(*shape[:-1], row_bytes)))
    return meta, tensors
