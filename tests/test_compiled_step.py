"""The compiled short forwards of quantized CPU models (engine/compiled_step.py): a verify's rows
equal decode steps bit for bit and stay close to the eager forward, so speculative decoding through
them gives the compiled target's own greedy output; they never compile on a request; and a machine
where compiling fails still completes.

The rest of the suite runs with SPECTAB_COMPILE=off (conftest.py): compiling every model that every
test and every engine subprocess loads would add minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.cached_model import CachedModel
from engine.compiled_step import DRAFT_STEP_SIZES, CompiledSteps, compile_mode, compile_steps, group_size, step_sizes
from engine.completer import Completer, EngineOptions
from engine.errors import SpectabError
from engine.loading import load_model

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    ("def fibonacci(n):\n    if n < 2:\n        return n\n    return ", "\n\nprint(fibonacci(10))\n"),
    ("import os\n\nclass Config:\n    def __init__(self, path):\n        self.path = path\n        self.", "\n"),
    ("for i in range(10):\n    for j in range(10):\n        total += i * j\nfor i in range(10):\n    for", ""),
]


@pytest.fixture
def compiling(monkeypatch):
    monkeypatch.setenv("SPECTAB_COMPILE", "auto")


@pytest.fixture(scope="module")
def models(tiny_models):
    return {(name, quant): load_model(str(tiny_models[name]), "cpu", quant=quant)
            for name, quant in (("target", "int4"), ("target", "int8"), ("noisy", "int8"))}


def options(**changes) -> EngineOptions:
    return EngineOptions(**{"context_tokens": 512, "max_new_tokens_limit": 64, "k": 3, "k_max": 3} | changes)


def switch(model, steps):
    """The model with its short forwards compiled (steps) or eager (None)."""
    model.compiled_steps = steps
    return model


@pytest.mark.parametrize("quant", ["int4", "int8"])
def test_compiled_steps_stay_close_to_the_eager_forward(compiling, models, quant):
    model = models[("target", quant)].model
    steps = compile_steps(model, step_sizes(3), "tiny target")
    assert steps is not None and steps.failed is None and steps.sizes == {1, 2, 3, 4}
    results = {}
    for compiled in (False, True):
        ids = models[("target", quant)].tokenizer.encode(PROMPTS[0][0])
        extra = [29871, 13, 1678, 736, 263, 718, 289, 29892, 29871]
        switch(model, steps if compiled else None)
        cache = CachedModel(model, 128)
        runs = steps.runs
        out = [cache.extend(ids, 1)]  # a prefill whose last position runs alone
        for n in (1, 1, 3, 2, 4, 1):  # decode steps and verifies of every compiled size
            ids = ids + extra[:n]
            extra = extra[n:] + extra[:n]
            out.append(cache.extend(ids, n))
        results[compiled] = out
        assert (steps.runs > runs) == compiled
    switch(model, None)
    assert steps.declined == 0
    for eager, compiled in zip(results[False], results[True]):
        # inductor's norm sums in another order: the last bits may differ, nothing more
        assert torch.allclose(eager, compiled, rtol=1e-4, atol=1e-4 * eager.abs().max().item())


@pytest.mark.parametrize("quant", ["int4", "int8"])
def test_a_compiled_verify_gives_exactly_the_decode_steps_numbers(compiling, models, quant):
    model = models[("target", quant)].model
    steps = compile_steps(model, step_sizes(3), "tiny target")
    generator = torch.Generator().manual_seed(0)
    cache = CachedModel(switch(model, steps), 256)
    ids = torch.randint(3, 32000, (40,), generator=generator).tolist()
    cache.extend(ids, 1)
    with torch.inference_mode():
        for start in range(40, 200, 4):
            for size in (2, 3, 4):
                new = torch.randint(3, 32000, (size,), generator=generator)
                verify = steps.forward(new.view(1, -1), start, size)
                rows = torch.cat([steps.forward(new[i:i + 1].view(1, 1), start + i, 1) for i in range(size)])
                assert torch.equal(verify, rows), (start, size)
    assert steps.declined == 0
    switch(model, None)


@pytest.mark.parametrize("fim", ["psm", "none"])
def test_speculation_through_compiled_steps_gives_the_compiled_plain_output(compiling, models, fim):
    target, draft = models[("target", "int4")], models[("noisy", "int8")]
    for m in (target, draft):
        switch(m.model, None)
    plain = [Completer(target, "none", fim, options()).complete(p, s, 20).tokens for p, s in PROMPTS]
    assert target.model.compiled_steps.sizes == {1}
    # k_max 8 asked for: the drafts stop at three, so every verify runs through a graph
    c = Completer(target, draft, fim, options(k=4, k_max=8, adaptive=False))
    assert c.draft_length.k_max == 3
    t_steps, d_steps = target.model.compiled_steps, draft.model.compiled_steps
    assert t_steps.sizes == {1, 2, 3, 4} and d_steps.sizes >= set(DRAFT_STEP_SIZES)
    t_runs, d_runs = t_steps.runs, d_steps.runs
    spec = [c.complete(p, s, 20) for p, s in PROMPTS]
    assert [r.tokens for r in spec] == plain and any(plain)
    # both branches of the verifier ran, through the compiled graphs, on both models
    proposed, accepted = sum(r.stats.draft_proposed for r in spec), sum(r.stats.draft_accepted for r in spec)
    assert 0 < accepted < proposed
    assert t_steps.runs > t_runs and d_steps.runs > d_runs and t_steps.declined == d_steps.declined == 0


def test_lanes_switch_under_the_compiled_steps(compiling, models, monkeypatch):
    # each document's KV lane attaches its own cache buffers to the model; the graphs read
    # whichever are attached, so alternating documents neither recompiles nor mixes caches
    target = models[("target", "int8")]
    docs = [(f"doc{i}", f"def f{i}(a):\n    v{i} = a * {i}\n    return ") for i in range(3)]

    switch(target.model, None)

    def run(lanes: int) -> list[list[int]]:
        c = Completer(target, "ngram", "none", options(kv_lanes=lanes))
        return [c.complete(text + "v" * r, "", 8, document=doc).tokens for r in range(2) for doc, text in docs]

    one_cache = run(1)
    runs = target.model.compiled_steps.runs
    assert run(3) == one_cache
    steps = target.model.compiled_steps
    assert steps.runs > runs and steps.declined == 0


def test_what_the_graphs_do_not_cover_runs_eagerly(compiling, models):
    model = models[("target", "int8")].model
    steps = CompiledSteps(model)
    steps.warm((1,), "tiny target")
    switch(model, steps)
    cache = CachedModel(model, 64)
    ids = models[("target", "int8")].tokenizer.encode("def add(a, b):")
    runs = steps.runs
    cache.extend(ids[:1], 1)  # position 0: torch specialises it, so no graph covers it
    cache.extend(ids[:2], 1)  # position 1: likewise
    assert steps.runs == runs
    cache.extend(ids[:3], 1)
    assert steps.runs == runs + 1
    cache.extend(ids[:5], 1)  # two new positions: a size never warmed is never compiled on a request
    assert steps.runs == runs + 1 and steps.sizes == {1} and steps.declined == 0
    switch(model, None)


def test_auto_compiles_where_asked_on_always_off_never(models, tiny_models, monkeypatch):
    model = models[("target", "int8")].model
    switch(model, None)
    for mode, wanted, compiles in (("auto", False, False), ("off", True, False), ("auto", True, True), ("on", False, True)):
        monkeypatch.setenv("SPECTAB_COMPILE", mode)
        steps = compile_steps(model, (1,), "tiny target", wanted)
        assert (steps is not None and steps.sizes == {1}) == compiles, (mode, wanted)
        switch(model, None)
    monkeypatch.setenv("SPECTAB_COMPILE", "on")  # a float model keeps today's eager path
    assert compile_steps(load_model(str(tiny_models["target"]), "cpu", quant="none").model, (1,), "float", True) is None


def test_group_sizes_and_the_setting():
    assert [group_size(n) for n in (30, 32, 12, 2, 7, 11)] == [6, 8, 6, 2, 7, 1]
    assert step_sizes(0) == (1,) and step_sizes(8) == (1, 2, 3, 4) and step_sizes(2) == (1, 2, 3)


def test_an_unknown_compile_setting_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTAB_COMPILE", "sometimes")
    with pytest.raises(SpectabError, match="SPECTAB_COMPILE must be one of auto, on, off"):
        compile_mode()
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return\n")
    r = subprocess.run([sys.executable, "-m", "spectab", "complete", f"{src}:2:11"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert r.returncode != 0 and r.stderr.strip().splitlines() == ["spectab: error: SPECTAB_COMPILE must be one of auto, on, off, not 'sometimes'"]


def quickstart(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`spectab complete` with its steps compiled, as the servers run them (one completion alone
    does not compile unless SPECTAB_COMPILE=on)."""
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return\n")
    return subprocess.run([sys.executable, "-m", "spectab", "-v", "complete", f"{src}:2:11"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env=os.environ | {"PYTHONPATH": str(ROOT), "SPECTAB_COMPILE": "on"} | env)


def test_the_offline_model_completes_through_its_compiled_steps(smollm2_gguf, tmp_path):
    r = quickstart(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "a + b"
    assert "decode step for 1, 2, 3, 4 positions" in r.stderr and "compiled in" in r.stderr
    assert "unavailable" not in r.stderr and "ran eagerly" not in r.stderr


def test_one_completion_from_the_command_line_does_not_compile(smollm2_gguf, tmp_path):
    r = quickstart(tmp_path, SPECTAB_COMPILE="auto")
    assert r.returncode == 0 and r.stdout.strip() == "a + b", r.stderr
    assert "compiling" not in r.stderr


def test_without_a_cpp_compiler_the_model_runs_eagerly_after_one_warning(smollm2_gguf, tmp_path):
    # inductor's own cache is fresh, so it must compile, and the compiler it is given does not exist
    r = quickstart(tmp_path, CXX=str(tmp_path / "no-such-c++"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "a + b"
    warnings = [line for line in r.stderr.splitlines() if "compiled decode step is unavailable" in line]
    assert len(warnings) == 1 and "runs eagerly" in warnings[0]
