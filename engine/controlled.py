"""Acceptance-controlled drafting, for measuring speculation with models that never agree.

Random-weight models (the exact CodeLlama-7b / AMD-Llama-135m shapes, when no hub is reachable) agree
on nothing, so a real draft would be rejected every round. `ControlledDrafter` keeps the draft's cost
real and makes its quality a dial: the draft model runs one forward per proposed token, exactly as a
`ModelDrafter` would, but each proposed token is, with probability alpha, the target's own next
greedy token (read from `truth`, the output of a plain run) and otherwise a token that is certainly
wrong. The target then verifies as usual, so the output is still the target's greedy output.

The choice is made on the host from a seeded RNG before the draft runs, so the draft's forwards are
fed the proposed tokens themselves (its cache holds what was proposed, as a real draft's would) and
nothing is read back from the device while drafting.
"""

from __future__ import annotations

import random

import torch

from .cached_model import CachedModel
from .drafters import Proposal
from .sampling import SamplingParams


class ControlledDrafter:
    name = "controlled"

    def __init__(self, draft: CachedModel, truth: list[int], alpha: float, seed: int = 0):
        assert 0.0 <= alpha <= 1.0, f"alpha is a probability, got {alpha}"
        self.draft, self.truth, self.alpha = draft, truth, alpha
        self.rng = random.Random(seed)
        self.prompt: list[int] = []

    def begin(self, target_prompt: list[int], draft_prompt: list[int] | None, reference: list[int] | None = None) -> None:
        self.prompt = draft_prompt or target_prompt

    def choose(self, position: int) -> int:
        """The token proposed for output position `position`: right with probability alpha."""
        right = self.truth[position] if position < len(self.truth) else 0
        if self.rng.random() < self.alpha:
            return right
        # any id but the right one, inside the draft's vocabulary so the draft can read it back
        return (right + 1 + self.rng.randrange(self.draft.vocab_size - 1)) % self.draft.vocab_size

    @torch.inference_mode()
    def propose(self, generated: list[int], k: int, params: SamplingParams, generator) -> Proposal:
        assert params.greedy, "acceptance control replaces greedy drafts; sampling has no 'right' token"
        vocab = self.draft.vocab_size
        if any(t >= vocab for t in generated):  # as ModelDrafter: the draft cannot read target-only ids
            return Proposal([])
        seq = self.prompt + generated
        tokens: list[int] = []
        for i in range(min(k, self.draft.capacity - len(seq))):
            logits = self.draft.extend(seq + tokens, 1)
            logits.argmax(-1)  # the draft's own pick is computed (its cost is real), then overruled
            tokens.append(self.choose(len(generated) + i))
            if tokens[-1] >= vocab:  # a target-only id: proposable, but the draft cannot read it on
                break
        return Proposal(tokens)
