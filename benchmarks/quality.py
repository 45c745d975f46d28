"""Suggestion quality on real code: exact match, edit similarity, what is shown and how often it is
right, for raw and post-processed text, with and without workspace context, at several confidence
cuts; and the latency that context costs.

Code not written here: the running interpreter's standard library (and any `--folder`). Cursors are
sampled reproducibly (`--seed`) inside function bodies (found with `ast`), in four kinds:

- mid-line: inside a one-line statement, where brackets are open; the line keeps the closers an
  editor would have auto-closed, so the server asks for one line; the reference is the text up to
  them (the rest of the line).
- call site (cross-file): right before a call of a name defined at the top level of another module
  of the same package (`from .x import name`, `from pkg.x import name`, `from . import x; x.name()`);
  asked for one line, reference the rest of the line (less auto-closed closers); the package's other
  modules are the open documents.
- end of line: after a complete line's code; multi-line (the server's `multiline: auto`), the
  reference is the rest of the cursor's block (`engine.blocks.cut_block` on the true continuation).
- new line: after the indentation of a line, as when Enter was just pressed; multi-line, reference
  the block from that line on.

The document the model sees is the file with the reference deleted (the user has not typed it yet).
Multi-line references are kept to those the token limit can produce (`--max-ref-tokens`).

The engine runs in process, as the server's in-process backend calls it (`Completer.complete`, the
workspace ring, `finish`), once per cursor and context budget with `min_confidence=0`; the
confidence cut at each threshold is then `confidence_cut` of the per-token probabilities, exactly
what the engine's stop would have produced. Each (file, budget) has its own KV lane and a file's
cursors run one after another in it; a request is "warm" when its lane already served this file
with the same context (the ring unchanged).

    python benchmarks/quality.py [--cursors 150] [--call-sites 50] [--budgets 0,256] [--seed 0]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import random
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_results  # noqa: E402

CLOSES = {")": "(", "]": "[", "}": "{"}
OPENS = {v: k for k, v in CLOSES.items()}
KINDS = ("call site", "mid-line", "end of line", "new line")
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "turtledemo", "__phello__", "lib2to3"}


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# -- the code and its cursors ----------------------------------------------------------------------

@dataclass
class Cursor:
    kind: str
    path: Path
    line: int          # 1-based line of the cursor
    document: str      # the file with the reference deleted
    offset: int        # the cursor in `document`
    reference: str
    multiline: bool
    package_dir: Path | None
    root: Path         # the tree absolute imports resolve in
    callee: str = ""   # call sites: the name called and the module that defines it
    callee_module: str = ""


def python_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return out


def read(path: Path) -> tuple[str, ast.Module] | None:
    try:
        text = path.read_text(encoding="utf-8")
        if len(text) > 400_000 or "\t" in text:
            return None  # tabs: indentation the block rule would judge by its own tab width
        return text, ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return None


def top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def package_of(path: Path) -> Path | None:
    return path.parent if (path.parent / "__init__.py").exists() else None


def module_file(base: Path, dotted: str | None) -> Path | None:
    target = base.joinpath(*dotted.split(".")) if dotted else base
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, tree: ast.Module, root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Names this module imports from other modules of its package: {local name: module file}, and
    modules imported as names ({local name: module file}, for `mod.name()` calls)."""
    pkg = package_of(path)
    if pkg is None:
        return {}, {}
    top = pkg
    while (top.parent / "__init__.py").exists():
        top = top.parent
    names, modules = {}, {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
        elif node.module and node.module.split(".")[0] == top.name:
            base = top.parent
        else:
            continue
        source = module_file(base, node.module)
        for alias in node.names:
            local = alias.asname or alias.name
            sub = module_file(base, f"{node.module}.{alias.name}" if node.module else alias.name)
            if sub is not None and sub != path and sub.is_relative_to(top):
                modules[local] = sub
            elif source is not None and source != path and source.is_relative_to(top):
                names[local] = (source, alias.name)
    return names, modules


def line_starts(text: str) -> list[int]:
    starts, at = [0], 0
    for line in text.split("\n"):
        at += len(line) + 1
        starts.append(at)
    return starts


def char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def open_stack(s: str) -> list[str] | None:
    """Brackets open at the end of `s` (None inside a string, a comment, or a closer too many)."""
    stack, quote = [], ""
    for i, ch in enumerate(s):
        if quote:
            if ch == quote and s[i - 1] != "\\":
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "#":
            return None
        elif ch in OPENS:
            stack.append(ch)
        elif ch in CLOSES:
            if not stack or stack[-1] != CLOSES[ch]:
                return None
            stack.pop()
    return None if quote else stack


def split_tail(line: str, col: int) -> tuple[str, str] | None:
    """(reference, kept tail) for a single-line cursor at `col`: the tail is the closers of the
    brackets open at the cursor when the line ends with exactly them (what auto-close leaves)."""
    stack = open_stack(line[:col])
    if stack is None:
        return None
    rest = line[col:].rstrip()
    tail = "".join(OPENS[b] for b in reversed(stack))
    if not rest.endswith(tail):
        return None
    ref = rest[: len(rest) - len(tail)]
    inner = open_stack(line[:col] + ref)
    if inner is None or inner != stack:
        return None  # the reference closes a bracket that was open at the cursor: no clean tail
    return ref, tail


def function_lines(tree: ast.Module) -> dict[int, ast.stmt]:
    """1-based line -> the statement starting there, for statements inside function bodies
    (docstrings left out)."""
    out = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = fn.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    out.setdefault(node.lineno, node)
    return out


def header_is_one_line(stmt: ast.stmt, lines: list[str]) -> bool:
    line = lines[stmt.lineno - 1]
    if stmt.lineno == stmt.end_lineno:
        return True
    body = getattr(stmt, "body", None)
    return bool(body) and body[0].lineno > stmt.lineno and line.rstrip().endswith(":")


def candidates(path: Path, root: Path, tok, max_ref_tokens: int) -> dict[str, list[Cursor]]:
    from engine.blocks import cut_block

    parsed = read(path)
    out = {k: [] for k in KINDS}
    if parsed is None:
        return out
    text, tree = parsed
    lines = text.split("\n")
    starts = line_starts(text)
    stmts = function_lines(tree)
    pkg = package_of(path)

    def single(kind: str, ln: int, col: int, **extra) -> None:
        line = lines[ln - 1]
        split = split_tail(line, col)
        if split is None or not split[0].strip() or (kind == "mid-line" and not split[1]):
            return
        ref, tail = split
        at = starts[ln - 1] + col
        doc = text[:at] + tail + text[starts[ln - 1] + len(line):]
        out[kind].append(Cursor(kind, path, ln, doc, at, ref, False, pkg, root, **extra))

    def multi(kind: str, ln: int, col: int) -> None:
        at = starts[ln - 1] + col
        line_prefix = lines[ln - 1][:col]
        window = text[at:at + 16 * max_ref_tokens]  # a reference that fits is far shorter
        ref = cut_block(window, line_prefix).rstrip()
        # the token limit is checked when a cursor is drawn (tokenizing every candidate is slow)
        if not ref.strip() or len(ref) >= len(window.rstrip()) or len(ref) > 8 * max_ref_tokens:
            return
        doc = text[:at] + text[at + len(ref):]
        out[kind].append(Cursor(kind, path, ln, doc, at, ref, True, pkg, root))

    for ln, stmt in stmts.items():
        line = lines[ln - 1]
        code = line.rstrip()
        indent = len(line) - len(line.lstrip())
        if not code.strip() or code.lstrip().startswith("#") or "#" in code:
            continue
        if stmt.lineno == stmt.end_lineno:
            # mid-line: after an opening bracket, a comma or an operator's space
            cols = [i for i in range(indent + 1, len(code)) if code[i - 1] in "([{, ." and code[i] != " "]
            if cols:
                single("mid-line", ln, cols[(ln * 7919) % len(cols)])
        if header_is_one_line(stmt, lines) and ln < len(lines):
            multi("end of line", ln, len(code))
        multi("new line", ln, indent)

    names, modules = imported_names(path, tree, root)
    if names or modules:
        defined: dict[Path, set[str]] = {}

        def defines(module: Path, name: str) -> bool:
            if module not in defined:
                p = read(module)
                defined[module] = top_level_names(p[1]) if p else set()
            return name in defined[module]

        seen = set()
        for ln, stmt in stmts.items():
            for node in ast.walk(stmt):
                if not isinstance(node, ast.Call) or node.lineno != node.end_lineno or node.lineno != ln:
                    continue
                f = node.func
                if isinstance(f, ast.Name) and f.id in names and defines(*names[f.id]):
                    callee, module = f.id, names[f.id][0]
                elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules \
                        and defines(modules[f.value.id], f.attr):
                    callee, module = f"{f.value.id}.{f.attr}", modules[f.value.id]
                else:
                    continue
                line = lines[ln - 1]
                if "#" in line or (ln, node.col_offset) in seen:
                    continue
                seen.add((ln, node.col_offset))
                single("call site", ln, char_col(line, node.col_offset), callee=callee,
                       callee_module=str(module.relative_to(root)))
    return out


def sample_cursors(roots: list[Path], tok, n: int, n_calls: int, seed: int, max_ref_tokens: int,
                   per_file: int = 4) -> list[Cursor]:
    """`n` cursors, `n_calls` of them call sites, the rest split evenly among the other kinds;
    drawn file by file (up to `per_file` from a file, call sites first) so that a file's cursors
    run one after another in its lane, as typing through it does."""
    by_file: dict[Path, dict[str, list[Cursor]]] = {}
    for root in roots:
        files = python_files(root)
        say(f"quality: scanning {len(files)} files under {root}")
        for path in files:
            found = candidates(path, root, tok, max_ref_tokens)
            if any(found.values()):
                by_file[path] = found
    say("quality: candidates " + ", ".join(f"{k} {sum(len(f[k]) for f in by_file.values())}" for k in KINDS))
    rng = random.Random(seed)
    others = KINDS[1:]
    rest = n - n_calls
    want = {"call site": n_calls, **{k: rest // len(others) + (1 if i < rest % len(others) else 0)
                                     for i, k in enumerate(others)}}
    files = sorted(by_file)
    rng.shuffle(files)
    # files with call sites first, so the call-site quota fills
    files = [f for f in files if by_file[f]["call site"]] + [f for f in files if not by_file[f]["call site"]]
    chosen: list[Cursor] = []
    for path in files:
        if not any(want.values()):
            break
        taken = 0
        calls = by_file[path]["call site"]
        for cur in rng.sample(calls, min(len(calls), per_file - 1, want["call site"])):
            chosen.append(cur)
            want["call site"] -= 1
            taken += 1
        for kind in rng.sample(others, len(others)):
            if taken < per_file and want[kind] and by_file[path][kind]:
                pool = by_file[path][kind]
                for cur in rng.sample(pool, len(pool)):
                    if not cur.multiline or len(tok.encode(cur.reference)) <= max_ref_tokens:
                        chosen.append(cur)
                        want[kind] -= 1
                        taken += 1
                        break
    # a file's cursors one after another, in line order (typing through a file); files in a
    # seeded random order, so a run stopped by --minutes has a random subset of the files
    rank = {p: i for i, p in enumerate(rng.sample(sorted({c.path for c in chosen}), len({c.path for c in chosen})))}
    chosen.sort(key=lambda c: (rank[c.path], c.line, c.offset))
    return chosen


# -- scoring ---------------------------------------------------------------------------------------

def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def score(shown: str, ref: str) -> dict:
    s, r = shown.rstrip(), ref.rstrip()
    return {"shown": bool(s.strip()), "exact": bool(s.strip()) and s == r,
            "prefix": bool(s.strip()) and r.startswith(s), "similarity": similarity(s, r)}


def summarize(scores: list[dict]) -> dict:
    n = len(scores)
    shown = sum(s["shown"] for s in scores)
    exact = sum(s["exact"] for s in scores)
    return {"n": n, "shown": shown, "exact": exact, "prefix": sum(s["prefix"] for s in scores),
            "exact_match": exact / n if n else 0.0,
            "edit_similarity": statistics.fmean(s["similarity"] for s in scores) if n else 0.0,
            "shown_share": shown / n if n else 0.0,
            "prefix_of_truth": sum(s["prefix"] for s in scores) / shown if shown else 0.0,
            "precision": exact / shown if shown else 0.0}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# -- the run ---------------------------------------------------------------------------------------

def run_model(profile: str, cursors: list[Cursor], budgets: list[int], thresholds: list[float], args) -> dict:
    from engine.completer import Completer, EngineOptions
    from engine.prompts import context_ids
    from engine.requests import token_marks
    from lsp_server.context import cursor_at
    from lsp_server.postprocess import confidence_cut, finish
    from lsp_server.workspace import Workspace

    c = Completer.open(profile, device="cpu", options=EngineOptions(context_tokens=args.context_tokens, kv_lanes=8))
    say(f"quality: {profile} loaded ({c.target_info.name}, {c.quant}, fim {c.fim})")
    records = []
    by_file: dict[Path, list[Cursor]] = {}
    for cur in cursors:
        by_file.setdefault(cur.path, []).append(cur)
    started = time.perf_counter()
    done = 0
    for path, group in by_file.items():
        if args.minutes and time.perf_counter() - started > 60 * args.minutes:
            say(f"quality: stopping after {args.minutes} minutes ({done} of {len(cursors)} cursors ran)")
            break
        uri = path.as_uri()
        # the package's other modules are open (those this file imports from opened last, so
        # newest in the ring); a module outside a package has no workspace
        ws = Workspace()
        pkg = group[0].package_dir
        if pkg is not None:
            ws.root = str(group[0].root)
            siblings = [p for p in sorted(pkg.glob("*.py")) if p != path]
            tree = read(path)
            imported = []
            if tree is not None:
                names, modules = imported_names(path, tree[1], group[0].root)
                for p in [m for m, _ in names.values()] + list(modules.values()):
                    if p not in imported:
                        imported.append(p)
            order = [p for p in siblings if p not in imported] + imported
            for p in order[-16:]:
                body = read(p)
                if body is not None:
                    ws.opened(p.as_uri(), body[0], "python")
        last_context: dict[int, tuple | None] = {b: None for b in budgets}
        for cur in group:
            ws.opened(uri, cur.document, "python")
            window = cursor_at(cur.document, cur.offset, args.context_tokens)
            ws.visited(uri, cur.document, cur.offset)  # as the server does at each request
            t_ctx = time.perf_counter()
            ring = ws.context_for(uri, window.prefix + window.suffix)
            context_ms = 1000 * (time.perf_counter() - t_ctx)
            rec = {"kind": cur.kind, "file": str(cur.path.relative_to(cur.root)), "line": cur.line,
                   "reference": cur.reference, "multiline": cur.multiline, "auto_multiline": window.at_line_end,
                   "callee": cur.callee, "callee_module": cur.callee_module,
                   "after_space": window.line_prefix.endswith((" ", "\t")) and bool(window.line_prefix.strip()),
                   "context_ms": round(context_ms, 3), "runs": {}}
            for budget in budgets:
                context = ring if budget else ()
                ctx_ids = context_ids(c.tokenizer, context, min(budget, args.context_tokens // 3), {}) if budget else []
                warm = last_context[budget] == context
                last_context[budget] = context
                t0 = time.perf_counter()
                g = c.complete(window.prefix, window.suffix, args.max_new_tokens, single_line=not cur.multiline,
                               block_of=window.line_prefix if cur.multiline else None,
                               document=f"{uri}#context={budget}", context=context,
                               context_tokens=budget if context else 0, min_confidence=0.0)
                gen_ms = 1000 * (time.perf_counter() - t0)
                marks = token_marks(c.tokenizer, g)
                t1 = time.perf_counter()
                post = finish(g.text, window, cur.multiline)
                post_ms = 1000 * (time.perf_counter() - t1)
                run = {"raw": g.text, "post": post, "probs": marks["probs"], "ends": marks["ends"],
                       "gen_ms": round(gen_ms, 1), "post_ms": round(post_ms, 3), "warm": warm,
                       "prefill_ms": round(g.stats.prefill_ms, 1), "decode_ms": round(g.stats.decode_ms, 1),
                       "prompt_tokens": g.stats.prompt_tokens, "reused_prompt_tokens": g.stats.reused_prompt_tokens,
                       "new_tokens": g.stats.new_tokens, "stop": g.stats.stop_reason,
                       "context_tokens_used": len(ctx_ids),
                       "callee_in_context": bool(cur.callee) and cur.callee.split(".")[-1] in c.tokenizer.decode(ctx_ids)}
                run["cut"] = {}
                for t in thresholds:
                    cut = confidence_cut(g.text, marks["probs"], marks["ends"], t)
                    run["cut"][str(t)] = finish(cut, window, cur.multiline)
                rec["runs"][str(budget)] = run
            records.append(rec)
            done += 1
            el = time.perf_counter() - started
            r0 = rec["runs"][str(budgets[0])]
            say(f"quality: {done}/{len(cursors)} {cur.kind:11} {rec['file']}:{cur.line} "
                f"exact={'y' if score(r0['post'], cur.reference)['exact'] else 'n'} "
                f"{r0['gen_ms']:.0f} ms; {el:.0f} s so far, ~{el / done * (len(cursors) - done):.0f} s left")
    return {"profile": profile, "model": c.target_info.name, "quant": c.quant, "fim": c.fim, "records": records}


def analyse(result: dict, budgets: list[int], thresholds: list[float]) -> dict:
    recs = result["records"]
    groups = {"call sites": [r for r in recs if r["kind"] == "call site"],
              "other cursors": [r for r in recs if r["kind"] != "call site"],
              "all": recs}
    for kind in KINDS[1:]:
        groups[kind] = [r for r in recs if r["kind"] == kind]
    # the prompt ends with a space token: how the model copes with a cursor after a space
    groups["one-line, after a space"] = [r for r in recs if not r["multiline"] and r["after_space"]]
    groups["one-line, after no space"] = [r for r in recs if not r["multiline"] and not r["after_space"]]
    out = {"quality": [], "cut": [], "latency": {}, "context": {}}
    for gname, rs in groups.items():
        for b in budgets:
            for which in ("raw", "post"):
                s = summarize([score(r["runs"][str(b)][which], r["reference"]) for r in rs])
                out["quality"].append({"group": gname, "budget": b, "text": which, **s})
            for t in thresholds:
                s = summarize([score(r["runs"][str(b)]["cut"][str(t)], r["reference"]) for r in rs])
                out["cut"].append({"group": gname, "budget": b, "threshold": t, **s})
    for b in budgets:
        runs = [r["runs"][str(b)] for r in recs]
        warm = [x for x in runs if x["warm"]]
        out["latency"][str(b)] = {
            "n_all": len(runs), "n_warm": len(warm),
            "gen_ms_p50_all": quantile([x["gen_ms"] for x in runs], 0.5),
            "gen_ms_p50_warm": quantile([x["gen_ms"] for x in warm], 0.5),
            "gen_ms_p90_warm": quantile([x["gen_ms"] for x in warm], 0.9),
            "prefill_ms_p50_warm": quantile([x["prefill_ms"] for x in warm], 0.5),
            "ms_per_new_token_p50_warm": quantile([x["gen_ms"] / max(1, x["new_tokens"]) for x in warm], 0.5),
            "reused_prompt_share_warm": sum(x["reused_prompt_tokens"] for x in warm) / max(1, sum(x["prompt_tokens"] for x in warm)),
            "post_ms_p50": quantile([x["post_ms"] for x in runs], 0.5),
            "post_ms_p90": quantile([x["post_ms"] for x in runs], 0.9)}
        calls = [r["runs"][str(b)] for r in groups["call sites"]]
        out["context"][str(b)] = {
            "context_tokens_used_mean": statistics.fmean(x["context_tokens_used"] for x in runs) if runs else 0,
            "with_any_context": sum(x["context_tokens_used"] > 0 for x in runs),
            "call_sites_callee_in_context": sum(x["callee_in_context"] for x in calls), "call_sites": len(calls),
            # the workspace's work for a request (the server skips it at budget 0)
            "gather_ms_p50": quantile([r["context_ms"] for r in recs], 0.5) if b else 0.0,
            "gather_ms_p90": quantile([r["context_ms"] for r in recs], 0.9) if b else 0.0}
    # paired: cursors that are warm in every configuration, so each config's p50 is over the same requests
    both = [r for r in recs if all(r["runs"][str(b)]["warm"] for b in budgets)]
    out["latency_paired"] = {"n": len(both), **{str(b): {
        "gen_ms_p50": quantile([r["runs"][str(b)]["gen_ms"] for r in both], 0.5),
        "gen_ms_p90": quantile([r["runs"][str(b)]["gen_ms"] for r in both], 0.9),
        "gen_ms_mean": statistics.fmean(r["runs"][str(b)]["gen_ms"] for r in both) if both else 0,
        # what a request prefilled (its prompt less what the lane already held): where context costs time
        "prefilled_tokens_p50": quantile([r["runs"][str(b)]["prompt_tokens"] - r["runs"][str(b)]["reused_prompt_tokens"]
                                          for r in both], 0.5),
        "new_tokens_mean": statistics.fmean(r["runs"][str(b)]["new_tokens"] for r in both) if both else 0}
        for b in budgets}}
    # paired wins and losses of exact match (post-processed) against no context
    if 0 in budgets:
        out["paired_exact"] = {}
        for gname in ("call sites", "other cursors"):
            for b in budgets:
                if b:
                    wins = sum(score(r["runs"][str(b)]["post"], r["reference"])["exact"]
                               and not score(r["runs"]["0"]["post"], r["reference"])["exact"] for r in groups[gname])
                    losses = sum(not score(r["runs"][str(b)]["post"], r["reference"])["exact"]
                                 and score(r["runs"]["0"]["post"], r["reference"])["exact"] for r in groups[gname])
                    out["paired_exact"][f"{gname}, {b}"] = {"wins": wins, "losses": losses}
    return out


def recommend(a: dict, budgets: list[int], thresholds: list[float]) -> dict:
    """minConfidence: the threshold that raises precision the most while keeping >= 80% of the
    right suggestions (all cursors, post-processed, at the recommended budget). extraContextTokens:
    the budget with the best exact match on the call sites that lowers the other cursors' exact
    match by no more than one standard error against no context (0 when none does)."""
    def q(group, b, text="post"):
        return next(x for x in a["quality"] if x["group"] == group and x["budget"] == b and x["text"] == text)

    base_other = q("other cursors", 0) if 0 in budgets else None
    best_b, why_b = 0, "no budget raised call-site exact match without costing the other cursors"
    if base_other:
        n = max(1, base_other["n"])
        se = (base_other["exact_match"] * (1 - base_other["exact_match"]) / n) ** 0.5
        best = q("call sites", 0)["exact_match"]
        for b in budgets:
            if b and q("call sites", b)["exact_match"] > best and q("other cursors", b)["exact_match"] >= base_other["exact_match"] - se:
                best, best_b = q("call sites", b)["exact_match"], b
        if best_b:
            why_b = (f"call-site exact match {pct(q('call sites', 0)['exact_match'])} -> {pct(best)}, other cursors "
                     f"{pct(base_other['exact_match'])} -> {pct(q('other cursors', best_b)['exact_match'])} (one SE: {pct(se)})")
    cuts = {x["threshold"]: x for x in a["cut"] if x["group"] == "all" and x["budget"] == best_b}
    base = cuts[thresholds[0]] if thresholds[0] == 0 else None
    best_t, why_t = 0.0, "no threshold kept 80% of the right suggestions while raising precision"
    if base and base["exact"]:
        gain = 0.0
        for t in thresholds[1:]:
            x = cuts[t]
            kept = x["exact"] / base["exact"]
            g = x["precision"] / base["precision"] - 1 if base["precision"] else 0.0
            if kept >= 0.8 and g > gain:
                best_t, gain = t, g
        if best_t:
            x = cuts[best_t]
            why_t = (f"precision {pct(base['precision'])} -> {pct(x['precision'])} (+{100 * gain:.0f}% relative), "
                     f"{x['exact']}/{base['exact']} right suggestions kept")
    return {"minConfidence": best_t, "minConfidence_reason": why_t, "extraContextTokens": best_b,
            "extraContextTokens_reason": why_b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cursors", type=int, default=150, help="cursors in all, call sites included")
    ap.add_argument("--call-sites", type=int, default=50, help="of them cross-file call sites")
    ap.add_argument("--budgets", default="0,256", help="extraContextTokens budgets to compare (0 = no context)")
    ap.add_argument("--thresholds", default="0,0.05,0.1,0.2,0.3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder", action="append", default=[], help="more code to sample from (repeatable)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-ref-tokens", type=int, default=48, help="multi-line references at most this many tokens")
    ap.add_argument("--context-tokens", type=int, default=1024, help="the server's contextTokens")
    ap.add_argument("--models", default="smollm2-135m", help="profiles; codellama-7b is added when its weights are cached")
    ap.add_argument("--minutes", type=float, default=0, help="stop starting files after this long (0: run all)")
    ap.add_argument("--out", default="quality")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]

    from engine.loading import load_tokenizer
    from engine.profiles import builtin_profiles, codellama_cached

    models = args.models.split(",")
    if "codellama-7b" not in models and codellama_cached():
        models.append("codellama-7b")
    skipped = [] if codellama_cached() else ["codellama-7b (weights not cached)"]
    models = [m for m in models if m != "codellama-7b" or codellama_cached()]

    roots = [Path(sysconfig.get_paths()["stdlib"])] + [Path(f).resolve() for f in args.folder]
    load = os.getloadavg()[0]
    results, analyses, recs = {}, {}, {}
    for profile in models:
        # sampled with each model's tokenizer (the reference's token limit); the same seed
        tok = load_tokenizer(builtin_profiles()[profile].target, False)
        cursors = sample_cursors(roots, tok, args.cursors, args.call_sites, args.seed, args.max_ref_tokens)
        say(f"quality: {len(cursors)} cursors in {len({c.path for c in cursors})} files")
        results[profile] = run_model(profile, cursors, budgets, thresholds, args)
        analyses[profile] = analyse(results[profile], budgets, thresholds)
        recs[profile] = recommend(analyses[profile], budgets, thresholds)
    load_after = os.getloadavg()[0]

    rows, header = [], ["model", "cursors", "n", "context budget", "text", "exact match", "edit similarity",
                        "shown", "shown is a prefix of the truth", "precision (right / shown)"]
    for profile in models:
        a = analyses[profile]
        for x in a["quality"]:
            if x["group"] in ("call sites", "other cursors", "all"):
                rows.append([profile, x["group"], x["n"], x["budget"], x["text"], pct(x["exact_match"]),
                             f"{x['edit_similarity']:.3f}", pct(x["shown_share"]), pct(x["prefix_of_truth"]),
                             pct(x["precision"])])
    command = "python benchmarks/quality.py" + "".join(
        f" {k} {v}" for k, v in (("--cursors", args.cursors), ("--call-sites", args.call_sites),
                                 ("--budgets", args.budgets), ("--thresholds", args.thresholds), ("--seed", args.seed),
                                 ("--max-new-tokens", args.max_new_tokens), ("--max-ref-tokens", args.max_ref_tokens))) + \
        (f" --minutes {args.minutes:g}" if args.minutes else "") + \
        "".join(f" --folder {f}" for f in args.folder)
    notes = [markdown_extra(profile, analyses[profile], recs[profile], budgets, thresholds, results[profile])
             for profile in models]
    notes.append(
        f"Cursors from Python {sys.version.split()[0]}'s standard library{' and ' + ', '.join(args.folder) if args.folder else ''} "
        f"(tests left out), seed {args.seed}, inside function bodies. Exact match: the suggestion equals the reference "
        "after trailing whitespace is stripped (nothing shown counts as wrong); edit similarity: difflib's "
        "SequenceMatcher ratio against the reference, averaged over all cursors (nothing shown scores 0); shown: the "
        "share of cursors with a non-empty suggestion; prefix: of those shown, the share the truth starts with (would be "
        "accepted at least in part); precision: exact matches / shown. Raw: the engine's text (its single-line and "
        "block-end stops apply); post: after the server's `finish` (block cut, line-end trim, repeats dropped). "
        f"Greedy, up to {args.max_new_tokens} new tokens, contextTokens {args.context_tokens}; the engine gives workspace "
        f"context at most half of the prompt ({args.context_tokens // 2} tokens). Call sites and mid-line cursors are asked "
        "for one line, end-of-line and new-line cursors for the rest of the block (block_of, as `multiline: auto`); "
        f"multi-line references of at most {args.max_ref_tokens} tokens. 1-minute load average {load:.1f} before, "
        f"{load_after:.1f} after (2 cores; above 2, other work shared them)." + (
            f" Not run: {', '.join(skipped)}." if skipped else ""))
    ran = {p: len(results[p]["records"]) for p in models}
    if any(ran[p] < args.cursors for p in models):
        notes[-1] += " Cursors that ran: " + ", ".join(f"{p} {ran[p]} of {args.cursors} drawn" for p in models) + "."
    data = {"budgets": budgets, "thresholds": thresholds, "seed": args.seed, "load_average": [load, load_after],
            "skipped": skipped, "recommended": recs, "analysis": analyses,
            "cursors": {p: results[p]["records"] for p in models},
            "models": {p: {k: results[p][k] for k in ("model", "quant", "fim")} for p in models}}
    write_results(args.out, command, data, rows, header, "\n\n".join(notes))


def markdown_extra(profile: str, a: dict, rec: dict, budgets: list[int], thresholds: list[float], result: dict) -> str:
    out = [f"*{profile}: the confidence cut* (post-processed; precision = right / shown; right kept = exact matches "
           "against the threshold 0)", "",
           "| cursors | context budget | min confidence | n | shown | right | precision | right kept |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in ("all", "call sites", "other cursors"):
        for b in budgets:
            base = next(x for x in a["cut"] if x["group"] == g and x["budget"] == b and x["threshold"] == thresholds[0])
            for t in thresholds:
                x = next(y for y in a["cut"] if y["group"] == g and y["budget"] == b and y["threshold"] == t)
                kept = f"{x['exact']}/{base['exact']}" + (f" ({pct(x['exact'] / base['exact'])})" if base["exact"] else "")
                out.append(f"| {g} | {b} | {t} | {x['n']} | {pct(x['shown_share'])} | {x['exact']} | {pct(x['precision'])} | {kept} |")
    out += ["", f"*{profile}: by cursor kind* (post-processed)", "",
            "| kind | context budget | n | exact match | edit similarity | shown | prefix of truth | precision |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind in KINDS + ("one-line, after a space", "one-line, after no space"):
        g = "call sites" if kind == "call site" else kind
        for b in budgets:
            x = next(y for y in a["quality"] if y["group"] == g and y["budget"] == b and y["text"] == "post")
            out.append(f"| {kind} | {b} | {x['n']} | {pct(x['exact_match'])} | {x['edit_similarity']:.3f} | "
                       f"{pct(x['shown_share'])} | {pct(x['prefix_of_truth'])} | {pct(x['precision'])} |")
    out += ["", f"*{profile}: what the context was* (chunks of the package's other modules, newest that fit)", "",
            "| context budget | context tokens in the prompt, mean | requests with any context | call sites whose callee's name is in it | "
            "gathering the chunks p50 / p90 ms |",
            "| --- | --- | --- | --- | --- |"]
    for b in budgets:
        x = a["context"][str(b)]
        out.append(f"| {b} | {x['context_tokens_used_mean']:.0f} | {x['with_any_context']}/{len(result['records'])} | "
                   f"{x['call_sites_callee_in_context']}/{x['call_sites']} | {x['gather_ms_p50']:.2f} / {x['gather_ms_p90']:.2f} |")
    if "paired_exact" in a:
        out += ["", "Paired against no context (post-processed exact match, same cursors): " + "; ".join(
            f"{k}: {v['wins']} right only with context, {v['losses']} right only without" for k, v in a["paired_exact"].items())]
    lp = a["latency_paired"]
    out += ["", f"*{profile}: latency* (generation = `Completer.complete` wall time; warm = the file's lane already "
            "served this file with the same context; paired = the cursors warm in every configuration)", "",
            "| context budget | requests (warm) | p50 ms, all | p50 ms, warm | p90 ms, warm | paired p50 ms | paired p90 ms | "
            "paired mean ms | paired prompt tokens prefilled, p50 | paired new tokens, mean | warm prefill p50 ms | "
            "warm prompt reuse | post-processing p50 / p90 ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in budgets:
        x = a["latency"][str(b)]
        out.append(f"| {b} | {x['n_all']} ({x['n_warm']}) | {x['gen_ms_p50_all']:.0f} | {x['gen_ms_p50_warm']:.0f} | "
                   f"{x['gen_ms_p90_warm']:.0f} | {lp[str(b)]['gen_ms_p50']:.0f} (n {lp['n']}) | {lp[str(b)]['gen_ms_p90']:.0f} | "
                   f"{lp[str(b)]['gen_ms_mean']:.0f} | {lp[str(b)]['prefilled_tokens_p50']:.0f} | "
                   f"{lp[str(b)]['new_tokens_mean']:.1f} | {x['prefill_ms_p50_warm']:.0f} | {pct(x['reused_prompt_share_warm'])} | "
                   f"{x['post_ms_p50']:.3f} / {x['post_ms_p90']:.3f} |")
    out += ["", f"Recommended for {profile}: minConfidence {rec['minConfidence']} ({rec['minConfidence_reason']}); "
            f"extraContextTokens {rec['extraContextTokens']} ({rec['extraContextTokens_reason']})."]
    return "\n".join(out)


if __name__ == "__main__":
    main()
