"""Training batches from prepared datasets: packed windows, a weighted mixture, a fixed order.

The sequence at global index g (step * sequences_per_step + position in the step) depends only on g
and the seed, never on the number of ranks or on what ran before, so:
  - one process and N processes see the same sequences in a step (each rank takes its slice);
  - resuming is setting the step: the data position is the step number.
Within a dataset, windows are visited in an affine permutation of their indices per epoch
((a * j + b) mod W, a coprime with W): O(1) memory however large the corpus.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from engine.errors import SpectabError

from .shards import read_shard

PATTERN = 1000  # the mixture repeats its dataset choices every 1000 sequences


class Dataset:
    """The concatenated token stream of one split of a prepared folder, cut into windows of
    seq_len + 1 tokens (inputs and the next-token targets)."""

    def __init__(self, folder: str | Path, split: str, seq_len: int, fingerprint: bytes | None = None):
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise SpectabError(f"{self.folder} is not a prepared dataset (no manifest.json); run `spectab train prepare --out {self.folder} ...`")
        manifest = json.loads(manifest_path.read_text())
        if not manifest.get("done"):
            raise SpectabError(f"preparing {self.folder} did not finish; run the same `spectab train prepare` again to resume it")
        if fingerprint is not None and bytes.fromhex(manifest["fingerprint"]) != fingerprint:
            raise SpectabError(f"{self.folder} was prepared with tokenizer {manifest['tokenizer']}, which is not the configured one; "
                               "set --tokenizer to it or prepare the data again")
        self.vocab_size = manifest["vocab_size"]
        self.shards = [read_shard(self.folder / s["file"], bytes.fromhex(manifest["fingerprint"])) for s in manifest["shards"][split]]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self.tokens = int(self.offsets[-1])
        self.seq_len = seq_len
        self.windows = (self.tokens - 1) // seq_len
        if self.windows < 1:
            raise SpectabError(f"the {split} split of {self.folder} has {self.tokens} tokens, too few for one sequence of "
                               f"{seq_len}; prepare more data or lower --seq_len")

    def window(self, i: int) -> np.ndarray:
        return self._slice(i * self.seq_len, i * self.seq_len + self.seq_len + 1)

    def _slice(self, start: int, end: int) -> np.ndarray:
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts = []
        while start < end:
            shard = self.shards[first]
            lo = start - int(self.offsets[first])
            take = min(end - start, len(shard) - lo)
            parts.append(shard[lo:lo + take])
            start += take
            first += 1
        return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])


class Mixture:
    def __init__(self, datasets: list[Dataset], weights: list[float], seed: int, transform=None):
        if not datasets:
            raise SpectabError("no training data: give prepared folders with --data")
        if any(w <= 0 for w in weights):
            raise SpectabError("mixture weights must be positive")
        self.datasets, self.seed = datasets, seed
        self.transform = transform  # (window, g) -> window, e.g. fim.FimTransform
        total = sum(weights)
        # largest-remainder counts per PATTERN sequences, spread evenly through the pattern
        quota = [w / total * PATTERN for w in weights]
        counts = [int(q) for q in quota]
        for d in sorted(range(len(quota)), key=lambda d: quota[d] - counts[d], reverse=True)[: PATTERN - sum(counts)]:
            counts[d] += 1
        slots = sorted((int((k + 0.5) * PATTERN / c), d) for d, c in enumerate(counts) for k in range(c))
        self.pattern = [d for _, d in slots]
        self.per_pattern = counts
        self.rank_in_pattern = []
        seen = [0] * len(datasets)
        for d in self.pattern:
            self.rank_in_pattern.append(seen[d])
            seen[d] += 1

    def sequence(self, g: int) -> np.ndarray:
        """The global sequence number g."""
        d = self.pattern[g % PATTERN]
        k = (g // PATTERN) * self.per_pattern[d] + self.rank_in_pattern[g % PATTERN]
        ds = self.datasets[d]
        epoch, j = divmod(k, ds.windows)
        window = ds.window(_affine(j, ds.windows, self.seed, d, epoch))
        return self.transform(window, g) if self.transform is not None else window

    def batch(self, first: int, count: int) -> torch.Tensor:
        """Sequences first .. first+count-1 as int64 [count, seq_len + 1]."""
        return torch.from_numpy(np.stack([self.sequence(g).astype(np.int64) for g in range(first, first + count)]))


def _affine(j: int, n: int, *key) -> int:
    if n == 1:
        return 0
    h = hashlib.sha256(repr(key).encode()).digest()
    a = int.from_bytes(h[:8], "little") % n or 1
    while math.gcd(a, n) != 1:
        a = a % (n - 1) + 1
    b = int.from_bytes(h[8:16], "little") % n
    return (a * j + b) % n


def parse_data(specs: tuple[str, ...]) -> list[tuple[str, float]]:
    """`PATH` or `PATH:WEIGHT` -> (path, weight)."""
    out = []
    for spec in specs:
        path, sep, weight = spec.rpartition(":")
        if sep and not Path(spec).exists():
            try:
                out.append((path, float(weight)))
                continue
            except ValueError:
                pass
        out.append((spec, 1.0))
    return out
