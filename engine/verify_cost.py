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

import torch

from .model import Llama, causal_mask, lazy_zeros, rope_tables

PROBE_CACHED = 128  # positions in the scratch cache before the timed forwards (a short prompt)
REPEATS = 5  # measurements per size; the fastest counts (the others met a busy machine)
MEASURE_S = 0.004  # each measurement times this long a run of forwards (at least one)


@torch.inference_mode()
def relative_verify_costs(model: Llama, max_size: int) -> dict[int, float]:
    """{size: seconds of a forward over `size` new positions / seconds over 1}, sizes 1..max_size."""
    cfg, block = model.config, model.layers[0]
    device, dtype = model.embed.weight.device, model.compute_dtype
    capacity = PROBE_CACHED + max_size
    shape = (1, cfg.num_kv_heads, capacity, cfg.head_dim)
    cos, sin = rope_tables(cfg, capacity, device, dtype)
    attn = block.attn
    saved = attn.k_cache, attn.v_cache
    attn.k_cache, attn.v_cache = lazy_zeros(shape, dtype, device), lazy_zeros(shape, dtype, device)
    generator = torch.Generator(device).manual_seed(0)

    def forward(size: int, runs: int = 1) -> float:
        """Seconds per forward over `size` positions after the cached prefix (the mean of `runs`)."""
        x = torch.randn(1, size, cfg.hidden_size, generator=generator, device=device).to(dtype)
        c, s, mask = cos[PROBE_CACHED:PROBE_CACHED + size], sin[PROBE_CACHED:PROBE_CACHED + size], causal_mask(PROBE_CACHED, size, device)
        t = time.perf_counter()
        for _ in range(runs):
            block(x, c, s, PROBE_CACHED, mask)
        return (time.perf_counter() - t) / runs

    try:
        block(torch.zeros(1, PROBE_CACHED, cfg.hidden_size, device=device, dtype=dtype), cos[:PROBE_CACHED], sin[:PROBE_CACHED], 0, None)
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
        attn.k_cache, attn.v_cache = saved
    return {size: s / seconds[1] for size, s in seconds.items()}
