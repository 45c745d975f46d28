"""Sampling losslessness: speculative sampling draws from the target's own distribution.

Small-vocabulary models make the exact target distribution of a short continuation computable by
enumeration; a chi-square test compares it with many speculative samples. The same test run
against the draft's distribution must fail, which shows it has the power to catch a wrong sampler.
"""

import pytest
import torch

from engine.cached_model import CachedModel
from engine.drafters import ModelDrafter, PromptLookupDrafter
from engine.model import Llama, load_hf_weights
from engine.config import ModelConfig
from engine.sampling import SamplingParams, probabilities
from engine.draft_policy import DraftLength
from engine.speculative import StopRules, generate
from engine.tokens import Tokenizer

from .conftest import hf_llama

VOCAB_TARGET, VOCAB_DRAFT = 12, 10  # the draft lacks the target's last two ids
PROMPT = [1, 5, 7, 5, 7, 3]
SAMPLES = 3000


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB_TARGET)}
    raw = RawTokenizer(WordLevel(vocab, unk_token="w0"))
    raw.pre_tokenizer = WhitespaceSplit()
    return Tokenizer(PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="w0"), "words")


def small_model(vocab: int, seed: int) -> Llama:
    # std 0.15: distributions peaked enough that top-p and top-k cut tokens, broad enough to test
    hf = hf_llama(vocab, 32, 1, 2, 2, 64, 1e4, 64, False, seed=seed, std=0.15)
    model = Llama(ModelConfig.from_hf(hf.config.to_dict()))
    load_hf_weights(model, hf.state_dict().__getitem__)
    return model.eval()


def exact_distribution(model: Llama, params: SamplingParams, steps: int) -> dict[tuple, float]:
    """P(t1..t_steps | PROMPT) under `model` with the sampling adjustments, by enumeration."""
    cm = CachedModel(model, 32)
    out = {(): 1.0}
    for _ in range(steps):
        nxt = {}
        for seq, p in out.items():
            probs = probabilities(cm.extend(PROMPT + list(seq), 1), params)[0]
            for t in range(probs.shape[0]):
                if probs[t] > 0:
                    nxt[seq + (t,)] = p * float(probs[t])
        out = nxt
    return out


def chi_square_p(counts: dict[tuple, int], probs: dict[tuple, float], n: int) -> float:
    """p-value of observed counts against probabilities (cells with expectation < 5 pooled)."""
    assert all(k in probs for k in counts), f"sampled a sequence of probability zero: {set(counts) - set(probs)}"
    stat, dof, pooled_e, pooled_o = 0.0, -1, 0.0, 0
    for k, p in probs.items():
        e, o = p * n, counts.get(k, 0)
        if e < 5:
            pooled_e, pooled_o = pooled_e + e, pooled_o + o
            continue
        stat, dof = stat + (o - e) ** 2 / e, dof + 1
    if pooled_e > 0:
        stat, dof = stat + (pooled_o - pooled_e) ** 2 / pooled_e, dof + 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), torch.tensor(stat / 2.0, dtype=torch.float64)))


def sample_many(target: Llama, drafter, tok, params: SamplingParams, steps: int, k: int, both_branches: bool = True) -> dict[tuple, int]:
    cm = CachedModel(target, 32)
    gen = torch.Generator().manual_seed(1234)
    counts: dict[tuple, int] = {}
    proposed = accepted = 0
    for _ in range(SAMPLES):
        g = generate(cm, PROMPT, drafter, tok, params, StopRules(max_new_tokens=steps),
                     DraftLength(k, k, k, adaptive=False), draft_prompt=PROMPT, generator=gen)
        key = tuple(g.tokens)
        counts[key] = counts.get(key, 0) + 1
        proposed, accepted = proposed + g.stats.draft_proposed, accepted + g.stats.draft_accepted
    # both branches of the verifier ran many times: acceptances and rejections
    assert not both_branches or 50 < accepted < proposed - 50, (accepted, proposed)
    return counts


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7, top_p=0.8),
    SamplingParams(temperature=1.3, top_k=5),
], ids=["t1", "t0.7-p0.8", "t1.3-k5"])
def test_draft_model_sampling_follows_the_target(word_tokenizer, params):
    target, draft = small_model(VOCAB_TARGET, 1), small_model(VOCAB_DRAFT, 2)
    drafter = ModelDrafter(CachedModel(draft, 32), VOCAB_TARGET, min_confidence=0.0)
    counts = sample_many(target, drafter, word_tokenizer, params, steps=3, k=2)
    exact = exact_distribution(target, params, 3)
    assert chi_square_p(counts, exact, SAMPLES) > 1e-3
    # power: the same samples are far from what the draft alone would produce
    draft_padded = exact_distribution(draft, params, 3)
    assert sum(counts.values()) == SAMPLES
    assert chi_square_p({k: v for k, v in counts.items() if k in draft_padded}, draft_padded, SAMPLES) < 1e-6


def test_prompt_lookup_sampling_follows_the_target(word_tokenizer):
    params = SamplingParams(temperature=0.9, top_p=0.95)
    target = small_model(VOCAB_TARGET, 3)
    counts = sample_many(target, PromptLookupDrafter(2, 1), word_tokenizer, params, steps=3, k=3)
    assert chi_square_p(counts, exact_distribution(target, params, 3), SAMPLES) > 1e-3


def test_accepting_drafts_blindly_would_be_caught(word_tokenizer, monkeypatch):
    # a deliberately wrong verifier (keep every draft token) must fail the same test
    import engine.sampling as sampling
    import engine.speculative as speculative

    monkeypatch.setattr(speculative, "accept_sampled", lambda p, q, drafts, g: (len(drafts), sampling.sample(p[len(drafts)], g)))
    params = SamplingParams(temperature=1.0)
    target, draft = small_model(VOCAB_TARGET, 1), small_model(VOCAB_DRAFT, 2)
    counts = sample_many(target, ModelDrafter(CachedModel(draft, 32), VOCAB_TARGET, 0.0), word_tokenizer, params, 3, 2, both_branches=False)
    assert chi_square_p(counts, exact_distribution(target, params, 3), SAMPLES) < 1e-6
