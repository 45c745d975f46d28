"""A [rows, width] weight read one row at a time, exactly as its source had it: the embedding table
of a quantized model, and the rows that re-score its output head's best candidates.

Kinds, by source:
  - `q8`: GGUF Q8_0 blocks, int8 codes and one scale per 32 (w = q d);
  - `q4`: GGUF Q4_0/Q4_1 blocks, two 4-bit codes a byte and a scale and minimum per 32 (w = q d + m);
  - `bf16`: anything else (float files, K-quants), rounded to bfloat16 as before this module.
The block kinds read back bit for bit what gguf-py's dequantisation (the float path) gives, in under
a third (q4) or about half (q8) of a bfloat16 table's memory.

Re-scoring (`rescore`): the weight-only kernels round the output head's logits to bfloat16 (steps of
0.125 between 16 and 32) and an int8 head from Q8_0 blocks has one scale per row instead of one per
32 weights, so near-ties between the top tokens go the other way more often than the weights
alone would make them. Recomputing the top RESCORE_TOP logits in float32 from exact rows costs a
few thousand multiply-adds a position; on SmolLM2-135M's Q4_1 GGUF (`auto`, 8 stdlib prompts of
about 500 tokens) it raised top-1 agreement with the float model from 96.9% to 99.0% (README,
benchmark 9, the accuracy before and after). Each position's logits still depend on that
position's hidden state alone, so a verify's rows equal decode steps' and speculative output stays
the quantized target's own.
"""

from __future__ import annotations

import torch
from torch import nn

from .gguf_tensors import NATIVE_INT4, SourceWeight

BLOCK = 32
RESCORE_TOP = 4
"""Candidates re-scored per position. On SmolLM2, 2 and 8 agreed with the float model as often as 4
(a check by hand, not a benchmark); 4 leaves a margin at little cost."""
KINDS = ("q8", "q4", "bf16")


def table_kind(source: SourceWeight) -> str:
    if source.kind == "Q8_0":
        return "q8"
    return "q4" if source.kind in NATIVE_INT4 else "bf16"


class RowTable(nn.Module):
    """`table(ids)` -> float32 rows [*ids.shape, width]. Built empty (`RowTable(kind, rows, width)`,
    the shapes a packed file is read into) or from a source (`RowTable.of(source)`)."""

    def __init__(self, kind: str, rows: int, width: int):
        super().__init__()
        assert kind in KINDS, kind
        assert kind == "bf16" or width % BLOCK == 0, f"{kind} rows need a width ({width}) in blocks of {BLOCK}"
        self.kind, self.rows, self.width = kind, rows, width
        if kind == "bf16":
            self.register_buffer("weight", torch.empty(rows, width, dtype=torch.bfloat16))
        elif kind == "q8":
            self.register_buffer("q", torch.empty(rows, width, dtype=torch.int8))
            self.register_buffer("d", torch.empty(rows, width // BLOCK, dtype=torch.float16))
        else:
            self.register_buffer("packed", torch.empty(rows, width // 2, dtype=torch.uint8))  # even | odd << 4
            self.register_buffer("d", torch.empty(rows, width // BLOCK, dtype=torch.float16))
            self.register_buffer("m", torch.empty(rows, width // BLOCK, dtype=torch.float16))

    @classmethod
    def of(cls, source: SourceWeight) -> "RowTable":
        rows, width = source.shape
        kind = table_kind(source) if width % BLOCK == 0 else "bf16"
        if kind == "q8":
            q, d = source.int8()
            scales = (d,)
        elif kind == "q4":
            q, d, m = source.int4()
            scales = (d, m)
        # the files' scales are float16; Q4_0's minimum -8 d is too unless it overflows
        if kind != "bf16" and not all(torch.equal(s.half().float(), s) for s in scales):
            kind = "bf16"
        table = cls(kind, rows, width)
        if kind == "bf16":
            table.weight = source.float().to(torch.bfloat16).contiguous()
        elif kind == "q8":
            table.q, table.d = q, d.half()
        else:
            q = q.to(torch.uint8)
            table.packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
            table.d, table.m = d.half(), m.half()
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.kind == "bf16":
            return self.weight[ids].float()
        blocks = (*ids.shape, self.width // BLOCK, BLOCK)
        if self.kind == "q8":
            return (self.q[ids].float().view(blocks) * self.d[ids].float()[..., None]).view(*ids.shape, self.width)
        p = self.packed[ids]
        q = torch.stack((p & 0x0F, p >> 4), dim=-1).float().view(blocks)
        # q d + m in this order, as gguf-py computes Q4_1 (and (q - 8) d for Q4_0 is exact either way)
        return (q * self.d[ids].float()[..., None] + self.m[ids].float()[..., None]).view(*ids.shape, self.width)

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.rows}x{self.width}"


def rescore(logits: torch.Tensor, h: torch.Tensor, rows: RowTable) -> torch.Tensor:
    """`logits` [S, vocab] float32 from the kernels for hidden states `h` [S, width]: the top
    RESCORE_TOP of each row recomputed in float32 from the exact rows (see the module doc)."""
    top = logits.topk(min(RESCORE_TOP, logits.shape[-1]), dim=-1).indices  # [S, k]
    # an element-wise product and a sum over the last dimension: one row's result does not depend
    # on how many rows ran with it (a batched matmul may pick its kernel by batch size)
    exact = (h.float()[:, None, :] * rows(top)).sum(-1)
    return logits.scatter(-1, top, exact)
