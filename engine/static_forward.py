"""The same Llama forward with static shapes, so a CUDA graph can capture it once and replay it.

`Llama.forward` takes its start position as a Python int and slices the cache with it: every new
position is a new shape, which a captured graph cannot follow. Here positions are a device tensor:
keys/values are written with `index_copy_` at those positions, the rotary rows are gathered by them,
and attention runs over a fixed `span` of cache slots (a bucket at least as long as the filled part)
with a mask built from the positions. Only the tensor contents change from call to call, so one
graph per (query length, span) serves every position. Same weights, same cache, same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import Llama, rotate_half

SPAN_STEP = 256  # attention spans are multiples of this: few graphs, little attention over empty slots


def span_for(end: int, capacity: int) -> int:
    """The attended cache length for a forward whose last position is end-1: the next power-of-two
    multiple of SPAN_STEP (so a long cache is captured in a handful of spans), at most capacity."""
    span = SPAN_STEP
    while span < end:
        span *= 2
    return min(span, capacity)


def static_forward(model: Llama, tokens: torch.Tensor, pos: torch.Tensor, span: int) -> torch.Tensor:
    """tokens: [1, S] ids at positions pos: [S] (a device tensor, ascending, all < span).
    Writes their keys/values into the model's cache and returns float32 logits [S, vocab]."""
    S = tokens.shape[1]
    cos, sin = model.rope_cos[pos], model.rope_sin[pos]  # [S, head_dim]
    # query i may see cache slots 0..pos[i]; slots past it are stale or empty
    mask = torch.arange(span, device=pos.device)[None, :] <= pos[:, None]  # [S, span]
    x = model.embed(tokens).to(model.compute_dtype)
    for layer in model.layers:
        attn = layer.attn
        h = layer.attn_norm(x)
        q, k, v = attn.wqkv(h).split(attn.split, dim=-1)
        q = q.view(1, S, attn.n_heads, attn.head_dim).transpose(1, 2)  # [1, H, S, D]
        k = k.view(1, S, attn.n_kv, attn.head_dim).transpose(1, 2)  # [1, Hkv, S, D]
        v = v.view(1, S, attn.n_kv, attn.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        attn.k_cache.index_copy_(2, pos, k)
        attn.v_cache.index_copy_(2, pos, v)
        y = F.scaled_dot_product_attention(
            q, attn.k_cache[:, :, :span], attn.v_cache[:, :, :span], attn_mask=mask,
            enable_gqa=attn.n_kv != attn.n_heads,
        )
        x = x + attn.wo(y.transpose(1, 2).reshape(1, S, -1))
        x = x + layer.ffn(layer.ffn_norm(x))
    return model.logits(x)
