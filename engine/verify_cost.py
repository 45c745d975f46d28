"""What a forward over n positions costs against a forward over one, measured when a model loads.

The draft-length policy (engine/draft_policy.py) weighs the tokens a round may yield against what
its verify forward costs. On a GPU that cost hardly grows with the positions verified; on the CPU
it grows in steps that a linear guess misses: torch's int4 kernel multiplies input rows four at a
time, so on a 2-core AVX-512 EPYC a 4096x22016 product took 3.1 ms for 1 row, 5.5 ms for 4 and
10.2 ms for 5, and each verified position also runs its own attention (model.py's
exact_rows_attention). A policy that learned this from generated rounds alone would spend the
first requests verifying 6-9 positions at three times the price of one.

`relative_verify_costs` times one transformer block of the model itself, on scratch keys and
values (the model's caches are untouched), at every size the policy may verify, after a short
cached prefix: the blocks are alike, so one block's curve is the model's. It costs about one
block-prefill of `PROBE_CACHED` positions plus a few block forwards per size: under half a second
for SmolLM2-135M, 1.5 s for the CodeLlama-7b shape (2-core EPYC).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from .model import Llama, causal_mask, lazy_zeros, rope_tables

if TYPE_CHECKING:
    from .compiled_step import CompiledSteps

PROBE_CACHED = 128  # positions in the scratch cache before the timed forwards (a short prompt)
REPEATS = 5  # measurements per size; the fastest counts (the others met a busy machine)
MEASURE_S = 0.004  # each measurement times this long a run of forwards (at least one)


@torch.inference_mode()
def relative_verify_costs(model: Llama, max_size: int, steps: "CompiledSteps | None" = None) -> dict[int, float]:
    """{size: seconds of a forward over `size` new positions / seconds over 1}, sizes 1..max_size.
    With `steps` (engine/compiled_step.py) one group of its layers is timed, through the compiled
    graph for the sizes it compiled and eagerly for the others, as the engine will run them."""
    cfg = model.config
    group = steps.groups[0] if steps is not None else (model.layers[0],)
    device, dtype = model.device, model.compute_dtype
    capacity = PROBE_CACHED + max_size + 1  # forwards end before the cache does, as the engine's (completer.py)
    shape = (1, cfg.num_kv_heads, capacity, cfg.head_dim)
    cos, sin = rope_tables(cfg, capacity, device, dtype)
    saved = [(layer.attn.k_cache, layer.attn.v_cache) for layer in group]
    for layer in group:
        layer.attn.k_cache, layer.attn.v_cache = lazy_zeros(shape, dtype, device), lazy_zeros(shape, dtype, device)
    generator = torch.Generator(device).manual_seed(0)

    def run(x, c, s, size: int) -> None:
        if steps is None or steps.run_layers(group, x, c, s, PROBE_CACHED) is None:
            for layer in group:
                layer(x, c, s, PROBE_CACHED, causal_mask(PROBE_CACHED, size, device))

    def forward(size: int, runs: int = 1) -> float:
        """Seconds per forward over `size` positions after the cached prefix (the mean of `runs`)."""
        x = torch.randn(1, size, cfg.hidden_size, generator=generator, device=device).to(dtype)
        c, s = cos[PROBE_CACHED:PROBE_CACHED + size], sin[PROBE_CACHED:PROBE_CACHED + size]
        t = time.perf_counter()
        for _ in range(runs):
            run(x, c, s, size)
        return (time.perf_counter() - t) / runs

    try:
        for layer in group:
            layer(torch.zeros(1, PROBE_CACHED, cfg.hidden_size, device=device, dtype=dtype), cos[:PROBE_CACHED], sin[:PROBE_CACHED], 0, None)
        sizes = range(1, max_size + 1)
        for size in sizes:
            forward(size)  # warm-up: the first forward of a shape allocates
        # a small model's block takes a fraction of a millisecond: time enough forwards at once
        # that the clock and a passing interruption are small beside them, sizes interleaved
        runs = max(1, round(MEASURE_S / forward(1)))
        seconds = {size: float("inf") for size in sizes}
        for _ in range(REPEATS):
            for size in sizes:
                seconds[size] = min(seconds[size], forward(size, runs))
    finally:
        for layer, (k, v) in zip(group, saved):
            layer.attn.k_cache, layer.attn.v_cache = k, v
    return {size: s / seconds[1] for size, s in seconds.items()}
