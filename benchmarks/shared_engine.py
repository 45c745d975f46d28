"""One shared engine for N editor windows vs. one in-process server each (spectab before the engine).

N fronts (`spectab serve`, each driven by its own LSP client over its pipes, on the offline profile:
SmolLM2-135M with prompt lookup, CPU) type at the same time, each into its own file: one character
per keystroke at a steady speed (lsp_typing.type_file), an automatic inline request per keystroke without waiting, and an
explicit request at the end of each line, waited for. The same run is made with `engine: shared`
(one `spectab engine` process) and `engine: inprocess` (models in every front). Reported per run:
resident memory of all processes together (fronts + engine) and of the largest front, p50/p95
latency of the explicit and the automatic requests that got a suggestion, and the prefix-cache hit
rate over all fronts (prompt tokens whose KV cache was reused).

Then the socket hop: the round trip of a status message to the engine (front -> engine -> front),
and one-token explicit generations and typed-ahead answers, shared vs. in-process.

    python benchmarks/shared_engine.py [--fronts 2 4] [--lines 3] [--cps 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, write_results  # noqa: E402
from benchmarks.lsp_typing import type_file  # noqa: E402
from tests.lsp_client import LspClient  # noqa: E402

SOURCES = ("engine/speculative.py", "engine/prompts.py", "lsp_server/service.py", "engine/loading.py")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def engine_pids(runtime: Path) -> list[int]:
    from engine.service.wire import addresses

    return [int((a.read_info() or {}).get("pid", 0)) for a in addresses(runtime) if a.read_info()]


def stop_engines(runtime: Path) -> None:
    from engine.service.cli import ask
    from engine.service.wire import addresses

    for address in addresses(runtime):
        pid = (address.read_info() or {}).get("pid")
        ask(address, "stop")
        for _ in range(100):
            if not pid or not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


def start_fronts(n: int, engine: str, logs: Path, options: dict) -> list[LspClient]:
    fronts = [LspClient(env={"SPECTAB_LOG_DIR": str(logs / f"{engine}-{i}")}) for i in range(n)]
    for f in fronts:
        f.initialize({"profile": "smollm2-135m", "engine": engine, **options})
    for f in fronts:
        assert f.wait_ready(timeout=600)["state"] == "ready", "the offline profile did not load"
    return fronts


def typing_run(n: int, engine: str, args, logs: Path, runtime: Path) -> dict:
    fronts = start_fronts(n, engine, logs, {"maxNewTokens": 32})
    results = [{"explicit": [], "shown": [], "empty": []} for _ in fronts]
    threads = [threading.Thread(target=type_file, args=(f, f"file:///bench/window{i}.py", (ROOT / SOURCES[i % len(SOURCES)]).read_text(),
                                                        args.lines, args.cps, results[i])) for i, f in enumerate(fronts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [f.request("spectab/status", {}) for f in fronts]
    front_rss = [rss_mb(f.proc.pid) for f in fronts]
    engine_rss = [rss_mb(pid) for pid in engine_pids(runtime)] if engine == "shared" else []
    for f in fronts:
        f.close()
    stop_engines(runtime)
    prompt = sum(s["promptTokens"] for s in statuses)
    reused = sum(s["reusedPromptTokens"] for s in statuses)
    explicit = [x for r in results for x in r["explicit"]]
    shown = [x for r in results for x in r["shown"]]
    return {"fronts": n, "engine": engine, "total_rss_mb": sum(front_rss) + sum(engine_rss), "front_rss_mb": front_rss,
            "engine_rss_mb": engine_rss, "explicit_ms": explicit, "shown_ms": shown,
            "hit_rate": reused / prompt if prompt else float("nan"), "statuses": statuses}


def hop_run(logs: Path, runtime: Path, repeats: int) -> dict:
    """One window on the shared engine and one in-process, side by side, asked in turn (so drift in
    the machine's speed hits both alike): one-token generations, then typed-ahead answers; and the
    bare round trip of a status message over the engine's socket."""
    from engine.service.cli import ask
    from engine.service.wire import addresses

    (shared,) = start_fronts(1, "shared", logs, {"maxNewTokens": 1, "debounceMs": 0})
    (inproc,) = start_fronts(1, "inprocess", logs, {"maxNewTokens": 1, "debounceMs": 0})
    pair = {"shared": shared, "inprocess": inproc}
    uri = "file:///bench/hop.py"
    text = (ROOT / "engine/prompts.py").read_text()
    lines = text.split("\n")
    row = len(lines) // 2
    for client in pair.values():
        client.open(uri, text)
    one_token = {name: [] for name in pair}
    typed_ahead = {name: [] for name in pair}
    for i in range(repeats + 1):
        r = row + i  # a different line each time: nothing is served from the last answer
        for name, client in pair.items():
            t0 = time.perf_counter()
            client.inline(uri, r, len(lines[r]), trigger=1)
            if i:  # the first one also ran the whole prompt
                one_token[name].append((time.perf_counter() - t0) * 1000)
    for client in pair.values():
        client.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"maxNewTokens": 16}}})
    version = 2
    for i in range(repeats):
        r = row + repeats + 2 + i
        for name, client in pair.items():
            items = client.inline(uri, r, len(lines[r]), trigger=1)
            if not items or len(items[0]["insertText"]) < 2:
                continue
            ch = items[0]["insertText"][0]
            client.change(uri, version, r, len(lines[r]), r, len(lines[r]), ch)
            t0 = time.perf_counter()
            client.inline(uri, r, len(lines[r]) + 1, trigger=1)
            typed_ahead[name].append((time.perf_counter() - t0) * 1000)
            client.change(uri, version + 1, r, len(lines[r]), r, len(lines[r]) + 1, "")
        version += 2
    # the hop of a real request: a front's wall time less the engine's own time for it
    from lsp_server.backends.base import GenerationRequest
    from lsp_server.backends.shared import SharedBackend
    from lsp_server.settings import Settings

    backend = SharedBackend(Settings(profile="smollm2-135m"))
    backend.open(lambda message: None)
    hop = []
    for i in range(repeats * 3):
        r = row + 2 * repeats + 4 + i
        t0 = time.perf_counter()
        result = backend.generate(GenerationRequest("file:///bench/hop-direct.py", "\n".join(lines[:r + 1]), "", 1,
                                                    deadline=time.monotonic() + 30), lambda: False, lambda piece: None)
        hop.append((time.perf_counter() - t0) * 1000 - result.engine_ms)
    backend.close()
    (address,) = addresses(runtime)
    ping = []
    for _ in range(repeats * 5):
        t0 = time.perf_counter()
        ask(address, "status")  # connect + hello + status: more than a request's hop, which reuses its connection
        ping.append((time.perf_counter() - t0) * 1000)
    for client in pair.values():
        client.close()
    stop_engines(runtime)
    return {"one_token_ms": one_token, "typed_ahead_ms": typed_ahead, "ping_ms": ping, "request_hop_ms": hop}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fronts", type=int, nargs="+", default=[2, 4], help="numbers of editor windows")
    ap.add_argument("--lines", type=int, default=3, help="lines each window types")
    ap.add_argument("--cps", type=float, default=6.0, help="typing speed per window, characters per second")
    ap.add_argument("--repeats", type=int, default=12, help="one-token and typed-ahead requests for the hop")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runtime = tmp / "runtime"
        os.environ["SPECTAB_RUNTIME_DIR"] = str(runtime)  # engines of this run only, stopped after each
        runs = [typing_run(1, "shared", args, tmp, runtime)]
        for n in args.fronts:
            runs.append(typing_run(n, "shared", args, tmp, runtime))
            runs.append(typing_run(n, "inprocess", args, tmp, runtime))
        hop = hop_run(tmp, runtime, args.repeats)

    rows = []
    for r in runs:
        rows.append([r["fronts"], r["engine"], f"{r['total_rss_mb']:.0f}", f"{max(r['front_rss_mb']):.0f}",
                     f"{pct(r['explicit_ms'], .5):.0f}", f"{pct(r['explicit_ms'], .95):.0f}",
                     f"{pct(r['shown_ms'], .5):.0f}", f"{pct(r['shown_ms'], .95):.0f}", f"{r['hit_rate']:.1%}"])
    hop_rows = []
    for label, key in (("one-token explicit generation, p50 ms", "one_token_ms"), ("typed-ahead answer, p50 ms", "typed_ahead_ms")):
        a, b = pct(hop[key]["shared"], .5), pct(hop[key]["inprocess"], .5)
        hop_rows.append([label, f"{a:.1f}", f"{b:.1f}", f"{a - b:+.1f}"])
    hop_rows.append(["a one-token request's time beyond the engine's own, p50 / p95 ms", "—", "—",
                     f"{pct(hop['request_hop_ms'], .5):.2f} / {pct(hop['request_hop_ms'], .95):.2f}"])
    hop_rows.append(["engine status round trip (new connection), p50 ms", f"{pct(hop['ping_ms'], .5):.1f}", "—", "—"])
    notes = ("Hop (same run, one window on each side asked in turn, SmolLM2 with prompt lookup):\n\n| figure | shared | in-process | added by the socket |\n"
             "| --- | --- | --- | --- |\n" + "\n".join("| " + " | ".join(r) + " |" for r in hop_rows) +
             f"\n\n{args.lines} lines typed per window at {args.cps:g} characters/s, all windows at once; memory is "
             "VmRSS at the end of typing; hit rate over all windows' prompt tokens.")
    command = f"python benchmarks/shared_engine.py --fronts {' '.join(map(str, args.fronts))} --lines {args.lines} --cps {args.cps:g} --repeats {args.repeats}"
    write_results("shared_engine", command, {"runs": runs, "hop": hop}, rows,
                  ["windows", "engine", "memory, all processes MB", "largest front MB", "explicit p50 ms", "explicit p95 ms",
                   "suggestion p50 ms", "suggestion p95 ms", "prefix-cache hit rate"], notes)


if __name__ == "__main__":
    main()
