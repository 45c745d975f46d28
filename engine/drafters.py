"""Drafters propose the next few tokens; the target verifies them all in one forward.

Each drafter answers `propose(generated, k)` with up to k token ids continuing the completion so far,
and (when it has one) its probability distribution at each of them, padded to the target vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cached_model import CachedModel
from .sampling import SamplingParams, pad_vocab, probabilities


@dataclass
class Proposal:
    tokens: list[int]
    probs: torch.Tensor | None = None
    """[len(tokens), target vocab] draft distributions, or None for a drafter that is certain."""


class NoDrafter:
    """Plain decoding: one target forward per token. The baseline every speedup is measured against."""

    name = "none"

    def begin(self, target_prompt: list[int], draft_prompt: list[int] | None, reference: list[int] | None = None) -> None:
        pass

    def propose(self, generated: list[int], k: int, params: SamplingParams, generator) -> Proposal:
        return Proposal([])


class PromptLookupDrafter:
    """Proposes what followed the latest earlier occurrence of the last n tokens (n = max_ngram down
    to min_ngram) in the prompt or the output so far: code repeats itself, and edits repeat the
    surrounding text. Costs no model forward at all. `reference` is text the prompt lacks but the
    editor has (the code after the cursor, for a model that reads only the prefix): it is searched
    too, before the prompt, so a match nearer the cursor wins."""

    name = "ngram"

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        assert 1 <= min_ngram <= max_ngram, "need 1 <= min_ngram <= max_ngram"
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.prompt: list[int] = []

    def begin(self, target_prompt: list[int], draft_prompt: list[int] | None, reference: list[int] | None = None) -> None:
        self.prompt = (reference or []) + target_prompt

    def propose(self, generated: list[int], k: int, params: SamplingParams, generator) -> Proposal:
        seq = np.asarray(self.prompt + generated, dtype=np.int64)
        return Proposal(lookup(seq, k, self.max_ngram, self.min_ngram))


def lookup(seq: np.ndarray, k: int, max_ngram: int, min_ngram: int) -> list[int]:
    """Up to k ids that followed the latest earlier match of seq's last n ids (longest n first)."""
    L = len(seq)
    for n in range(min(max_ngram, L - 1), min_ngram - 1, -1):
        # candidate starts 0..L-n-1: each match has at least one following id
        windows = np.lib.stride_tricks.sliding_window_view(seq[: L - 1], n)
        hits = np.flatnonzero((windows == seq[L - n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return seq[start:start + k].tolist()
    return []


class ModelDrafter:
    """A small model that shares the target's vocabulary (or a prefix of it) drafts token by token.

    It reads its own prompt (left to right when it cannot infill) and then the same generated ids as
    the target. It stops early when it is unsure: a token it gives less than `min_confidence`
    probability is likely rejected, and the verify positions after it would be wasted."""

    name = "model"

    def __init__(self, draft: CachedModel, target_vocab_size: int, min_confidence: float = 0.3):
        self.draft = draft
        self.target_vocab_size = target_vocab_size
        self.min_confidence = min_confidence
        self.prompt: list[int] = []
        self.blind = False

    def begin(self, target_prompt: list[int], draft_prompt: list[int] | None, reference: list[int] | None = None) -> None:
        assert draft_prompt, "a model drafter needs its own prompt"
        self.prompt = draft_prompt
        # an alternative candidate may branch on an id beyond the draft's vocabulary: sit out
        self.blind = any(t >= self.draft.vocab_size for t in draft_prompt)

    @torch.inference_mode()
    def propose(self, generated: list[int], k: int, params: SamplingParams, generator) -> Proposal:
        vocab = self.draft.vocab_size
        # the target may emit ids beyond the draft's vocabulary (CodeLlama's 16 extra tokens): the
        # draft cannot read them, so it sits out and the round is a plain target step
        if self.blind or any(t >= vocab for t in generated):
            return Proposal([])
        seq = self.prompt + generated
        room = self.draft.capacity - len(seq)
        tokens: list[int] = []
        dists: list[torch.Tensor] = []
        for _ in range(min(k, room)):
            logits = self.draft.extend(seq + tokens, 1)  # [1, Vd]
            if params.greedy:
                probs = torch.softmax(logits, dim=-1)
                token = int(probs.argmax(-1).item())
            else:
                probs = probabilities(logits, params)
                token = int(torch.multinomial(probs[0].to(generator.device), 1, generator=generator).item())
                dists.append(probs)
            tokens.append(token)
            if float(probs[0, token]) < self.min_confidence:
                break
        q = pad_vocab(torch.cat(dists), self.target_vocab_size) if dists else None
        return Proposal(tokens, q)
