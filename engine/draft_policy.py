"""How many tokens to draft each round: the choice that makes speculation pay on this machine.

A round with k drafted tokens costs one target forward over k+1 positions plus k draft steps, and
yields on average (1 - a^(k+1)) / (1 - a) tokens, where a is the chance that a drafted token is
accepted once its predecessors were. Both sides are measured while generating: a from recent
rounds (a round that accepts m of n drafts saw m successes and, if m < n, one failure), the costs
from the wall time of verify forwards by size and of draft steps. k is the one that maximises tokens
per second, plain decoding (k = 0) included: on a GPU verifying 8 positions costs about what 1 does,
on a small CPU it can cost three times as much, and a draft that is rarely right should then stand
aside. Sizes not timed yet follow the cost curve measured for the model when it loaded
(engine/verify_cost.py), so the first rounds already avoid the sizes the CPU kernels make dear.
"""

from __future__ import annotations

PRIOR_SLOPE = 0.1  # before a size is measured, assume each extra verify position costs 10% of one
DECAY = 0.9  # weight of the past in every running estimate
PROBE_EVERY = 8  # while plain decoding wins, still draft every 8th round to notice a better draft


class DraftLength:
    def __init__(self, k: int = 4, k_min: int = 1, k_max: int = 8, adaptive: bool = True,
                 costs: dict[int, float] | None = None):
        """`costs`: a verify forward's cost by positions, relative to one (engine/verify_cost.py),
        measured for this model on this machine; the shape the policy assumes for sizes it has not
        timed yet. None: the prior slope."""
        assert 1 <= k_min <= k <= k_max, "need 1 <= k_min <= k <= k_max"
        self.k_init, self.k_min, self.k_max, self.adaptive = k, k_min, k_max, adaptive
        self.costs = costs or {}
        self.successes, self.failures = 2.0, 1.0  # prior acceptance 2/3
        self.verify_s: dict[int, float] = {}  # positions verified -> seconds per target forward
        self.draft_s: float | None = None  # seconds per drafted token
        self.plain_rounds = 0
        self.last_k = k

    @property
    def acceptance(self) -> float:
        return self.successes / (self.successes + self.failures)

    def next_k(self) -> int:
        if not self.adaptive:
            return self.k_init
        if not self.verify_s and not self.costs:
            return self.k_init
        best_k, best_rate = 0, self._tokens(0) / self._cost(0)
        for k in range(self.k_min, self.k_max + 1):
            rate = self._tokens(k) / self._cost(k)
            if rate > best_rate:
                best_k, best_rate = k, rate
        if best_k == 0:
            self.plain_rounds += 1
            if self.plain_rounds % PROBE_EVERY == 0:
                best_k = self.k_min
        self.last_k = best_k
        return best_k

    def observe(self, proposed: int, accepted: int, verify_s: float | None = None, draft_s: float | None = None) -> None:
        """One round's outcome; `verify_s` is the target forward's time over proposed+1 positions
        (None for the prefill round, whose forward also ran the prompt)."""
        if proposed:
            self.successes = DECAY * self.successes + accepted
            self.failures = DECAY * self.failures + (1.0 if accepted < proposed else 0.0)
            if draft_s is not None:
                per_token = draft_s / proposed
                self.draft_s = per_token if self.draft_s is None else DECAY * self.draft_s + (1 - DECAY) * per_token
        if verify_s is not None:
            size = proposed + 1
            old = self.verify_s.get(size)
            self.verify_s[size] = verify_s if old is None else DECAY * old + (1 - DECAY) * verify_s

    def _tokens(self, k: int) -> float:
        a = min(self.acceptance, 0.999)
        return (1 - a ** (k + 1)) / (1 - a)

    def _cost(self, k: int) -> float:
        draft_s = (self.draft_s or 0.0) if self.verify_s else 0.0  # seconds only beside seconds
        return self._verify_cost(k + 1) + k * draft_s

    def _verify_cost(self, size: int) -> float:
        if size in self.verify_s:
            return self.verify_s[size]
        if not self.verify_s:  # nothing timed yet: in units of one position, draft steps free
            return self._relative(size)
        # scale the nearest timed size by the assumed shape
        near = min(self.verify_s, key=lambda s: abs(s - size))
        return self.verify_s[near] * self._relative(size) / self._relative(near)

    def _relative(self, size: int) -> float:
        return self.costs.get(size) or 1 + PRIOR_SLOPE * (size - 1)
