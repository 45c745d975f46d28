"""Suggestion quality in the engine: the infilling draft, the confidence cut, candidates and the
workspace context in the prompt. Real tiny Llama models and the real CodeLlama tokenizer; every
expected value is computed independently (plain greedy decoding, a transformers forward)."""

from __future__ import annotations

import pytest
import torch

from engine.completer import Completer, EngineOptions
from engine.drafters import NoDrafter
from engine.loading import load_model
from engine.prompts import build_prompt, context_ids, fim_tokens, stop_ids
from engine.sampling import SamplingParams
from engine.speculative import StopRules, generate

PREFIX = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        data = "
SUFFIX = "\n    return data.strip()\n\n\ndef write(path, text):\n    pass\n"
CURSORS = [
    (PREFIX, SUFFIX),
    ("class Point:\n    def __init__(self, x, y):\n        self.x = ", "\n        self.y = y\n"),
    ("def total(items):\n    s = 0\n    for item in items:\n        ", "\n    return s\n"),
]


@pytest.fixture(scope="module")
def fim_self(tiny_models):
    """The tiny CodeLlama-vocabulary target as its own draft: it reads infilling prompts."""
    target = load_model(str(tiny_models["target"]), "cpu", quant="none")
    draft = load_model(str(tiny_models["target"]), "cpu", quant="none")
    return Completer(target, draft, "psm", EngineOptions(context_tokens=512, adaptive=False, k=4, min_confidence=0.0))


@pytest.fixture(scope="module")
def tiny_target(tiny_models):
    return load_model(str(tiny_models["target"]), "cpu", quant="none")


def test_an_infilling_draft_reads_the_infilling_prompt_and_every_draft_is_accepted(fim_self):
    assert fim_self.draft_infills
    for prefix, suffix in CURSORS:
        target_prompt, draft_prompt = fim_self.prompts(prefix, suffix, 16)
        assert draft_prompt == target_prompt and fim_tokens(fim_self.tokenizer).suffix in draft_prompt
        g = fim_self.complete(prefix, suffix, 16, document="fim")
        assert g.stats.draft_proposed > 0 and g.stats.draft_accepted == g.stats.draft_proposed, g.stats


def test_a_left_to_right_draft_prompt_loses_drafts_on_infilling_cursors(fim_self):
    """What `draftFim: none` (and every draft before this) does: the draft guesses as if the file
    ended at the cursor, and on some cursors the target rejects its tokens. The output is still
    the target's own greedy output."""
    rejected = 0
    for prefix, suffix in CURSORS:
        _t, draft_prompt = fim_self.prompts(prefix, suffix, 16, draft_fim="none")
        assert fim_tokens(fim_self.tokenizer).suffix not in draft_prompt
        ltr = fim_self.complete(prefix, suffix, 16, document="ltr", draft_fim="none")
        fim = fim_self.complete(prefix, suffix, 16, document="fim")
        assert ltr.tokens == fim.tokens
        rejected += ltr.stats.draft_proposed - ltr.stats.draft_accepted
    assert rejected > 0


def test_a_draft_without_infilling_tokens_reads_left_to_right(tiny_models, tiny_target):
    draft = load_model(str(tiny_models["same"]), "cpu", quant="none")
    c = Completer(tiny_target, draft, "psm", EngineOptions(context_tokens=512))
    assert not c.draft_infills
    target_prompt, draft_prompt = c.prompts(PREFIX, SUFFIX, 16)
    assert fim_tokens(c.tokenizer).prefix in target_prompt and draft_prompt == c.draft_info.tokenizer.encode_document(PREFIX)
    plain = Completer(tiny_target, "none", "psm", EngineOptions(context_tokens=512))
    assert c.complete(PREFIX, SUFFIX, 12).tokens == plain.complete(PREFIX, SUFFIX, 12).tokens


def hf_probs(model_dir, ids: list[int]) -> torch.Tensor:
    """The next-token distributions of a transformers forward over `ids`: [len(ids), V]."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.softmax(hf(torch.tensor([ids])).logits[0].float(), -1)


def test_probabilities_are_the_targets_and_the_cut_stops_at_the_first_unsure_token(tiny_models, tiny_target):
    c = Completer(tiny_target, "ngram", "psm", EngineOptions(context_tokens=512))
    prefix = PREFIX.rstrip()  # no whitespace to heal: the distributions are the plain ones
    full = c.complete(prefix, SUFFIX, 16)
    prompt, _ = c.prompts(prefix, SUFFIX, 16)
    dist = hf_probs(tiny_models["target"], prompt + full.tokens)
    for j, t in enumerate(full.tokens):
        assert full.probs[j] == pytest.approx(float(dist[len(prompt) - 1 + j, t]), rel=1e-3, abs=1e-5)
    # a token that is less sure than every one before it, from the third on
    j = next(j for j in range(2, len(full.tokens)) if full.probs[j] < min(full.probs[:j]))
    threshold = (full.probs[j] + min(full.probs[:j])) / 2
    cut = c.complete(prefix, SUFFIX, 16, min_confidence=threshold)
    assert cut.tokens == full.tokens[:j] and cut.stats.stop_reason == "confidence"
    assert cut.text == c.tokenizer.decode(full.tokens[:j])
    assert cut.confidence == pytest.approx(min(full.probs[:j]))


def test_whitespace_before_the_cursor_is_healed(tiny_models, tiny_target):
    """`data = `: the prompt ends at `data =`, the first token is the target's best among those
    that start with the space, the rest is plain greedy after it, and the text starts after the
    space."""
    c = Completer(tiny_target, "ngram", "psm", EngineOptions(context_tokens=512))
    g = c.complete(PREFIX, SUFFIX, 10)
    assert PREFIX.endswith(" ") and g.healed == " "
    prompt, _ = c.prompts(PREFIX.rstrip(" "), SUFFIX, 10)
    first_dist = hf_probs(tiny_models["target"], prompt)[-1]
    allowed = [i for i, t in enumerate(c.tokenizer.token_texts) if t and (t == " " or (t.startswith(" ") and t[1] not in " \t"))]
    assert g.tokens[0] == max(allowed, key=lambda i: float(first_dist[i]))
    rest = generate(c.lanes.get("plain").target, prompt + g.tokens[:1], NoDrafter(), c.tokenizer, SamplingParams(),
                    StopRules(9, stop_ids(c.tokenizer, "psm")))
    assert g.tokens[1:] == rest.tokens
    assert g.text == c.tokenizer.decode(g.tokens)[1:]


def test_each_candidate_is_the_greedy_continuation_of_its_branch(tiny_models, tiny_target):
    draft = load_model(str(tiny_models["noisy"]), "cpu", quant="none")  # speculation that is sometimes wrong
    # no time budget for the alternatives: the test checks what they are, not how fast
    c = Completer(tiny_target, draft, "psm", EngineOptions(context_tokens=512, alternatives_time_share=None))
    n = 14
    prefix = PREFIX.rstrip()  # nothing to heal: every position may branch
    g = c.complete(prefix, SUFFIX, n, candidates=3, document="cand")
    assert len(g.alternatives) == 2
    prompt, _ = c.prompts(prefix, SUFFIX, n)
    dist = hf_probs(tiny_models["target"], prompt + g.tokens)
    least = sorted(range(len(g.tokens)), key=lambda j: g.probs[j])[:2]
    assert sorted(a.branch for a in g.alternatives) == sorted(least)
    for alt in g.alternatives:
        j = alt.branch
        assert alt.tokens[:j] == g.tokens[:j]
        second = torch.topk(dist[len(prompt) - 1 + j], 2).indices.tolist()
        assert second[0] == g.tokens[j]
        if second[1] in stop_ids(c.tokenizer, "psm"):
            assert alt.tokens == g.tokens[:j]  # the second choice ends the suggestion there
            continue
        assert alt.tokens[j] == second[1]
        rest = generate(c.lanes.get("plain").target, prompt + alt.tokens[: j + 1], NoDrafter(), c.tokenizer,
                        SamplingParams(), StopRules(n - j - 1, stop_ids(c.tokenizer, "psm")))
        assert alt.tokens[j + 1:] == rest.tokens
        assert alt.text == c.tokenizer.decode(alt.tokens)


def test_context_chunks_lead_the_prefix_newest_kept_within_budget(tiny_target):
    tok = tiny_target.tokenizer
    chunks = ("# a.py\ndef alpha(x):\n    return x\n\n", "# b.py\ndef beta(y):\n    return y * 2\n\n", "# here.py\n")
    ids = context_ids(tok, chunks, 1000)
    assert tok.decode(ids).lstrip() == "".join(chunks).lstrip()
    prompt = build_prompt(tok, "psm", "def gamma():\n    return ", "\n", 512, ids)
    fim = fim_tokens(tok)
    assert prompt[: 2 + len(ids)] == [tok.bos_id, fim.prefix] + ids
    # a budget that holds only the newest two: the oldest goes, the order stays
    small = context_ids(tok, chunks, len(context_ids(tok, chunks[1:], 1000)) + 2)
    assert tok.decode(small).lstrip() == "".join(chunks[1:]).lstrip()
    assert context_ids(tok, chunks, 0) == []
    c = Completer(tiny_target, "none", "psm", EngineOptions(context_tokens=512))
    with_context, _ = c.prompts("def gamma():\n    return ", "\n", 16, context=chunks, context_tokens=256)
    without, _ = c.prompts("def gamma():\n    return ", "\n", 16)
    assert "def beta(y)" in tok.hf.decode(with_context) and "def beta" not in tok.hf.decode(without)
