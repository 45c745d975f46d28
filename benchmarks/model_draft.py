"""Model-draft speculation on a tiny pair with the real pair's shape ratios (random weights).

Target: CodeLlama-7b's shape at 1/8 width (hidden 512, 32 layers, heads of 128, intermediate 2.6875x,
rope theta 1e6, 32016 tokens). Draft: AMD-Llama-135m's layer count and ratios at 1/8 width (hidden 96,
12 layers, intermediate 2.67x, untied, 32000 tokens). Random weights never agree, so acceptance is
controlled: the draft runs all its forward passes (its cost is real), then each proposed token is
replaced, with probability alpha, by the target's own next greedy token (known from a plain run)
and otherwise by a wrong one. The output stays the target's greedy output (checked).

    python benchmarks/model_draft.py [--tokens 64] [--prompts 3] [--alphas 0.6,0.75,0.85,0.95]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import repo_edit_points, write_results  # noqa: E402
from tests.conftest import add_codellama_tokens  # noqa: E402
from engine.cached_model import CachedModel  # noqa: E402
from engine.draft_policy import DraftLength  # noqa: E402
from engine.verify_cost import relative_verify_costs  # noqa: E402
from engine.drafters import ModelDrafter, NoDrafter, Proposal  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.prompts import build_prompt  # noqa: E402
from engine.sampling import SamplingParams  # noqa: E402
from engine.speculative import StopRules, generate  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


class AlphaDrafter(ModelDrafter):
    """A real draft model whose proposals are right with probability alpha (see module doc)."""

    def __init__(self, draft: CachedModel, target_vocab: int, alpha: float, truth: list[int], seed: int = 0):
        super().__init__(draft, target_vocab, min_confidence=0.0)
        self.alpha, self.truth, self.rng = alpha, truth, random.Random(seed)

    def propose(self, generated, k, params, generator) -> Proposal:
        proposal = super().propose(generated, k, params, generator)
        tokens = []
        for i in range(len(proposal.tokens)):
            at = len(generated) + i
            right = self.truth[at] if at < len(self.truth) else 0
            tokens.append(right if self.rng.random() < self.alpha else (right + 1) % self.draft.vocab_size)
        return Proposal(tokens)


def build_pair(folder: Path) -> tuple[Path, Path]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(FIXTURES), gguf_file="ggml-vocab-llama-spm.gguf")
    torch.manual_seed(0)
    draft = LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=96, num_hidden_layers=12, num_attention_heads=3,
                                         num_key_value_heads=3, intermediate_size=256, max_position_embeddings=2048,
                                         rope_theta=1e4, tie_word_embeddings=False))
    draft.save_pretrained(str(folder / "draft"))
    tok.save_pretrained(str(folder / "draft"))
    target = LlamaForCausalLM(LlamaConfig(vocab_size=32016, hidden_size=512, num_hidden_layers=32, num_attention_heads=4,
                                          num_key_value_heads=4, intermediate_size=1376, max_position_embeddings=16384,
                                          rope_theta=1e6, tie_word_embeddings=False))
    target.save_pretrained(str(folder / "target"))
    add_codellama_tokens(tok).save_pretrained(str(folder / "target"))
    return folder / "target", folder / "draft"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--alphas", default="0.6,0.75,0.85,0.95")
    args = ap.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        target_dir, draft_dir = build_pair(Path(tmp))
        target, draft = load_model(str(target_dir), "cpu", "float32"), load_model(str(draft_dir), "cpu", "float32")
    capacity = args.context + args.tokens + 16
    tcache, dcache = CachedModel(target.model, capacity), CachedModel(draft.model, capacity)
    greedy, stops = SamplingParams(), StopRules(max_new_tokens=args.tokens)  # no stop ids: exactly N tokens

    def run(drafter, prompt, policy):
        tcache.reset(), dcache.reset()
        return generate(tcache, prompt, drafter, target.tokenizer, greedy, stops, policy, draft_prompt=prompt)

    costs = relative_verify_costs(target.model, 9)  # what the engine measures when it loads a target
    results = {("plain", None): []}
    for alpha in alphas:
        results[("adaptive", alpha)] = []
        results[("k=4", alpha)] = []
    for name, prefix, _ in repo_edit_points(args.prompts):
        prompt = build_prompt(target.tokenizer, "none", prefix, "", args.context)
        run(NoDrafter(), prompt, DraftLength())  # warm-up
        plain = run(NoDrafter(), prompt, DraftLength())
        results[("plain", None)].append(plain.stats)
        for alpha in alphas:
            for mode, policy in (("adaptive", DraftLength(4, 1, 8, costs=costs)), ("k=4", DraftLength(4, 4, 4, adaptive=False))):
                g = run(AlphaDrafter(dcache, 32016, alpha, plain.tokens), prompt, policy)
                assert g.tokens == plain.tokens, "speculative output differs from plain greedy"
                results[(mode, alpha)].append(g.stats)
        print(name, "done", flush=True)

    def decode_rate(stats_list) -> float:
        # whole calls, prefill included: the same prompt work for every row
        return sum(s.new_tokens for s in stats_list) / sum((s.decode_ms + s.prefill_ms) / 1000 for s in stats_list)

    base = decode_rate(results[("plain", None)])
    rows, data = [], []
    plain_stats = results[("plain", None)]
    step_ms = statistics.median(s.decode_ms / max(1, s.target_forwards - 1) for s in plain_stats)
    rows.append(["plain", "-", "-", f"{sum(s.target_forwards for s in plain_stats)}", "-", f"{step_ms:.1f}", f"{base:.1f}", "1.00x"])
    for (mode, alpha), stats_list in results.items():
        if mode == "plain":
            continue
        proposed = sum(s.draft_proposed for s in stats_list)
        accepted = sum(s.draft_accepted for s in stats_list)
        rounds = sum(s.rounds for s in stats_list)
        draft_fw = sum(s.draft_forwards for s in stats_list)
        rate = decode_rate(stats_list)
        per_round = statistics.median(s.decode_ms / max(1, s.rounds - 1) for s in stats_list)
        data.append({"mode": mode, "alpha": alpha, "rounds": rounds, "proposed": proposed, "accepted": accepted,
                     "draft_forwards": draft_fw, "ms_per_round": per_round, "tokens_per_s": rate, "speedup": rate / base})
        rows.append([mode, alpha, f"{accepted}/{proposed} ({accepted / max(1, proposed):.2f})", rounds, draft_fw,
                     f"{per_round:.1f}", f"{rate:.1f}", f"{rate / base:.2f}x"])
    command = f"python benchmarks/model_draft.py --tokens {args.tokens} --prompts {args.prompts} --context {args.context} --alphas {args.alphas}"
    write_results("model_draft", command, {"plain_tokens_per_s": base, "plain_ms_per_step": step_ms, "runs": data}, rows,
                  ["drafting", "alpha", "drafts accepted", "rounds (= target forwards)", "draft forwards", "ms per round",
                   "tok/s", "vs plain"],
                  f"Tiny exact-ratio pair (target 1/8-width CodeLlama-7b, {sum(p.numel() for p in target.model.parameters()) / 1e6:.0f}M "
                  f"params; draft 1/8-width AMD-Llama-135m, {sum(p.numel() for p in draft.model.parameters()) / 1e6:.1f}M), "
                  "float32, CPU, greedy, prompts from this repo's files; tok/s over whole calls (prefill included).")


if __name__ == "__main__":
    main()
