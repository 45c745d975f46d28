"""A model together with the token ids its KV cache currently holds.

`extend(ids)` brings the cache to `ids`: it keeps the longest common prefix with what is cached and
runs only the rest. That one rule gives all three kinds of reuse:
  - a new request whose prompt shares a prefix with the last one (typing forward) runs only the
    new tokens; a shorter or diverging prompt simply keeps less;
  - rejected speculative tokens are rolled back by position and overwritten, never recomputed;
  - a draft model catches up with the target's corrections in one small forward.
"""

from __future__ import annotations

import torch

from .model import Llama


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the common case, compared in C
        return n
    i = 0
    while a[i] == b[i]:
        i += 1
    return i


class CachedModel:
    def __init__(self, model: Llama, capacity: int):
        self.model = model
        self.capacity = min(capacity, model.config.max_position_embeddings)
        self._claim()
        self.device = model.embed.weight.device
        self.vocab_size = model.config.vocab_size
        self.ids: list[int] = []  # ids whose keys/values sit at positions 0..len-1
        self.forwards = 0
        self.tokens_run = 0

    def reset(self) -> None:
        self.ids = []

    def _claim(self) -> None:
        # the KV buffers live inside the model's modules: if another CachedModel used this model
        # since, our cached ids describe its buffers no more
        if getattr(self.model, "cache_owner", None) is not self:
            self.model.setup_cache(self.capacity)
            self.model.cache_owner = self
            self.ids = []

    @torch.inference_mode()
    def extend(self, ids: list[int], n_logits: int = 1) -> torch.Tensor:
        """Make the cache hold `ids`; return float32 logits [n_logits, V] predicting the token after
        each of the last `n_logits` positions."""
        assert 0 < n_logits <= len(ids), f"need 1..{len(ids)} logits, asked for {n_logits}"
        self._claim()
        assert len(ids) <= self.capacity, f"{len(ids)} tokens exceed this model's KV cache of {self.capacity}; lower the prompt budget"
        # positions we need logits for must be run again even if cached
        start = min(common_prefix_len(self.ids, ids), len(ids) - n_logits)
        new = ids[start:]
        tokens = torch.tensor([new], dtype=torch.long, device=self.device)
        del self.ids[start:]  # before the forward: if it fails midway, those positions are garbage
        logits = self.model(tokens, start, n_logits)
        self.ids.extend(new)
        self.forwards += 1
        self.tokens_run += len(new)
        return logits
