"""Greedy losslessness: speculative output == plain greedy output, token for token.

Tiny random models with the real tokenizers: a 32016-token target (CodeLlama's vocabulary) and
32000-token drafts that always (`same`), sometimes (`noisy`) or almost never (`draft`) agree.
"""

import pytest
import torch

from engine.completer import Completer, EngineOptions
from engine.drafters import ModelDrafter
from engine.errors import SpectabError
from engine.loading import load_model
from engine.sampling import SamplingParams

PROMPTS = [
    ("def fibonacci(n):\n    if n < 2:\n        return n\n    return ", "\n\nprint(fibonacci(10))\n"),
    ("import os\n\nclass Config:\n    def __init__(self, path):\n        self.path = path\n        self.", "\n"),
    ("for i in range(10):\n    for j in range(10):\n        total += i * j\nfor i in range(10):\n    for", ""),
]
TYPING = ["def add(a, b):\n    ret", "def add(a, b):\n    return", "def add(a, b):\n    return a", "def add(a):\n    return a"]
MAX_NEW = 24


@pytest.fixture(scope="module")
def models(tiny_models):
    return {name: load_model(str(path), device="cpu") for name, path in tiny_models.items()}


def completer(models, draft: str, fim: str, k: int = 4, adaptive: bool = True) -> Completer:
    draft_arg = models[draft] if draft in models else draft
    opts = EngineOptions(context_tokens=512, max_new_tokens_limit=64, k=k, k_min=1, k_max=max(k, 8), adaptive=adaptive)
    return Completer(models["target"], draft_arg, fim, opts)


def run_all(c: Completer, reuse: bool) -> list[list[int]]:
    out = []
    for prefix, suffix in PROMPTS + [(t, "\n") for t in TYPING]:
        if not reuse:
            c.reset_caches()
        out.append(c.complete(prefix, suffix, MAX_NEW).tokens)
    return out


@pytest.fixture(scope="module")
def reference(models):
    """Plain greedy decoding (no drafter) per prompt mode."""
    return {fim: run_all(completer(models, "none", fim), reuse=False) for fim in ("psm", "spm", "none")}


def test_plain_decoding_is_transformers_greedy(models, tiny_models, reference):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_models["target"]), dtype=torch.float32).eval()
    c = completer(models, "none", "psm")
    compared = 0
    for (prefix, suffix), ours in zip(PROMPTS, reference["psm"]):
        if prefix != prefix.rstrip(" \t"):
            continue  # a healed prompt constrains its first token (test_suggestions.py checks that)
        compared += 1
        prompt, _ = c.prompts(prefix, suffix, MAX_NEW)
        with torch.no_grad():
            full = hf.generate(torch.tensor([prompt]), max_new_tokens=MAX_NEW, do_sample=False,
                               eos_token_id=[2, 32010], pad_token_id=2)[0, len(prompt):].tolist()
        theirs = [t for t in full[: len(ours) + 1] if t not in (2, 32010)][: len(ours)]
        assert ours == theirs
    assert compared == 2


@pytest.mark.parametrize("fim", ["psm", "spm", "none"])
@pytest.mark.parametrize("draft", ["same", "noisy", "draft", "ngram"])
@pytest.mark.parametrize("k,adaptive", [(2, False), (5, True)])
@pytest.mark.parametrize("reuse", [True, False])
def test_speculative_equals_plain_greedy(models, reference, fim, draft, k, adaptive, reuse):
    c = completer(models, draft, fim, k, adaptive)
    got = run_all(c, reuse)
    assert got == reference[fim]


@pytest.mark.parametrize("draft,low,high", [("same", 0.9, 1.0), ("noisy", 0.05, 0.95), ("draft", 0.0, 0.2)])
def test_drafts_agree_as_built(models, draft, low, high):
    # the losslessness test above only means something if both paths (accept, reject) are taken;
    # left to right, so the draft reads the same prompt as the target
    c = completer(models, draft, "none", k=4, adaptive=False)
    proposed = accepted = 0
    for prefix, suffix in PROMPTS:
        s = c.complete(prefix, suffix, MAX_NEW).stats
        proposed, accepted = proposed + s.draft_proposed, accepted + s.draft_accepted
    assert proposed > 0 and low <= accepted / proposed <= high


def test_prefix_reuse_runs_only_new_tokens(models):
    c = completer(models, "same", "spm")
    first = c.complete(TYPING[1], "\n", 8)
    runs_before = c.target.tokens_run
    second = c.complete(TYPING[2], "\n", 8)  # typed one more word
    assert second.stats.reused_prompt_tokens >= first.stats.prompt_tokens - 2
    # the second prefill ran the few new prompt tokens plus the verify positions, not the prompt
    assert c.target.tokens_run - runs_before < first.stats.prompt_tokens + 8 * 9


def test_stops_and_streaming(models):
    c = completer(models, "same", "psm")
    streamed = []
    full = c.complete(*PROMPTS[0], max_new_tokens=40, on_text=streamed.append)
    assert "".join(streamed) == full.text and full.stats.stop_reason in ("length", "eos")
    if full.text:
        stop = full.text[len(full.text) // 2:][:2]
        cut = c.complete(*PROMPTS[0], max_new_tokens=40, stop_strings=(stop,))
        assert cut.text == full.text[: full.text.index(stop)] and cut.stats.stop_reason == "stop"
        assert full.tokens[: len(cut.tokens)] == cut.tokens
    short = c.complete(*PROMPTS[0], max_new_tokens=5)
    assert short.tokens == full.tokens[:5]
    line = c.complete(*PROMPTS[0], max_new_tokens=40, single_line=True)
    assert "\n" not in line.text and full.text.startswith(line.text)


def test_deadline_and_cancellation_stop_between_rounds(models):
    import time

    c = completer(models, "same", "psm")
    late = c.complete(*PROMPTS[0], max_new_tokens=20, deadline=time.monotonic() - 1)
    assert late.tokens == [] and late.stats.stop_reason == "deadline"
    calls = []
    cancelled = c.complete(*PROMPTS[0], max_new_tokens=20, cancelled=lambda: calls.append(1) or len(calls) > 2)
    assert cancelled.stats.stop_reason == "cancelled" and cancelled.stats.rounds == 2


def test_draft_sits_out_after_target_only_ids(models):
    drafter = ModelDrafter(completer(models, "same", "psm").draft, 32016)
    drafter.begin([1, 2], [1, 822])
    assert drafter.propose([822, 32011], 4, SamplingParams(), None).tokens == []
    assert len(drafter.propose([822, 788], 4, SamplingParams(), None).tokens) >= 1


def test_incompatible_tokenizers_are_refused(models, smollm2):
    with pytest.raises(SpectabError, match=r"differ at id 0 \(draft '<unk>', target '<\|endoftext\|>'\)"):
        Completer(smollm2.target_info, models["same"], "none")
    with pytest.raises(SpectabError, match="more than the target"):
        Completer(models["same"], models["target"], "none")  # 32016-token draft for a 32000 target
