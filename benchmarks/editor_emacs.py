"""Emacs client latency: from the trigger to the ghost text being there, over eglot and `spectab serve`.

Emacs 28 in batch mode loads editor-clients/emacs/spectab.el, starts `spectab serve` on the offline
profile (SmolLM2-135M, prompt lookup, CPU) through eglot and opens a copy of one of this
repository's files. Each trigger has its own line, cut after the word nearest its middle (the rest
of the line removed, untimed, and put back afterwards): the user is in the middle of typing it.
Two kinds of trigger alternate over the lines:

- keystroke: the last character before the cut is removed (not timed), then typed through Emacs's
  command loop; the clock starts just before that key. spectab.el's post-command hook arms its idle
  timer (`spectab-idle-delay`, 0.15 s); batch Emacs never goes idle by itself, so the driver waits
  that long in real time and then runs the timer, as the command loop would. The timer flushes
  eglot's pending didChange and sends an automatic request, which the server holds `debounceMs`
  (75 ms) before generating. So the keystroke figure INCLUDES the idle delay and the server's
  debounce.
- command: `spectab-complete` (an explicit request: no idle delay, no debounce), by its key.

The clock stops when the overlay holding the suggestion exists in the buffer (in batch mode
there is no screen; redisplay would add a frame's time). A trigger that the server answers with no
suggestion shows nothing: it is counted apart and left out of the percentiles. Each trigger is
dismissed (C-a) before the next one.

    python benchmarks/editor_emacs.py [--triggers 20] [--file lsp_server/service.py] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, write_results  # noqa: E402
from tests.editors.emacs_harness import emacs_binary, run_driver  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def pick_triggers(text: str, n: int) -> list[dict]:
    """2n cursors (1-based line, characters kept) from the last two thirds of the file: code lines
    of 16+ characters, cut after the word that ends nearest half of the line (a programmer in the
    middle of typing it), spread evenly over the file."""
    lines = text.split("\n")
    found = []
    for i, line in enumerate(lines):
        s = line.strip()
        if i < len(lines) // 3 or len(s) < 16 or s.startswith(("#", '"', "'")):
            continue
        ends = [m.end() for m in re.finditer(r"\w+", line) if m.start() > len(line) - len(line.lstrip())]
        if not ends:
            continue
        cut = min(ends, key=lambda e: abs(e - len(line) / 2))
        if cut < len(line):
            found.append((i + 1, cut))
    step = max(1, len(found) // (2 * n))
    picked = found[::step][: 2 * n]
    if len(picked) < 2 * n:
        raise SystemExit(f"only {len(picked)} usable lines; use a longer --file")
    # keystroke and command triggers alternate over the picked lines
    return [{"line": line, "cut": cut, "how": "key" if k % 2 == 0 else "command"} for k, (line, cut) in enumerate(picked)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triggers", type=int, default=20, help="triggers of each kind")
    ap.add_argument("--file", default="lsp_server/service.py", help="file of this repository to edit (a copy)")
    ap.add_argument("--max-new-tokens", type=int, default=32,
                    help="spectab-max-new-tokens (as benchmark 5, lsp_typing.py); 0 = the server's default (64)")
    args = ap.parse_args()
    if emacs_binary() is None:
        raise SystemExit("emacs is not installed: editor-clients/emacs/ci-install.sh")

    text = (ROOT / args.file).read_text()
    triggers = pick_triggers(text, args.triggers)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / Path(args.file).name
        shutil.copyfile(ROOT / args.file, src)
        settings = {"spectab-max-new-tokens": args.max_new_tokens} if args.max_new_tokens else {}
        result = run_driver("bench", src, work, triggers=triggers, settings=settings, timeout=1800, show_log=True)
    if result.get("error") or result["returncode"] != 0:
        print(result.get("stderr", ""), file=sys.stderr)
        raise SystemExit(f"the Emacs run failed: {result.get('error')}")

    load_after = os.getloadavg()[0]
    rows_in = result["rows"]
    table = []
    for how, label in (("key", "keystroke -> idle timer -> automatic request"), ("command", "spectab-complete (explicit request)")):
        rows = [r for r in rows_in if r["how"] == how]
        shown = [r for r in rows if r["shown"]]
        total = [r["total_ms"] for r in shown]
        to_req = [r["to_request_ms"] for r in shown]
        server = [r["request_to_answer_ms"] for r in shown]
        draw = [r["answer_to_shown_ms"] for r in shown]
        table.append([label, f"{len(shown)}/{len(rows)}", f"{pct(total, .5):.0f}", f"{pct(total, .95):.0f}",
                      f"{pct(to_req, .5):.0f}", f"{pct(server, .5):.0f}", f"{pct(draw, .5):.1f}"])
    status = result["status"]
    notes = (f"Emacs {result['emacs_version']}, eglot {result['eglot_version']}, batch mode; `spectab serve` on the offline "
             f"profile ({status.get('target', '?').rsplit('/', 1)[-1]}, draft {status.get('draft')}, {status.get('device')}), "
             f"maxNewTokens {args.max_new_tokens or 64}, other settings the server's defaults (debounceMs 75, deadlineMs 4000). "
             f"Editing a copy of {args.file}: each trigger at its own line, cut after the word nearest its middle (the rest of "
             "the line removed, untimed; restored after). Total = from the keystroke (or the command's key) to the suggestion's overlay existing in the "
             "buffer; for keystrokes it INCLUDES spectab-idle-delay (0.15 s, waited in real time, then the idle timer is "
             "run as the command loop would) and the server's 75 ms debounce. 'to request' = trigger to request sent; "
             "'server' = request sent to answer read; 'draw' = answer to overlay. Percentiles over triggers that showed a "
             f"suggestion. Server: {status.get('generations')} generations for {status.get('requests')} requests, "
             f"prefix-cache hit rate {status.get('prefixCacheHitRate')}. Machine load average (1 min) "
             f"{load_before:.1f} before, {load_after:.1f} after (2 cores; above 2, other processes took CPU time).")
    command = f"python benchmarks/editor_emacs.py --triggers {args.triggers} --file {args.file} --max-new-tokens {args.max_new_tokens}"
    write_results("editor_emacs", command, {"rows": rows_in, "status": status, "triggers": triggers}, table,
                  ["trigger", "shown", "p50 ms", "p95 ms", "to request p50 ms", "server p50 ms", "draw p50 ms"], notes)


if __name__ == "__main__":
    main()
