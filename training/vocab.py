"""Growing a model's vocabulary: AMD-Llama-135m-code's 32000 tokens -> CodeLlama's 32016.

The new ids (CodeLlama's infilling markers among them) get embedding and output rows equal to the
mean of the existing rows: each new token starts as an average token, so no logit jumps (an output
row of zeros or noise would), and every logit of the old ids is unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from engine.errors import SpectabError
from engine.model import Llama


@torch.no_grad()
def grow_vocab(model: Llama, vocab_size: int) -> Llama:
    """A copy of `model` with `vocab_size` ids; rows past the old size are the mean of the old rows."""
    old = model.config.vocab_size
    if vocab_size < old:
        raise SpectabError(f"cannot grow a {old}-token vocabulary to {vocab_size} tokens")
    grown = Llama(replace(model.config, vocab_size=vocab_size))
    state = model.state_dict()
    for name in ("embed.weight", "lm_head.weight"):
        if name in state:
            w = state[name]  # [old, hidden]
            state[name] = torch.cat([w, w.float().mean(0, keepdim=True).to(w.dtype).expand(vocab_size - old, -1)])
    grown.load_state_dict(state, strict=True)
    if model.config.tie_word_embeddings:
        grown.lm_head.weight = grown.embed.weight
    return grown
