"""Weight-only quantized projections on torch's own CPU kernels, and the quantizers that fill them.

Two layouts, both multiplied by ATen kernels (no hand-written kernels here):
  - int8, one scale per output row:      w[n, k] = q[n, k] * scale[n]
    -> torch.ops.aten._weight_int8pack_mm(x, q [N, K] int8, scale [N])
  - int4, groups of 32 along the input:  w[n, k] = q[n, k] * d[n, g] + m[n, g],  g = k // 32
    -> torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed [N, K/2] uint8, 32, sz [K/32, N, 2])
       where the kernel computes (q - 8) * scale + zero, so scale = d and zero = m + 8 d.

The int4 form is exactly GGUF's Q4_1 (w = q d + m) and Q4_0 (w = (q - 8) d, so m = -8 d): their
blocks are 32 weights along a row, so their nibbles and scales are repacked, never rounded again.
The kernels take bfloat16 input (their float32 input path is several times slower). Between the
projections a quantized model computes in float32 on every CPU. On AVX2 bfloat16 attention and
element-wise operations are emulated and cost more than the conversions (0.73 ms vs 0.13 ms for one
SmolLM2 attention over 800 cached positions on a 2-core AVX2 EPYC). On CPUs with AVX-512 BF16 and
AMX they are native, but rounding every intermediate to bfloat16 made a position's result depend on
how many positions ran with it: a prompt extended from its cached prefix gave other greedy tokens
than the same prompt prefilled at once (tests/test_lanes.py, on a 2-core Xeon with AMX), and the
engine's reuse and losslessness rest on that equality.
"""

from __future__ import annotations

import torch
from torch import nn

DENSE_MIN_ROWS = 32
"""Forwards over at least this many positions (prompt prefills) use the float copy of a small
model's weights when it has one: the weight-only kernels are built for few rows, and on a 2-core
AVX2 CPU a 256-row product through the int4 kernel took 1.7x the time of MKL's float32 one."""
GROUP = 32  # int4 group size: GGUF's Q4_0/Q4_1 block length
INT4_ROWS = 16  # the int4 kernel's packing takes output widths that are multiples of this
INT8_COLS = 16
"""torch 2.13's int8 kernel crashes on input widths that are not multiples of this: of 8 on AVX2,
and of 16 on AVX-512 (its path from 4 input rows on), where each row of bfloat16 input must start
on a 32-byte boundary. Real models' widths are multiples of 64."""
ALIGNMENT = 64
"""The same AVX-512 path also crashes on an input, weight or scale that does not start on a 16- or
32-byte boundary; torch allocates at 64 bytes, safetensors files place tensors at 8."""
KERNEL_DTYPE = torch.bfloat16


def activation_dtype() -> torch.dtype:
    """float32, on every CPU (see the module doc)."""
    return torch.float32


class Int8Proj(nn.Module):
    """y = x @ (q * scale).T with q: [out, in] int8 and one scale per output row."""

    def __init__(self, d_in: int, d_out: int, dtype: torch.dtype = KERNEL_DTYPE):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.register_buffer("q", torch.empty(d_out, d_in, dtype=torch.int8))
        self.register_buffer("scale", torch.empty(d_out, dtype=dtype))
        self.register_buffer("dense", None)  # [in, out] float32, small models only: see keep_dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]; the kernel takes 2-D input
        rows = x.numel() // self.d_in
        if self.dense is not None and rows >= DENSE_MIN_ROWS:
            return dense_product(x, self.dense)
        flat = aligned(x.reshape(-1, self.d_in).to(KERNEL_DTYPE).contiguous())
        y = torch.ops.aten._weight_int8pack_mm(flat, self.q, self.scale)
        return y.view(*x.shape[:-1], self.d_out).to(x.dtype)

    def fill(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        assert q.shape == self.q.shape, f"int8 weight {tuple(q.shape)} does not fit {tuple(self.q.shape)}"
        self.q = aligned(q.to(torch.int8).contiguous())
        self.scale = aligned(scale.to(self.scale.dtype).contiguous())


class Int4Proj(nn.Module):
    """y = x @ W.T with W stored as 4-bit codes in groups of 32 along the input (see module doc)."""

    def __init__(self, d_in: int, d_out: int, dtype: torch.dtype = KERNEL_DTYPE):
        super().__init__()
        assert d_in % GROUP == 0, f"int4 needs the input width ({d_in}) to be a multiple of {GROUP}"
        self.d_in, self.d_out = d_in, d_out
        self.register_buffer("packed", torch.empty(d_out, d_in // 2, dtype=torch.uint8))
        self.register_buffer("sz", torch.empty(d_in // GROUP, d_out, 2, dtype=dtype))
        self.register_buffer("dense", None)  # [in, out] float32, small models only: see keep_dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.d_in
        if self.dense is not None and rows >= DENSE_MIN_ROWS:
            return dense_product(x, self.dense)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, self.d_in).to(KERNEL_DTYPE), self.packed, GROUP, self.sz)
        return y.view(*x.shape[:-1], self.d_out).to(x.dtype)

    def fill(self, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> None:
        """q: [out, in] codes 0..15; d, m: [out, in/32] so that w = q * d + m."""
        assert q.shape == (self.d_out, self.d_in), f"int4 codes {tuple(q.shape)} do not fit {(self.d_out, self.d_in)}"
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        zero = m.float() + 8 * d.float()
        self.sz = torch.stack((d.float(), zero), dim=-1).transpose(0, 1).to(self.sz.dtype).contiguous()


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` (contiguous), or a copy of it on an `ALIGNMENT` boundary when it is not on one (a slice
    of a bigger tensor, a tensor read from a file): the int8 kernel crashes on it (see ALIGNMENT)."""
    if torch.compiler.is_compiling():  # inductor allocates its own buffers, at 64 bytes
        return t
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone(memory_format=torch.contiguous_format)


def dense_product(x: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """x @ dense rounded as the kernels round: bfloat16 input, bfloat16 output."""
    return (x.to(KERNEL_DTYPE).to(dense.dtype) @ dense).to(KERNEL_DTYPE).to(x.dtype)


def keep_dense(proj: nn.Module, q: torch.Tensor) -> None:
    """Give `proj` a float32 copy of its weight for long forwards, stored [in, out] (MKL streams a
    wide weight faster that way; see engine/model.py's Proj). `q`: its int8 or int4 codes [out, in].
    The copy is what the kernel multiplies by, from the same bfloat16 scales, and `dense_product`
    rounds input and output as the kernel does, so the two paths differ only by float32 summation
    order. CachedModel also runs the positions whose logits it returns through the kernels (see
    `prefill_split`), so greedy output never depends on which path a position took."""
    if isinstance(proj, Int8Proj):
        w = q.float() * proj.scale.float()[:, None]
    else:
        n, k = q.shape
        scale, zero = proj.sz.float().transpose(0, 1).unbind(-1)  # [out, in/32] each
        w = ((q.float().view(n, k // GROUP, GROUP) - 8) * scale[..., None] + zero[..., None]).view(n, k)
    proj.dense = w.t().contiguous()


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of a float [out, in] weight: (q, scale) with w ~ q * scale[:, None]."""
    w = w.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def int4_groups(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 in groups of 32 along the input (min/max, like Q4_1): (q, d, m) with
    w ~ q * d + m per group."""
    w = w.float()
    n, k = w.shape
    assert k % GROUP == 0, f"int4 needs the input width ({k}) to be a multiple of {GROUP}"
    g = w.view(n, k // GROUP, GROUP)
    lo, hi = g.amin(dim=-1), g.amax(dim=-1)
    d = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((g - lo[..., None]) / d[..., None]).clamp_(0, 15).to(torch.uint8)
    return q.view(n, k), d, lo


def dequant_int4(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n, k = q.shape
    return (q.float().view(n, k // GROUP, GROUP) * d[..., None] + m[..., None]).view(n, k)


def make_proj(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "float":
        from .model import Proj

        return Proj(d_in, d_out)
    return {"int8": Int8Proj, "int4": Int4Proj}[kind](d_in, d_out)
