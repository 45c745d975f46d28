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


# a CPU-like target whose kernel multiplies input rows four at a time (engine/verify_cost.py)
STEPPED = {s: 1.0 + 0.2 * ((s - 1) % 4) + 1.6 * ((s - 1) // 4) for s in range(1, 10)}


def simulated_cost_per_token(policy: DraftLength, rounds: int, alpha: float, cost) -> float:
    """Simulated rounds, no clock: each draft is right with probability alpha (seeded), a verify
    forward over s positions costs cost(s) units (what the policy is told it took), draft steps
    nothing; the total cost over the tokens the rounds yielded."""
    import random

    rng, spent, tokens = random.Random(0), 0.0, 0
    for _ in range(rounds):
        k = policy.next_k()
        m = 0
        while m < k and rng.random() < alpha:
            m += 1
        policy.observe(k, m, cost(k + 1), 0.0)
        spent, tokens = spent + cost(k + 1), tokens + m + 1
    return spent / tokens


def test_a_measured_cost_curve_keeps_the_first_rounds_off_dear_sizes():
    # told the curve, the policy verifies at most the four positions one kernel block holds...
    told = DraftLength(k=4, k_min=1, k_max=8, costs=STEPPED)
    ks = feed(told, 12, True, STEPPED.get)
    assert max(ks) <= 3 and ks[-1] == 3, ks
    # ...where the prior slope alone starts at 4 drafts, a second kernel block for one more position
    guessing = DraftLength(k=4, k_min=1, k_max=8)
    assert feed(guessing, 12, True, STEPPED.get)[0] == 4
    # at acceptance 0.85 the told policy yields tokens for fewer cost units over a short request
    told, guessing = DraftLength(k=4, k_min=1, k_max=8, costs=STEPPED), DraftLength(k=4, k_min=1, k_max=8)
    assert simulated_cost_per_token(told, 8, 0.85, STEPPED.get) < 0.95 * simulated_cost_per_token(guessing, 8, 0.85, STEPPED.get)


def test_verify_costs_are_timed_on_scratch_caches(tiny_models):
    from engine.cached_model import CachedModel
    from engine.loading import load_model
    from engine.verify_cost import relative_verify_costs

    model = load_model(str(tiny_models["target"]), "cpu").model
    cache = CachedModel(model, 64)
    prompt = list(range(5, 25))
    cache.extend(prompt)
    before = cache.extend(prompt)  # the last position again, alone: as the next request runs it
    keys = [layer.attn.k_cache.clone() for layer in model.layers]
    costs = relative_verify_costs(model, 9)
    assert sorted(costs) == list(range(1, 10)) and costs[1] == 1.0 and all(c > 0 for c in costs.values())
    # the model's own cache is the one it had, holding what it held: the next request reuses it
    assert all(torch.equal(layer.attn.k_cache, k) for layer, k in zip(model.layers, keys))
    assert torch.equal(cache.extend(prompt), before)


def test_lookup_takes_the_latest_longest_match():
    seq = np.array([5, 6, 7, 1, 2, 9, 6, 7, 3, 4, 5, 6, 7])
    # the last trigram (5,6,7) occurs at 0: continue with what followed it
    assert lookup(seq, 3, 3, 1) == [1, 2, 9]
    # with bigrams only, (6,7) last occurred at 6: continue with 3, 4
    assert lookup(seq, 2, 2, 1) == [3, 4]
    assert lookup(np.array([1, 2, 3]), 4, 3, 1) == []
    # a match running into the end proposes what is there
    assert lookup(np.array([8, 8, 8]), 4, 1, 1) == [8]


# --- acceptance-controlled drafting (the benchmarks' stand-in for a draft that agrees with the target)

import pytest  # noqa: E402
import torch  # noqa: E402

from engine.cached_model import CachedModel  # noqa: E402
from engine.controlled import ControlledDrafter  # noqa: E402
from engine.drafters import NoDrafter  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.sampling import SamplingParams  # noqa: E402
from engine.speculative import StopRules, generate  # noqa: E402

CONTROLLED_PROMPTS = ["def fibonacci(n):\n    if n < 2:\n        return n\n", "import os\n\nclass Config:\n", "for i in range(10):\n"]
CONTROLLED_TOKENS = 160


@pytest.fixture(scope="module")
def controlled_setup(tiny_models):
    target, draft = load_model(str(tiny_models["target"]), "cpu"), load_model(str(tiny_models["draft"]), "cpu")
    tcache, dcache = CachedModel(target.model, 256), CachedModel(draft.model, 256)
    stops = StopRules(max_new_tokens=CONTROLLED_TOKENS)  # no stop ids: every run makes all the tokens
    prompts = [target.tokenizer.encode(p) for p in CONTROLLED_PROMPTS]
    truths = [generate(tcache, p, NoDrafter(), target.tokenizer, SamplingParams(), stops).tokens for p in prompts]
    return target, tcache, dcache, stops, prompts, truths


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.85, 1.0])
def test_controlled_drafts_are_lossless_and_accepted_at_alpha(controlled_setup, alpha):
    from engine.draft_policy import DraftLength

    target, tcache, dcache, stops, prompts, truths = controlled_setup
    accepted = trials = 0
    for seed, (prompt, truth) in enumerate(zip(prompts, truths)):
        tcache.reset(), dcache.reset()
        drafter = ControlledDrafter(dcache, truth, alpha, seed=seed)
        g = generate(tcache, prompt, drafter, target.tokenizer, SamplingParams(), stops,
                     DraftLength(4, 4, 4, adaptive=False), draft_prompt=prompt)
        assert g.tokens == truth, "controlled speculation changed the greedy output"
        # the draft model really ran: one forward per proposed token, as a real draft would
        assert g.stats.draft_proposed > 0 and g.stats.draft_forwards == g.stats.draft_proposed
        accepted += g.stats.draft_accepted
        trials += g.stats.draft_accepted + g.stats.draft_rounds_rejected
    measured = accepted / trials
    # each draft is right independently with probability alpha: over >= 300 trials the estimate's
    # standard deviation is <= 0.03, so 0.1 is more than three of them (and the RNG is seeded: no flakes)
    assert trials >= 300 and abs(measured - alpha) <= 0.1, (measured, trials)
    if alpha in (0.0, 1.0):
        assert measured == alpha


def test_controlled_drafts_are_deterministic_per_seed(controlled_setup):
    target, tcache, dcache, stops, prompts, truths = controlled_setup
    picks = []
    for seed in (7, 7, 8):
        drafter = ControlledDrafter(dcache, truths[0], 0.5, seed=seed)
        picks.append([drafter.choose(i) for i in range(64)])
    assert picks[0] == picks[1] and picks[0] != picks[2]
    wrong = [p for p, t in zip(picks[0], truths[0]) if p != t]
    assert wrong and all(0 <= p < dcache.vocab_size for p in picks[0])
