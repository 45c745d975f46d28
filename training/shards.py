"""Token shards: a flat array of token ids behind a small header that is checked on every read.

    offset  size  field
    0       8     magic b"SPECTOK\\x00"
    8       4     version (1)
    12      4     bytes per token (2 = uint16, 4 = uint32)
    16      8     token count
    24      4     vocabulary size of the tokenizer
    28      16    tokenizer fingerprint (first 16 bytes of sha256 over its token strings)
    44      20    zero
    64      ...   tokens, little-endian
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from engine.errors import SpectabError

MAGIC = b"SPECTOK\x00"
VERSION = 1
HEADER = struct.Struct("<8sIIQI16s20x")
assert HEADER.size == 64


def tokenizer_fingerprint(pieces: list[str]) -> bytes:
    h = hashlib.sha256()
    for piece in pieces:
        h.update(piece.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()[:16]


def write_shard(path: Path, tokens: np.ndarray, vocab_size: int, fingerprint: bytes) -> None:
    """Write atomically: a crash leaves no half shard under the final name."""
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    data = np.ascontiguousarray(tokens, dtype=dtype)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, data.itemsize, len(data), vocab_size, fingerprint))
        f.write(data.tobytes())
    os.replace(tmp, path)


def read_shard(path: Path, fingerprint: bytes | None = None) -> np.ndarray:
    """The shard's tokens as a read-only memory map, after checking its header."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
    except FileNotFoundError:
        raise SpectabError(f"shard {path} is missing; re-run `spectab train prepare` for its dataset (it resumes)") from None
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise SpectabError(f"{path} is not a spectab token shard; prepare data with `spectab train prepare`")
    magic, version, width, count, vocab, print_ = HEADER.unpack(head)
    if version != VERSION:
        raise SpectabError(f"{path} is shard format {version}, this spectab reads {VERSION}; prepare the data again")
    expected = HEADER.size + width * count
    actual = path.stat().st_size
    if actual != expected:
        raise SpectabError(f"{path} is truncated or corrupt: its header says {count} tokens ({expected} bytes), "
                           f"the file has {actual} bytes; delete it and re-run `spectab train prepare` (it resumes)")
    if fingerprint is not None and print_ != fingerprint:
        raise SpectabError(f"{path} was tokenized with a different tokenizer than the one configured; "
                           "use the tokenizer the data was prepared with, or prepare the data again")
    dtype = {2: np.uint16, 4: np.uint32}.get(width)
    if dtype is None:
        raise SpectabError(f"{path} has {width}-byte tokens; expected 2 or 4")
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER.size, shape=(count,))


def shard_vocab(path: Path) -> int:
    with open(path, "rb") as f:
        return HEADER.unpack(f.read(HEADER.size))[4]
