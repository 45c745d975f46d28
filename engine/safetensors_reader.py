"""Reading a safetensors file into fresh tensors of our own, without mapping the file.

`safe_open` maps the whole file and hands out views of the mapping, placed on the 8-byte
boundaries the format uses. torch 2.13's AVX-512 int8 kernel crashes on tensors off a 64-byte one
(engine/quant.py, ALIGNMENT), so the packed-model loader copied every view, and while the file
stayed mapped the process held both: a load of the CodeLlama-7b shape peaked at 8.7 GB for a
4.2 GB model (benchmark 9). Read here into buffers torch allocates (64-byte aligned), the peak is the model
itself; and a cache file truncated or rewritten in place by someone else cannot fault a running
server later, as a mapped one would (SIGBUS).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
MAX_HEADER = 100 * 2 ** 20  # the format's own limit


def read_metadata(path: str | Path) -> dict[str, str]:
    """The file's metadata, read from its header alone."""
    with open(path, "rb", buffering=0) as f:
        return _header(f)[0].get("__metadata__") or {}


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the file by name; ValueError when it is not a whole safetensors file."""
    with open(path, "rb", buffering=0) as f:
        header, base, size = _header(f)
        header.pop("__metadata__", None)
        tensors = {}
        for name, entry in header.items():
            dtype = _DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise ValueError(f"{name}: dtype {entry.get('dtype')} not read here")
            start, end = entry["data_offsets"]
            t = torch.empty(entry["shape"], dtype=dtype)
            nbytes = t.numel() * t.element_size()
            if end - start != nbytes or base + end > size:
                raise ValueError(f"{name}: bytes {start}..{end} do not hold {entry['shape']} {entry['dtype']} in a file of {size}")
            f.seek(base + start)
            view = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if nbytes else None
            got = 0
            while got < nbytes:  # readinto may return less than asked at once
                k = f.readinto(view[got:])
                if not k:
                    raise ValueError(f"{name}: the file ends inside it")
                got += k
            tensors[name] = t
    return tensors


def _header(f) -> tuple[dict, int, int]:
    """(the header, where the data starts, the file's size)."""
    size = f.seek(0, 2)
    f.seek(0)
    head = f.read(8)
    if len(head) != 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_HEADER, size - 8):
        raise ValueError(f"a header of {n} bytes in a file of {size}")
    return json.loads(f.read(n)), 8 + n, size
