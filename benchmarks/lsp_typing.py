"""A typing simulation over LSP: `spectab serve` on the offline profile (SmolLM2-135M, CPU).

A client types code from this repository's files into an open document, one character per
keystroke at a steady speed: each keystroke sends `didChange` and an automatic inline-completion
request without waiting for the last answer, as editors do. At the end of each typed line the
client also asks explicitly and waits for the answer. Reported: p50/p95 latency from request to
answer for automatic and explicit triggers (automatic ones split into superseded = empty at once,
and answered with a suggestion), the share of requests served from typed-ahead reuse, and the
prefix-cache hit rate (prompt tokens whose KV cache was reused).

    python benchmarks/lsp_typing.py [--lines 6] [--cps 8] [--compile auto|off]

`--compile off` runs the models' steps eagerly (SPECTAB_COMPILE=off), as spectab did before
engine/compiled_step.py; the default compiles them when the server loads, as users get it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, write_results  # noqa: E402
from tests.lsp_client import LspClient  # noqa: E402

SOURCES = ("engine/speculative.py", "engine/prompts.py", "lsp_server/service.py")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=6, help="lines typed per source file")
    ap.add_argument("--cps", type=float, default=8.0, help="typing speed, characters per second")
    ap.add_argument("--engine", default="shared", choices=("shared", "inprocess"),
                    help="the models in the shared engine (the default) or in the server itself")
    ap.add_argument("--min-confidence", type=float, default=None,
                    help="the minConfidence setting (default: the server's, 0.3); 0 shows every suggestion whole")
    ap.add_argument("--compile", default="auto", choices=("auto", "off"),
                    help="SPECTAB_COMPILE for the server and its engine: auto (compiled steps, the default) or off (eager)")
    args = ap.parse_args()
    settings = {"profile": "smollm2-135m", "maxNewTokens": 32, "engine": args.engine}
    if args.min_confidence is not None:
        settings["minConfidence"] = args.min_confidence

    with tempfile.TemporaryDirectory() as logs:
        client = LspClient(env={"SPECTAB_LOG_DIR": logs, "SPECTAB_COMPILE": args.compile})
        client.initialize(settings)
        assert client.wait_ready()["state"] == "ready", "the offline profile did not load"
        auto_empty, auto_shown, explicit = [], [], []
        record = {"empty": auto_empty, "shown": auto_shown, "explicit": explicit}
        for n, rel in enumerate(SOURCES):
            type_file(client, f"file:///bench/doc{n}.py", (ROOT / rel).read_text(), args.lines, args.cps, record)
        status = client.request("spectab/status", {})
        client.close()

    requests = status["requests"]
    rows = [
        ["automatic, all", len(auto_empty) + len(auto_shown), f"{pct(auto_empty + auto_shown, .5):.0f}", f"{pct(auto_empty + auto_shown, .95):.0f}"],
        ["automatic, answered with a suggestion", len(auto_shown), f"{pct(auto_shown, .5):.0f}", f"{pct(auto_shown, .95):.0f}"],
        ["automatic, empty (superseded, debounced away or nothing to say)", len(auto_empty), f"{pct(auto_empty, .5):.0f}", f"{pct(auto_empty, .95):.0f}"],
        ["explicit (end of each typed line)", len(explicit), f"{pct(explicit, .5):.0f}", f"{pct(explicit, .95):.0f}"],
    ]
    notes = (f"Typed-ahead reuse served {status['typedAhead']} of {requests} requests ({status['typedAhead'] / requests:.1%}); "
             f"{status['generations']} generations ran; prefix-cache hit rate {status['prefixCacheHitRate']:.1%} of prompt tokens; "
             f"draft acceptance {status['acceptanceRate']}. SmolLM2-135M-Instruct, prompt lookup, CPU, "
             f"{args.cps:g} characters/s, {len(SOURCES)} files x {args.lines} lines, engine {args.engine}, "
             f"minConfidence {settings.get('minConfidence', 'the default')}, steps "
             f"{'compiled' if args.compile == 'auto' else 'eager'} (SPECTAB_COMPILE={args.compile}).")
    command = f"python benchmarks/lsp_typing.py --lines {args.lines} --cps {args.cps:g} --engine {args.engine}"
    name = "lsp_typing" if args.engine == "shared" else f"lsp_typing_{args.engine}"
    if args.min_confidence is not None:
        command += f" --min-confidence {args.min_confidence:g}"
        name += f"_confidence{args.min_confidence:g}"
    if args.compile != "auto":
        command += f" --compile {args.compile}"
        name += f"_compile{args.compile}"
    write_results(name, command, {"status": status, "automatic_empty_ms": auto_empty,
                                          "automatic_shown_ms": auto_shown, "explicit_ms": explicit},
                  rows, ["requests", "count", "p50 ms", "p95 ms"], notes)


def type_file(client: LspClient, uri: str, source: str, lines: int, cps: float, record: dict) -> None:
    """Open `uri` with the first half of `source`, then type its next `lines` non-blank lines: a
    didChange and an automatic request per keystroke (not waited for), an explicit request at each
    line end (waited for). Latencies (ms) go to record["empty"], record["shown"] (automatic, without
    and with a suggestion) and record["explicit"]."""
    src = source.split("\n")
    start = len(src) // 2
    typed = [l for l in src[start:start + 40] if l.strip()][:lines]
    client.open(uri, "\n".join(src[:start]) + "\n")
    row, version, pending = start, 1, {}
    for line in typed:
        col = 0
        for ch in line:
            version += 1
            client.change(uri, version, row, col, row, col, ch)
            col += 1
            rid = client.request_async("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": {"line": row, "character": col}, "context": {"triggerKind": 2}})
            pending[rid] = time.perf_counter()
            time.sleep(1 / cps)
            _collect(client, pending, record, block=False)
        _collect(client, pending, record, block=True)
        t0 = time.perf_counter()
        client.inline(uri, row, col, trigger=1, timeout=300)
        record["explicit"].append((time.perf_counter() - t0) * 1000)
        version += 1
        client.change(uri, version, row, col, row, col, "\n")
        row += 1


def _collect(client: LspClient, pending: dict[int, float], record: dict, block: bool) -> None:
    for rid in list(pending):
        if not block and rid not in client.arrived:
            continue
        answer = client.wait(rid, timeout=300)
        ms = (client.arrived[rid] - pending.pop(rid)) * 1000
        items = (answer.get("result") or {}).get("items", [])
        record["shown" if items else "empty"].append(ms)


if __name__ == "__main__":
    main()
