"""KV lanes in the engine: a cache per document, switched without copies, evicted least recently used."""

import pytest

from engine.completer import Completer, EngineOptions
from engine.lanes import auto_lane_count
from engine.loading import load_model


def prompts(n_docs: int, rounds: int):
    """Documents typed forward in turn: a line more each round."""
    for r in range(rounds):
        for i in range(n_docs):
            body = "".join(f"    v{n} = step_{i}(v{n - 1}, {n})\n" for n in range(1, 8 + r))
            yield f"doc{i}", f"def f{i}(a):\n    v0 = a\n{body}    return "


@pytest.fixture(scope="module", params=["none", "int8"])
def models(request, tiny_models):
    quant = request.param
    return load_model(str(tiny_models["target"]), "cpu", quant=quant), load_model(str(tiny_models["noisy"]), "cpu", quant=quant)


def make(models, lanes: int) -> Completer:
    target, draft = models
    return Completer(target, draft, "none", EngineOptions(context_tokens=512, kv_lanes=lanes))


def test_lanes_give_the_same_text_as_one_cache_and_keep_each_prefix(models):
    laned, single = make(models, 3), make(models, 1)
    reused_laned = reused_single = total = 0
    for doc, prompt in prompts(3, 3):
        a = laned.complete(prompt, max_new_tokens=10, document=doc)
        b = single.complete(prompt, max_new_tokens=10, document=doc)
        # switching lanes never mixes one document's keys into another's: the same greedy text
        assert a.tokens == b.tokens
        reused_laned += a.stats.reused_prompt_tokens
        reused_single += b.stats.reused_prompt_tokens
        total += a.stats.prompt_tokens
    assert reused_laned > 0.5 * total  # each document reran only its new line (after its first round)
    assert reused_single < 0.1 * total  # one cache: every switch of document starts over
    assert [lane["document"] for lane in laned.lanes.describe()] == ["doc0", "doc1", "doc2"]
    assert [lane["document"] for lane in single.lanes.describe()] == ["doc2"]
    assert single.lanes.evictions == 8


def test_least_recently_used_lane_is_evicted_and_forget_frees_one(models):
    c = make(models, 2)
    for doc in ("a", "b", "a", "c"):  # c evicts b, the least recently used
        c.complete(f"# {doc}\ndef {doc}(x):\n    return ", max_new_tokens=4, document=doc)
    assert [lane["document"] for lane in c.lanes.describe()] == ["a", "c"]
    assert all(lane["tokens"] > 0 for lane in c.lanes.describe())
    c.forget("a")
    assert [lane["document"] for lane in c.lanes.describe()] == ["c"]
    again = c.complete("# a\ndef a(x):\n    return ", max_new_tokens=4, document="a")
    assert again.stats.reused_prompt_tokens == 0  # a forgotten lane starts empty


def test_auto_lane_count_follows_free_memory():
    gb = 1 << 30
    assert auto_lane_count(gb, free_bytes=8 * gb) == 4  # half of 8 GB in 1 GB lanes
    assert auto_lane_count(gb, free_bytes=gb) == 1  # at least one
    assert auto_lane_count(1 << 20, free_bytes=64 * gb) == 16  # at most 16
