"""Short forwards of a quantized model on the CPU (decode steps, draft steps, verifies of k+1)
compiled with torch.compile's inductor backend, so a step no longer pays Python for each operation.

An eager SmolLM2-135M decode step runs about 1,200 ATen operations; on a 2-core AVX2 EPYC the
weight-only kernels and attention took 15 ms of its 27.5 ms and the rest went to launching the small
ones between them (casts, rotary, norms, cache writes); compiled, that rest is 3 ms
(benchmarks/step_profile.py). Inductor fuses those into a few generated C++ loops
around the same kernels (`_weight_int4pack_mm_for_cpu`, `_weight_int8pack_mm` and SDPA stay ATen
calls).

Same tokens: inductor's RMS norm sums a row in another order than ATen's, so a compiled step can
differ from the eager one in the last bits (and a greedy token at a near-tie). Losslessness needs
something else: that a verify's rows give exactly what decode steps give. So the generated loops run
single-threaded (inductor may parallelise a reduction whose outer loop is short, which would split a
lone row's sum between threads and not one of four rows'; on SmolLM2 the rows agreed either way, and
one thread cost nothing measurable), and every verify of a compiled model runs through a graph: the
engine then drafts at most VERIFY_MAX - 1 tokens (engine/completer.py). Eager forwards remain for
prompt positions only (positions 0 and 1, a prompt's tail), which plain and speculative decoding run
alike. tests/test_compiled_step.py checks verify rows against decode steps bit for bit and
speculative against plain output; benchmark 9 shows the latter on real prompts.

Layers are compiled in groups of up to GROUP_MAX. Timed by hand while choosing (no script): the
whole 30-layer model as one graph was 2 ms faster a step than groups of six, but took 20-50 s to
compile per number of positions against 2-6 s; one layer per graph gave back 3 of the 7 ms won (a
guard check and a wrapper call per layer). The
groups are alike, so every group reuses one graph: the layers' weights and caches are its inputs.

Rules:
  - Compiled while the model loads (`warm`), for the numbers of positions the engine will run
    (1 for a decode step, verifies up to VERIFY_MAX, a draft's 1 and 2), never on a request: calls
    run under torch's `fail_on_recompile` stance, and anything that would compile (a size not
    warmed, position 0 or 1, which torch specialises, a forward reaching the cache's last slot)
    runs eagerly instead.
  - Inductor's cache lives under spectab's cache dir, so a second start mostly reads it.
  - A machine without a working C++ compiler, or any other failure to compile, costs one warning
    and leaves the model eager.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Iterable

import torch

from .errors import SpectabError, first_line
from .model import Llama

log = logging.getLogger("spectab")

GROUP_MAX = 8  # layers per compiled graph (see the module doc)
COMPILE_ENV = "SPECTAB_COMPILE"
COMPILE_MODES = ("auto", "on", "off")
MIN_START = 2
"""torch specialises an integer argument that is 0 or 1 (a graph of its own), so forwards that start
there (the first positions of a prompt) run eagerly."""
VERIFY_MAX = 4
"""The largest verify compiled: torch's int4 kernel takes input rows four at a time, so a fifth
position costs about what the first four do (SmolLM2-135M on the 2-core AVX2 EPYC, the verify cost
curve benchmark 9 logs: 1.46x one position for 4, 2.06x for 5), so drafting more rarely paid.
Larger verifies run eagerly (a draft model's catch-up, a prompt's tail)."""
DRAFT_STEP_SIZES = (1, 2)  # a draft model's forwards: its next token, or catching up on two after a round
WARM_START = 37  # warm-up position: not 0 or 1, and equal to no size of the model (torch would tie them)


def compile_mode() -> str:
    """`SPECTAB_COMPILE`: auto (compile where the caller asks: the servers, not a one-shot
    `spectab complete`, whose few tokens do not repay the compile), on (always) or off (never)."""
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower() or "auto"
    if mode not in COMPILE_MODES:
        raise SpectabError(f"{COMPILE_ENV} must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
    return mode


def step_sizes(k_max: int) -> tuple[int, ...]:
    """The target's forwards to compile: the decode step, and verifies of 2..k_max+1 up to VERIFY_MAX."""
    return (1, *range(2, min(k_max + 1, VERIFY_MAX) + 1))


def group_size(num_layers: int) -> int:
    """The largest divisor of the layer count up to GROUP_MAX: equal groups, one graph."""
    return max(d for d in range(1, GROUP_MAX + 1) if num_layers % d == 0)


def run_layers(layers: tuple, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int) -> torch.Tensor:
    """x: [1, S, hidden] through `layers` at positions start..start+S-1 (each writes its keys and
    values into its cache). No mask: one position sees the whole cache, and several attend one row
    at a time (exact_rows_attention), which is how a quantized model runs short forwards."""
    for layer in layers:
        x = layer(x, cos, sin, start, None)
    return x


class CompiledSteps:
    """The compiled short forwards of one model; attached to it as `model.compiled_steps`."""

    def __init__(self, model: Llama):
        assert all(layer.attn.exact_rows for layer in model.layers), \
            "compiled steps are for quantized models, whose short forwards attend row by row"
        self.model = model
        g = group_size(model.config.num_layers)
        self.groups = [tuple(model.layers[i:i + g]) for i in range(0, model.config.num_layers, g)]
        self.sizes: set[int] = set()  # numbers of positions with a compiled graph
        self.failed: str | None = None
        self.runs = 0  # forwards served by the graphs
        self.declined = 0  # forwards of a compiled size that ran eagerly after all (a guard failed)
        _configure_torch()
        # generated loops single-threaded, so a row's norm sums in one order whatever the number of
        # rows (see the module doc); the kernels between them keep torch's threads
        self.layers = torch.compile(run_layers, dynamic=True, fullgraph=True, options={"cpp.threads": 1})

    def warm(self, sizes: Iterable[int], name: str = "model") -> None:
        """Compile the forwards over each of `sizes` positions, on scratch keys and values (the
        model's own caches are untouched; the next CachedModel to run re-attaches its own)."""
        todo = sorted(set(sizes) - self.sizes)
        if not todo or self.failed:
            return
        model = self.model
        began = time.perf_counter()
        log.info("compiling %s's decode step for %s positions (inductor; cached under %s)",
                 name, ", ".join(map(str, todo)), os.environ["TORCHINDUCTOR_CACHE_DIR"])
        try:
            # in inference mode, as CachedModel makes its caches and runs: torch guards on it (a
            # cache or rotary table made outside it would not match the graphs)
            with torch.inference_mode():
                model.attach_cache(model.new_cache(WARM_START + max(todo) + 1))
                for size in todo:
                    t = time.perf_counter()
                    self._forward(torch.zeros(1, size, dtype=torch.long, device=model.device), WARM_START, 1)
                    self.sizes.add(size)
                    log.info("  %d position%s: %.1f s", size, "" if size == 1 else "s", time.perf_counter() - t)
        except Exception as err:  # no C++ compiler, an inductor bug: the eager forward still works
            self.failed = first_line(err)
            self.sizes.clear()
            log.warning("the compiled decode step is unavailable (%s); %s runs eagerly (set %s=off to skip trying)",
                        self.failed, name, COMPILE_ENV)
        finally:
            model.cache_owner = None  # the scratch cache is attached: the next user re-attaches its own
        if not self.failed:
            log.info("compiled in %.1f s", time.perf_counter() - began)

    def forward(self, tokens: torch.Tensor, start: int, n_logits: int) -> torch.Tensor | None:
        """Logits [n_logits, vocab] as Llama.forward gives them, or None where the compiled graphs do
        not cover this forward (the caller runs it eagerly)."""
        return self._declining(self._forward, tokens.shape[1], start, self.model.capacity, tokens, start, n_logits)

    def run_layers(self, layers: tuple, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int) -> torch.Tensor | None:
        """One group of layers through the compiled graph (engine/verify_cost.py times it), or None."""
        return self._declining(self.layers, x.shape[1], start, layers[0].attn.k_cache.shape[2], layers, x, cos, sin, start)

    def _declining(self, fn, size: int, start: int, capacity: int, *args) -> torch.Tensor | None:
        # MIN_START; and a forward that fills the cache to its very end, a slice torch specialises
        if size not in self.sizes or start < MIN_START or start + size >= capacity:
            return None
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                out = fn(*args)
        except Exception as err:
            # a guard that torch did not expect to fail: the layers that ran wrote keys and values
            # at these positions, which the eager forward overwrites
            self.declined += 1
            (log.info if self.declined == 1 else log.debug)("a compiled step ran eagerly instead: %s", first_line(err))
            return None
        self.runs += 1
        return out

    def _forward(self, tokens: torch.Tensor, start: int, n_logits: int) -> torch.Tensor:
        # tokens: [1, S]; the same steps as Llama.forward, the layers through the compiled graph
        model, S = self.model, tokens.shape[1]
        end = start + S
        assert end <= model.capacity, f"positions up to {end} exceed the KV cache ({model.capacity}); call setup_cache"
        cos, sin = model.rope_cos[start:end], model.rope_sin[start:end]
        x = model.embed(tokens).to(model.compute_dtype)
        for group in self.groups:
            x = self.layers(group, x, cos, sin, start)
        return model.logits(x[:, -n_logits:])


# read before torch can set it: torch writes its default (under /tmp) into the environment on first use
_USER_INDUCTOR_CACHE = "TORCHINDUCTOR_CACHE_DIR" in os.environ


def _configure_torch() -> None:
    # inductor's cache beside spectab's other conversions (the packed models), not in /tmp
    if not _USER_INDUCTOR_CACHE:
        from .loading import cache_dir

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
    # one graph per number of positions per model shape: a target's 1..k+1 and its draft's
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)


def compile_steps(model: Llama, sizes: Iterable[int], name: str, wanted: bool = True) -> CompiledSteps | None:
    """Give a quantized CPU model compiled short forwards for `sizes` positions (see the module
    doc), where `wanted` or SPECTAB_COMPILE=on; None where they do not apply (a float or GPU model,
    SPECTAB_COMPILE=off, not wanted)."""
    mode = compile_mode()
    if mode == "off" or (mode == "auto" and not wanted):
        return None
    if model.device.type != "cpu" or not getattr(model, "quant_kinds", None):
        return None
    steps = getattr(model, "compiled_steps", None)
    if steps is None:
        steps = model.compiled_steps = CompiledSteps(model)
    steps.warm(sizes, name)
    return steps
