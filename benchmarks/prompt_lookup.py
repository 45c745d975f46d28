"""Prompt-lookup speculation against our plain decoding, on cursors in this repository's files.

Model: SmolLM2-135M-Instruct (real weights, float32, CPU), left-to-right prompts of the text before
the cursor; the lookup drafter also searches the text after it. Each cursor is completed greedily
with both drafters from a cold cache; the outputs must be identical (lossless), and the time of the
rounds after the first (the first also runs the prompt, the same work for both) gives the speedup.
Each drafter keeps its draft-length policy from cursor to cursor, as a running server does (it starts
from its prior at the first cursor).

    python benchmarks/prompt_lookup.py [--tokens 64] [--prompts 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import repo_edit_points, write_results  # noqa: E402
from engine.completer import Completer, EngineOptions  # noqa: E402
from engine.draft_policy import DraftLength  # noqa: E402
from engine.drafters import NoDrafter, PromptLookupDrafter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--context", type=int, default=1024)
    args = ap.parse_args()

    c = Completer.open("smollm2-135m", device="cpu", dtype="float32", options=EngineOptions(context_tokens=args.context))
    drafters = {"plain": NoDrafter(), "ngram": PromptLookupDrafter(c.options.ngram_max, c.options.ngram_min)}
    policies = {which: DraftLength(c.options.k, c.options.k_min, c.options.k_max, c.options.adaptive, c.draft_length.costs)
                for which in drafters}

    def run(which: str, prefix: str, suffix: str):
        c.drafter, c.draft_length = drafters[which], policies[which]
        c.reset_caches()
        return c.complete(prefix, suffix, args.tokens)

    rows, results = [], []
    for name, prefix, suffix in repo_edit_points(args.prompts):
        decode = {"plain": [], "ngram": []}
        out = {}
        for r in range(args.repeats):
            for which in (("plain", "ngram") if r % 2 == 0 else ("ngram", "plain")):
                g = run(which, prefix, suffix)
                out[which] = g
                decode[which].append(g.stats.decode_ms / 1000)
        p, n = out["plain"], out["ngram"]
        same = p.tokens == n.tokens
        t_plain, t_ngram = statistics.median(decode["plain"]), statistics.median(decode["ngram"])
        e2e_plain = t_plain + p.stats.prefill_ms / 1000
        e2e_ngram = t_ngram + n.stats.prefill_ms / 1000
        results.append({"cursor": name, "new_tokens": p.stats.new_tokens, "identical_tokens": same,
                        "proposed": n.stats.draft_proposed, "accepted": n.stats.draft_accepted,
                        "acceptance": n.stats.acceptance, "target_forwards_plain": p.stats.target_forwards,
                        "target_forwards_ngram": n.stats.target_forwards,
                        "decode_s_plain": t_plain, "decode_s_ngram": t_ngram,
                        "end_to_end_s_plain": e2e_plain, "end_to_end_s_ngram": e2e_ngram})
        rows.append([name, p.stats.new_tokens, f"{n.stats.draft_accepted}/{n.stats.draft_proposed}",
                     f"{p.stats.target_forwards} → {n.stats.target_forwards}",
                     f"{t_plain / t_ngram:.2f}x" if t_ngram > 0 else "-", f"{e2e_plain / e2e_ngram:.2f}x", "yes" if same else "no"])
        print(rows[-1], flush=True)

    total = {k: sum(r[k] for r in results) for k in ("proposed", "accepted", "decode_s_plain", "decode_s_ngram",
                                                     "end_to_end_s_plain", "end_to_end_s_ngram",
                                                     "target_forwards_plain", "target_forwards_ngram")}
    rows.append(["**all**", sum(r["new_tokens"] for r in results), f"{total['accepted']}/{total['proposed']}",
                 f"{total['target_forwards_plain']} → {total['target_forwards_ngram']}",
                 f"**{total['decode_s_plain'] / total['decode_s_ngram']:.2f}x**",
                 f"**{total['end_to_end_s_plain'] / total['end_to_end_s_ngram']:.2f}x**",
                 "yes" if all(r["identical_tokens"] for r in results) else "no"])
    command = f"python benchmarks/prompt_lookup.py --tokens {args.tokens} --prompts {args.prompts} --repeats {args.repeats} --context {args.context}"
    write_results("prompt_lookup", command, {"tokens": args.tokens, "cursors": results, "totals": total}, rows,
                  ["cursor in this repo", "new tokens", "drafts accepted", "target forwards plain → lookup",
                   "decode speedup", "end-to-end speedup", "same tokens"],
                  "SmolLM2-135M-Instruct, float32, CPU, greedy, up to N tokens (end-of-text stops). Decode = the rounds after the first; "
                  "end-to-end adds the first round (prompt prefill). Medians over the repeats, runs alternating.")


if __name__ == "__main__":
    main()
