"""A Llama decoder with a static KV cache, small enough to read in one sitting.

The cache is preallocated for `capacity` positions and written by position: a forward over tokens
at positions [start, start+S) writes their keys/values there and attends to [0, start+S). Rolling
back rejected speculative tokens is therefore free (the next forward simply starts earlier and
overwrites them), and so is reusing a cached prompt prefix.

Weights are the Hugging Face `LlamaForCausalLM` ones; q/k/v and gate/up are fused at load time so a
decode step launches fewer matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .row_table import rescore


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # one fused call instead of six: 11 us against 24 us on SmolLM2's 576 wide rows (2-core
            # AVX-512 EPYC), 60 calls a decode step; each row is normalised on its own, as below
            return torch.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # bfloat16: normalise in float32 like the reference, cast back, then scale, as it does
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Proj(nn.Module):
    """A bias-free linear layer, y = x @ W.T, whose weight can be stored transposed.

    On the CPU, MKL's matrix-vector product (one decode token) streams a wide weight faster from an
    [in, out] layout than from nn.Linear's [out, in]: measured on a 2-core AMD EPYC, a SmolLM2-135M
    decode step took 60 ms instead of 75 ms with q/k/v, o, gate/up and the output head transposed
    (benchmarks/cpu_layout.py).
    Narrow-output matrices (the down projection) are faster as they are. `cpu_layout()` applies it."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.transposed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight if self.transposed else F.linear(x, self.weight)

    def transpose_storage(self) -> None:
        self.weight = nn.Parameter(self.weight.detach().t().contiguous(), requires_grad=False)
        self.transposed = not self.transposed

    @property
    def out_in_weight(self) -> torch.Tensor:
        """The weight as [out, in], whatever the storage."""
        return self.weight.t() if self.transposed else self.weight


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_dim, kv_dim = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.wqkv = Proj(cfg.hidden_size, q_dim + 2 * kv_dim)
        self.wo = Proj(q_dim, cfg.hidden_size)
        self.split = (q_dim, kv_dim, kv_dim)
        self.k_cache: torch.Tensor | None = None  # [1, n_kv, capacity, head_dim]
        self.v_cache: torch.Tensor | None = None
        self.exact_rows = False
        """Short forwards attend one query row at a time, so a position's output does not depend on
        how many positions ran with it (quantized models: see exact_rows_attention)."""

    def forward(self, x, cos, sin, start: int, mask, use_cache: bool = True):
        # x: [B, S, hidden]; cos/sin: [S, head_dim]; mask: [S, start+S] bool or None
        B, S, _ = x.shape
        q_dim, kv_dim, _ = self.split
        qk, v = self.wqkv(x).split((q_dim + kv_dim, kv_dim), dim=-1)
        # queries and keys rotate together: half the rotary ops of a decode step
        qk = qk.view(B, S, self.n_heads + self.n_kv, self.head_dim).transpose(1, 2)  # [B, H+Hkv, S, D]
        qk = qk * cos + rotate_half(qk) * sin
        q, k = qk.split((self.n_heads, self.n_kv), dim=1)  # [B, H, S, D], [B, Hkv, S, D]
        v = v.view(B, S, self.n_kv, self.head_dim).transpose(1, 2)
        if use_cache:  # inference: batch 1, keys and values kept by position
            end = start + S
            self.k_cache[:, :, start:end] = k
            self.v_cache[:, :, start:end] = v
            keys, values = self.k_cache[:, :, :end], self.v_cache[:, :, :end]
        else:  # training: whole sequences, nothing kept
            keys, values = k, v
        if self.exact_rows and use_cache and 1 < S <= EXACT_ROWS_MAX:
            y = exact_rows_attention(q, keys, values, start, self.n_kv != self.n_heads)
        else:
            y = F.scaled_dot_product_attention(
                q, keys, values,
                attn_mask=mask,
                # S > 1 at start 0 is a plain square causal mask: let the fused kernel build it
                is_causal=mask is None and S > 1,
                enable_gqa=self.n_kv != self.n_heads,
            )
        return self.wo(y.transpose(1, 2).reshape(B, S, -1))


EXACT_ROWS_MAX = 16  # verify and decode forwards; longer ones (prefills) attend in one call


def exact_rows_attention(q, keys, values, start: int, gqa: bool) -> torch.Tensor:
    """Causal attention computed one query row at a time, each exactly as a one-position decode
    step computes it (the same call on the same keys). The fused kernel's result for a row shifts
    in the last bits with the number of rows beside it; a quantized model rounds activations to
    bfloat16 at every projection, which can turn that into a different greedy token, and then
    verifying k+1 drafts would not give what decoding one token at a time gives."""
    # q: [B, H, S, D]; keys/values: [B, Hkv, start+S, D]
    rows = [F.scaled_dot_product_attention(q[:, :, i:i + 1], keys[:, :, :start + i + 1], values[:, :, :start + i + 1],
                                           enable_gqa=gqa) for i in range(q.shape[2])]
    return torch.cat(rows, dim=2)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate_up = Proj(cfg.hidden_size, 2 * cfg.intermediate_size)
        self.w_down = Proj(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x, cos, sin, start, mask, use_cache: bool = True):
        x = x + self.attn(self.attn_norm(x), cos, sin, start, mask, use_cache)
        return x + self.ffn(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = Proj(cfg.hidden_size, cfg.vocab_size)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.head_rows = None
        """Quantized models: the exact rows (engine/row_table.py) that re-score the output head's
        best candidates; the embedding table itself when the two are tied."""
        self.capacity = 0
        self.act_dtype: torch.dtype | None = None
        """Activations and KV cache dtype when the embedding's does not give it (quantized models
        keep their embedding as row tables, engine/row_table.py, and compute in float32)."""

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.act_dtype or self.embed.weight.dtype

    def cpu_layout(self) -> "Llama":
        """Store every projection whose output is at least as wide as its input transposed (see
        `Proj`). A tied output head gets its own transposed copy."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = nn.Parameter(self.embed.weight.detach().clone(), requires_grad=False)
        for proj in self.modules():
            if isinstance(proj, Proj) and not proj.transposed and proj.weight.shape[0] >= proj.weight.shape[1]:
                proj.transpose_storage()
        return self

    def setup_cache(self, capacity: int) -> None:
        """Preallocate the KV cache and rotary tables for `capacity` positions."""
        self.attach_cache(self.new_cache(capacity))
        self.cache_owner = None  # no CachedModel's buffers are attached any more

    def new_cache(self, capacity: int) -> "KVCache":
        """A KV cache of its own for `capacity` positions (one per KV lane); on the CPU it takes
        memory only where positions are written."""
        cfg, device, dtype = self.config, self.device, self.compute_dtype
        shape = (1, cfg.num_kv_heads, capacity, cfg.head_dim)
        return KVCache(capacity, [(lazy_zeros(shape, dtype, device), lazy_zeros(shape, dtype, device))
                                  for _ in self.layers])

    def attach_cache(self, cache: "KVCache") -> None:
        """Point every layer at `cache`'s buffers: switching lanes costs no copy and no prefill."""
        for layer, (k, v) in zip(self.layers, cache.layers):
            layer.attn.k_cache, layer.attn.v_cache = k, v
        if getattr(self, "rope_capacity", 0) != cache.capacity:
            cfg, device, dtype = self.config, self.device, self.compute_dtype
            self.rope_cos, self.rope_sin = rope_tables(cfg, cache.capacity, device, dtype)
            self.rope_capacity = cache.capacity
        self.capacity = cache.capacity

    def forward(self, tokens: torch.Tensor, start: int, n_logits: int | None = None) -> torch.Tensor:
        """Run `tokens` ([1, S]) at positions [start, start+S); return float32 logits of the last
        `n_logits` positions ([n_logits, vocab]; all S when None)."""
        S = tokens.shape[1]
        end = start + S
        assert end <= self.capacity, f"positions up to {end} exceed the KV cache ({self.capacity}); call setup_cache"
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        mask = causal_mask(start, S, tokens.device)
        x = self.embed(tokens).to(self.compute_dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, start, mask)
        if n_logits is not None:
            x = x[:, -n_logits:]  # the output head is the costliest matmul of a prefill: skip unused rows
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's output [1, S, hidden] -> float32 logits [S, vocab]."""
        h = self.norm(x)
        out = self.lm_head(h)[0].float()
        return out if self.head_rows is None else rescore(out, h[0], self.head_rows)

    def train_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Causal forward over whole sequences without any cache, for training: tokens [B, S] ->
        logits [B, S, vocab] in the compute dtype."""
        S = tokens.shape[1]
        assert S <= self.config.max_position_embeddings, f"sequence {S} is longer than the model's {self.config.max_position_embeddings} positions"
        cos, sin = rope_tables(self.config, S, tokens.device, self.embed.weight.dtype)
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, 0, None, use_cache=False)
        return self.lm_head(self.norm(x))


def causal_mask(start: int, S: int, device) -> torch.Tensor | None:
    """[S, start+S] bool: query i sits at position start+i and may see keys 0..start+i. None where
    no mask is needed: one query sees everything, and S queries from position 0 are the plain square
    causal case that the fused kernel builds itself."""
    if S == 1 or start == 0:
        return None
    q_pos = torch.arange(start, start + S, device=device)[:, None]
    return torch.arange(start + S, device=device)[None, :] <= q_pos


class KVCache:
    """Keys and values of every layer for `capacity` positions: [1, n_kv, capacity, head_dim] each."""

    def __init__(self, capacity: int, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        self.capacity = capacity
        self.layers = layers


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros that, on the CPU, take memory only where they are written: numpy's zeros come from
    calloc, whose large blocks are fresh pages the OS maps on first write, while torch.zeros writes
    every byte. A KV cache sized for 2.5k positions of CodeLlama-7b is 2.7 GB in float32; a
    request uses the part its prompt fills."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    import numpy as np

    count = 1
    for n in shape:
        count *= n
    # numpy asks for huge pages on large arrays: one 2 MB page per head would then be written as
    # soon as one position is, which is most of the cache
    madvise = getattr(getattr(np, "_core", np.core).multiarray, "_set_madvise_hugepage", None)
    before = madvise(False) if madvise else None
    try:
        raw = np.zeros(count * torch.empty(0, dtype=dtype).element_size(), dtype=np.uint8)
    finally:
        if madvise:
            madvise(before)
    return torch.from_numpy(raw).view(dtype).view(shape)


def rope_tables(cfg: ModelConfig, n: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [n, head_dim] of the rotary embedding for positions 0..n-1 (computed in float32
    like the reference, then cast)."""
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64, device=device).float() / cfg.head_dim)
    positions = torch.arange(n, device=device).float() / cfg.rope_linear_factor
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


# Hugging Face parameter names -> ours. q/k/v and gate/up are concatenated along the output dim.
_HF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.o_proj.weight": "attn.wo.weight",
    "mlp.down_proj.weight": "ffn.w_down.weight",
}
_HF_FUSED = {
    "attn.wqkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "ffn.w_gate_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
}


def load_hf_weights(model: Llama, get) -> None:
    """Fill `model` from Hugging Face tensors. `get(name)` returns one tensor by its HF name, so a
    caller can read lazily from safetensors and keep peak memory near one layer."""
    params = dict(model.named_parameters())

    def put(ours: str, tensor: torch.Tensor) -> None:
        module = model.get_submodule(ours.rsplit(".", 1)[0])
        target = module.out_in_weight if isinstance(module, Proj) else params[ours]
        assert target.shape == tensor.shape, f"{ours}: checkpoint has shape {tuple(tensor.shape)}, config says {tuple(target.shape)}"
        with torch.no_grad():
            target.copy_(tensor)

    put("embed.weight", get("model.embed_tokens.weight"))
    put("norm.weight", get("model.norm.weight"))
    if not model.config.tie_word_embeddings:
        put("lm_head.weight", get("lm_head.weight"))
    for i in range(model.config.num_layers):
        prefix = f"model.layers.{i}."
        for hf, ours in _HF_LAYER.items():
            put(f"layers.{i}.{ours}", get(prefix + hf))
        for ours, parts in _HF_FUSED.items():
            put(f"layers.{i}.{ours}", torch.cat([get(prefix + p) for p in parts], dim=0))


def hf_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """The inverse of `load_hf_weights`: tensors under Hugging Face names (for export)."""
    cfg = model.config
    out = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = model.lm_head.out_in_weight
    q_dim, kv_dim = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        for hf, ours in _HF_LAYER.items():
            module = layer.get_submodule(ours.rsplit(".", 1)[0])
            out[prefix + hf] = module.out_in_weight if isinstance(module, Proj) else layer.get_parameter(ours)
        q, k, v = layer.attn.wqkv.out_in_weight.split((q_dim, kv_dim, kv_dim), dim=0)
        gate, up = layer.ffn.w_gate_up.out_in_weight.chunk(2, dim=0)
        for name, t in zip(_HF_FUSED["attn.wqkv.weight"] + _HF_FUSED["ffn.w_gate_up.weight"], (q, k, v, gate, up)):
            out[prefix + name] = t
    return {name: t.detach().contiguous() for name, t in out.items()}
