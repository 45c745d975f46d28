"""The draft-length policy and the prompt-lookup search."""

import numpy as np

from engine.draft_policy import PROBE_EVERY, DraftLength
from engine.drafters import lookup


def feed(policy: DraftLength, rounds: int, drafts_right: bool, cost) -> list[int]:
    """Run `rounds` rounds in which every draft is right (or every draft wrong), the target forward
    over s positions taking cost(s) seconds; return the k chosen each round."""
    ks = []
    for _ in range(rounds):
        k = policy.next_k()
        ks.append(k)
        policy.observe(k, k if drafts_right else 0, cost(k + 1), 0.0)
    return ks


def test_fixed_k_when_not_adaptive():
    policy = DraftLength(k=3, k_min=1, k_max=8, adaptive=False)
    assert feed(policy, 20, False, lambda s: 1.0 + s)[-5:] == [3] * 5


def test_cheap_verify_and_good_drafts_draft_long():
    # a GPU-like target: verifying 9 positions costs 10% more than 1
    policy = DraftLength(k=4, k_min=1, k_max=8)
    ks = feed(policy, 60, True, lambda s: 1.0 + 0.0125 * (s - 1))
    assert ks[-1] == 8 and policy.acceptance > 0.9


def test_costly_verify_and_bad_drafts_fall_back_to_plain_decoding():
    # a small-CPU-like target: every verified position costs as much as a whole step
    policy = DraftLength(k=4, k_min=1, k_max=8)
    ks = feed(policy, 64, False, lambda s: float(s))
    tail = ks[-32:]
    assert tail.count(0) >= 32 - 32 // PROBE_EVERY - 1  # plain decoding, bar the probes
    assert any(k > 0 for k in tail)  # probes keep measuring the draft
    assert policy.acceptance < 0.2


def test_lookup_takes_the_latest_longest_match():
    seq = np.array([5, 6, 7, 1, 2, 9, 6, 7, 3, 4, 5, 6, 7])
    # the last trigram (5,6,7) occurs at 0: continue with what followed it
    assert lookup(seq, 3, 3, 1) == [1, 2, 9]
    # with bigrams only, (6,7) last occurred at 6: continue with 3, 4
    assert lookup(seq, 2, 2, 1) == [3, 4]
    assert lookup(np.array([1, 2, 3]), 4, 3, 1) == []
    # a match running into the end proposes what is there
    assert lookup(np.array([8, 8, 8]), 4, 1, 1) == [8]
