"""Turning logits into tokens, and deciding which drafted tokens the target accepts.

Greedy: a drafted token is accepted while it equals the target's argmax; the first disagreement is
replaced by the target's own token, so the output is the target's greedy output, token for token.

Sampling (Leviathan et al. / Chen et al.): drafted token d at step i is accepted with probability
min(1, p_i(d) / q_i(d)), where p is the target's and q the draft's (temperature / top-k / top-p
adjusted) distribution; on rejection the replacement is drawn from max(0, p_i - q_i), normalised.
Every emitted token then follows p exactly, whatever q is. A draft without a distribution (prompt
lookup) proposes with certainty: q_i is one-hot on d.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    """0 means greedy (argmax); otherwise logits are divided by it before softmax."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = all)."""
    seed: int | None = None
    """Seed of the sampling generator; None draws a fresh one."""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits: [n, V] -> probabilities [n, V] after temperature, top-k and top-p."""
    logits = logits.float() / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # drop a token when the tokens ranked above it already reach top_p (the first always stays)
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def pad_vocab(probs: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Draft probabilities [n, Vd] -> [n, vocab_size]: ids the draft lacks get probability zero
    (AMD-Llama-135m's 32000 tokens against CodeLlama-7b's 32016)."""
    n, vd = probs.shape
    if vd == vocab_size:
        return probs
    if vd > vocab_size:
        probs = probs[:, :vocab_size]
        return probs / probs.sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.cat([probs, probs.new_zeros(n, vocab_size - vd)], dim=-1)


def accept_greedy(logits: torch.Tensor, drafts: list[int]) -> tuple[int, int]:
    """logits: [len(drafts)+1, V] of the target at the drafted positions.
    Returns (accepted count m, the target's token after the accepted ones)."""
    best = logits.argmax(-1).tolist()  # the one host sync of the round
    m = 0
    while m < len(drafts) and drafts[m] == best[m]:
        m += 1
    return m, best[m]


def accept_sampled(
    p: torch.Tensor, q: torch.Tensor | None, drafts: list[int], generator: torch.Generator
) -> tuple[int, int]:
    """p: target probabilities [n+1, V]; q: draft probabilities [n, V] (None: one-hot drafts).
    Returns (accepted count m, the next token drawn so that it follows p)."""
    n = len(drafts)
    if n:
        idx = torch.arange(n, device=p.device)
        d = torch.tensor(drafts, device=p.device)
        p_d = p[idx, d]
        q_d = q[idx, d] if q is not None else torch.ones_like(p_d)
        u = torch.rand(n, generator=generator, device=generator.device).to(p.device)
        rejected = (u * q_d >= p_d).tolist()  # accept when u < p/q
        for i, rej in enumerate(rejected):
            if rej:
                if q is not None:
                    residual = (p[i] - q[i]).clamp_min(0.0)
                else:
                    residual = p[i].clone()
                    residual[drafts[i]] = 0.0
                if residual.sum() <= 0:  # only reachable through rounding when p == q
                    residual = p[i]
                return i, _draw(residual, generator)
    return n, _draw(p[n], generator)


def sample(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token from a probability vector [V]."""
    return _draw(probs, generator)


def _draw(weights: torch.Tensor, generator: torch.Generator) -> int:
    w = weights.float()
    if w.device != generator.device:
        w = w.to(generator.device)
    return int(torch.multinomial(w / w.sum(), 1, generator=generator).item())
