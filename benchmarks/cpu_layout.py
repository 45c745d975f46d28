"""Forward cost by number of positions, with nn.Linear's weight layout against spectab's CPU layout.

SmolLM2-135M-Instruct (real weights, float32, CPU) with a 1000-token cache: one forward over S new
positions (S = 1 is a decode step, S = k+1 a verify) for both layouts, interleaved, medians.

    python benchmarks/cpu_layout.py [--sizes 1,2,3,5,9] [--repeats 12]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.profiles import smollm2_gguf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,2,3,5,9")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--cached", type=int, default=1000)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    ours = load_model(str(smollm2_gguf()), device="cpu", dtype="float32").model  # CPU layout applied
    plain = copy.deepcopy(ours)
    for module in plain.modules():
        if getattr(module, "transposed", False):
            module.transpose_storage()  # back to nn.Linear's [out, in]
    vocab = ours.config.vocab_size
    context = torch.randint(0, vocab, (1, args.cached))
    for model in (ours, plain):
        model.setup_cache(args.cached + max(sizes) + 1)
    rows, data = [], []
    with torch.inference_mode():
        for model in (ours, plain):
            model(context, 0, 1)
        base = {}
        for size in sizes:
            x = torch.randint(0, vocab, (1, size))
            t = {"linear": [], "spectab": []}
            for _ in range(args.repeats):
                for label, model in (("linear", plain), ("spectab", ours)):
                    t0 = time.perf_counter()
                    model(x, args.cached, size)
                    t[label].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1000 for k, v in t.items()}
            base.setdefault("linear", med["linear"])
            base.setdefault("spectab", med["spectab"])
            data.append({"positions": size, "linear_ms": med["linear"], "spectab_ms": med["spectab"]})
            rows.append([size, f"{med['linear']:.1f}", f"{med['spectab']:.1f}", f"{med['linear'] / med['spectab']:.2f}x",
                         f"{med['linear'] / base['linear']:.2f}", f"{med['spectab'] / base['spectab']:.2f}"])
            print(rows[-1], flush=True)
    command = f"python benchmarks/cpu_layout.py --sizes {args.sizes} --repeats {args.repeats} --cached {args.cached}"
    write_results("cpu_layout", command, {"cached": args.cached, "sizes": data}, rows,
                  ["positions per forward", "nn.Linear layout ms", "spectab CPU layout ms", "speedup",
                   "nn.Linear cost vs 1 position", "spectab cost vs 1 position"],
                  "SmolLM2-135M-Instruct, float32, CPU, forwards after 1000 cached tokens, medians of interleaved runs.")


if __name__ == "__main__":
    main()
