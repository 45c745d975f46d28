"""A model together with the token ids its KV cache currently holds.

Each CachedModel owns its KV buffers, so several of them over one model (KV lanes, one per
document) each keep their own prompt. `extend(ids)` brings the cache to `ids`: it keeps the longest common prefix with what is cached and
runs only the rest. That one rule gives all three kinds of reuse:
  - a new request whose prompt shares a prefix with the last one (typing forward) runs only the
    new tokens; a shorter or diverging prompt simply keeps less;
  - rejected speculative tokens are rolled back by position and overwritten, never recomputed;
  - a draft model catches up with the target's corrections in one small forward.
"""

from __future__ import annotations

import torch

from .graphs import MAX_GRAPH_TOKENS, StepRunner
from .model import Llama


def prefill_split(model: Llama, new: int, n_logits: int) -> int:
    """How many leading positions of a forward over `new` to run on their own, so that the
    positions whose logits are returned always run in a short forward: a quantized model computes
    a position exactly alike in every short forward (row-independent kernels, exact_rows_attention)
    but not in a long one (fused attention, float copies for prefill). 0: no split."""
    from .model import EXACT_ROWS_MAX

    if not getattr(model, "quant_kinds", None) or new <= EXACT_ROWS_MAX:
        return 0
    return new - n_logits


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the common case, compared in C
        return n
    i = 0
    while a[i] == b[i]:
        i += 1
    return i


class CachedModel:
    def __init__(self, model: Llama, capacity: int, static: bool | None = None):
        """`static`: run short forwards through the static-shape path (engine/graphs.py), captured as
        CUDA graphs on a GPU. None: on CUDA only; the CPU keeps Llama.forward (True there runs the
        static code eagerly, for tests)."""
        self.model = model
        self.capacity = min(capacity, model.config.max_position_embeddings)
        self.device = model.device
        self.static = self.device.type == "cuda" if static is None else static
        self.runner: StepRunner | None = None
        self.kv = None  # this cache's own KV buffers (engine.model.KVCache), made on first use
        self.ids: list[int] = []  # ids whose keys/values sit at positions 0..len-1
        self._claim()
        self.vocab_size = model.config.vocab_size
        self.forwards = 0
        self.tokens_run = 0

    def reset(self) -> None:
        self.ids = []

    def release(self) -> None:
        """Give the KV buffers back (an evicted lane); the next use starts from an empty cache."""
        if getattr(self.model, "cache_owner", None) is self:
            self.model.cache_owner = None
        self.kv, self.runner, self.ids = None, None, []

    @torch.inference_mode()  # buffers made here are inference tensors, as the compiled steps expect
    def _claim(self) -> None:
        # several CachedModels (KV lanes) may share one model: the model's layers point at the
        # buffers of whichever used it last, so point them at ours; nothing is copied or recomputed
        if getattr(self.model, "cache_owner", None) is not self:
            if self.kv is None:
                self.kv = self.model.new_cache(self.capacity)
                self.ids = []
                # captured graphs point at the cache buffers: one runner per set of buffers
                self.runner = StepRunner(self.model) if self.static else None
            self.model.attach_cache(self.kv)
            self.model.cache_owner = self

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
        del self.ids[start:]  # before the forward: if it fails midway, those positions are garbage
        bulk = prefill_split(self.model, len(new), n_logits)
        if bulk:
            # the prompt part of a quantized model's long forward; the positions whose logits are
            # returned run through a short forward, as every decode and verify step does
            self.model(torch.tensor([new[:bulk]], dtype=torch.long, device=self.device), start, 1)
            self.ids.extend(new[:bulk])
            self.tokens_run += bulk
            start, new = start + bulk, new[bulk:]
        if self.runner is not None and len(new) <= MAX_GRAPH_TOKENS:
            # a copy: the runner's output buffer is overwritten by the next forward of this length
            logits = self.runner(self._on_device(new), start)[-n_logits:].clone()
        else:
            tokens = torch.tensor([new], dtype=torch.long, device=self.device)
            # a quantized CPU model's decode and verify steps run compiled (engine/compiled_step.py)
            steps = getattr(self.model, "compiled_steps", None)
            logits = steps.forward(tokens, start, n_logits) if steps is not None else None
            if logits is None:
                logits = self.model(tokens, start, n_logits)
        self.ids.extend(new)
        self.forwards += 1
        self.tokens_run += len(new)
        return logits

    def _on_device(self, ids: list[int]) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.tensor(ids, dtype=torch.long, device=self.device)
        # from pinned memory without blocking: a plain host-to-GPU copy would wait for the GPU
        return torch.tensor(ids, dtype=torch.long, pin_memory=True).to(self.device, non_blocking=True)
