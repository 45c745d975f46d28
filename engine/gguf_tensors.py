"""Reading a GGUF Llama one tensor at a time, under Hugging Face names, without a float copy.

`GGUFWeights(path)[hf_name]` gives a `SourceWeight`: the tensor's raw blocks, memory-mapped by
gguf-py's reader. Q4_0 and Q4_1 decode straight to int4 codes with their block scales and minimums
(w = q d + m), Q8_0 to int8 codes with block scales; any other type (K-quants, f16, ...) is
dequantised by gguf-py, this one tensor only. llama.cpp's converter permutes the rows of the q and
k projections for its rotary layout; the inverse row permutation is applied here, to codes and
scales alike (rows are output channels, blocks run along a row, so this is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import SpectabError, first_line

BLOCK = 32
NATIVE_INT4 = ("Q4_0", "Q4_1")


@dataclass
class SourceWeight:
    """One [out, in] weight: float, or GGUF blocks that may map onto our kernels directly."""
    shape: tuple[int, int]
    kind: str
    """'F32', 'BF16', ... for float weights; the GGML type name (Q4_0, Q4_K, ...) for GGUF blocks."""
    _float: torch.Tensor | None = None
    _blocks: np.ndarray | None = None  # [rows, bytes per row] uint8
    _rows: np.ndarray | None = None  # row order to apply (q/k un-permutation), or None

    def float(self) -> torch.Tensor:
        if self._float is not None:
            return self._float.float()
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        try:
            w = dequantize(self._blocks, GGMLQuantizationType[self.kind])
        except (NotImplementedError, KeyError, ValueError) as err:
            raise SpectabError(f"cannot read GGUF tensor type {self.kind}: {first_line(err)}") from None
        w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).view(self.shape)
        return w[torch.from_numpy(self._rows)] if self._rows is not None else w

    def int8(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q [out, in] int8, d [out, in/32] float32) with w = q d, for Q8_0 blocks."""
        assert self.kind == "Q8_0", f"{self.kind} blocks are not int8"
        rows, cols = self.shape
        b = self._blocks if self._rows is None else self._blocks[self._rows]
        b = b.reshape(rows, cols // BLOCK, -1)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = np.ascontiguousarray(b[..., 2:34]).view(np.int8).reshape(rows, cols)
        return torch.from_numpy(q), torch.from_numpy(d)

    def int4(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(q [out, in] 0..15, d, m [out, in/32]) with w = q d + m, when the blocks are Q4_0/Q4_1."""
        if self.kind not in NATIVE_INT4:
            return None
        rows, cols = self.shape
        b = self._blocks if self._rows is None else self._blocks[self._rows]
        b = b.reshape(rows, cols // BLOCK, -1)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        if self.kind == "Q4_0":  # w = (q - 8) d
            m, qs = -8 * d, b[..., 2:18]
        else:  # Q4_1: w = q d + m
            m, qs = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32), b[..., 4:20]
        # a block's 16 bytes hold elements 0..15 in their low nibbles and 16..31 in their high ones
        q = np.concatenate((qs & 0x0F, qs >> 4), axis=-1).reshape(rows, cols)
        return torch.from_numpy(q), torch.from_numpy(d), torch.from_numpy(m)


def reverse_rope_permutation(rows: int, n_head: int) -> np.ndarray:
    """Row order undoing llama.cpp's q/k permutation (n_head: query heads for q, kv heads for k)."""
    dim = rows // n_head // 2
    return np.arange(rows).reshape(n_head, dim, 2).swapaxes(2, 1).reshape(rows)


_LAYER = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf.split(".", 3)  # model.layers.{i}.{rest}
    return f"blk.{i}.{_LAYER[rest]}"


class GGUFWeights:
    """Tensors of a GGUF Llama by Hugging Face name; `config` is its transformers config dict."""

    def __init__(self, path: Path):
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        try:
            self.reader = GGUFReader(str(path))
            self.config = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
        except Exception as err:
            raise SpectabError(f"cannot read GGUF file {path}: {first_line(err)}") from err
        if self.config.get("model_type") != "llama":
            raise SpectabError(f"{path} is a '{self.config.get('model_type')}' model; spectab runs Llama-architecture models")
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.path = path

    def __contains__(self, hf: str) -> bool:
        return gguf_name(hf) in self.tensors

    def __getitem__(self, hf: str) -> SourceWeight:
        name = gguf_name(hf)
        if name not in self.tensors:
            raise SpectabError(f"{self.path} has no tensor '{name}'; is it a Llama model?")
        t = self.tensors[name]
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dimensions innermost first
        kind = t.tensor_type.name
        rows = None
        heads = self.config["num_attention_heads"]
        if ".attn_q." in name:
            rows = reverse_rope_permutation(shape[0], heads)
        elif ".attn_k." in name:
            rows = reverse_rope_permutation(shape[0], self.config.get("num_key_value_heads") or heads)
        if kind in ("F32", "F16"):
            w = torch.from_numpy(np.asarray(t.data).astype(np.float32)).view(shape)
            return SourceWeight(shape, kind, _float=w[torch.from_numpy(rows)] if rows is not None else w)
        return SourceWeight(shape, kind, _blocks=np.asarray(t.data).reshape(shape[0], -1), _rows=rows)

    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
        except Exception as err:
            raise SpectabError(f"cannot read the tokenizer of GGUF file {self.path}: {first_line(err)}") from err
