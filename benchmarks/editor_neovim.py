"""Neovim: time from the keystroke that triggers a suggestion to the ghost text on screen.

Headless Neovim with the plugin (editor-clients/neovim) and `spectab serve` on the offline profile
(SmolLM2-135M, prompt lookup, CPU, the server's default settings). A Python file holds 22 small
functions, each ending in a bare `    return`; for each, the cursor goes to the end of that line
in normal mode and `A` is typed: entering insert mode is the trigger. The clock starts when the
key is fed and stops when the suggestion's extmark exists in the buffer (checked every 2 ms; a
headless Neovim has no screen, so "visible" is "the extmark is there"). Then <Esc> dismisses it.
Each trigger is a different function, so each is a fresh request (no typed-ahead reuse; the file
before it is in the prefix cache, as when editing one file). The first 2 are warm-up. Runs the
native path (vim.lsp.inline_completion, Neovim 0.12) and the fallback (the plugin's own
extmarks), each in its own Neovim with its own server; also Neovim 0.11 when installed.

    python benchmarks/editor_neovim.py [--triggers 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, write_results  # noqa: E402
from tests.editors.test_neovim import PLUGIN, SERVER, nvim_011, nvim_012  # noqa: E402

WARMUP = 2
FUNCTIONS = [
    ("add", "a, b"), ("subtract", "a, b"), ("multiply", "x, y"), ("divide", "numerator, denominator"),
    ("square", "n"), ("cube", "n"), ("average", "values"), ("maximum", "a, b"), ("minimum", "a, b"),
    ("is_even", "n"), ("is_odd", "n"), ("absolute", "x"), ("negate", "x"), ("double", "value"),
    ("half", "value"), ("area_of_rectangle", "width, height"), ("perimeter_of_square", "side"),
    ("celsius_to_fahrenheit", "celsius"), ("first_item", "items"), ("last_item", "items"),
    ("count_words", "text"), ("greeting", "name"), ("distance", "x1, y1, x2, y2"), ("hypotenuse", "a, b"),
]

LUA = r"""
vim.g.loaded_python3_provider = 0
local uv = vim.uv or vim.loop
local env = vim.env
local rows = vim.json.decode(env.BENCH_ROWS)
local out = { version = tostring(vim.version()), triggers = {} }
local function finish(err)
  out.error = err
  vim.fn.writefile({ vim.json.encode(out) }, env.BENCH_RESULT)
  vim.cmd(err and 'cquit 1' or 'qall!')
end
vim.defer_fn(function() finish('timed out') end, tonumber(env.BENCH_TIMEOUT_MS))
vim.opt.rtp:prepend(env.BENCH_PLUGIN)
vim.cmd.runtime('plugin/spectab.lua')
local spectab = require('spectab')
spectab.setup({ cmd = vim.json.decode(env.BENCH_CMD), mode = env.BENCH_MODE, filetypes = { 'python' },
  profile = 'smollm2-135m', device = 'cpu' })
out.mode = spectab.mode
local ns_name = spectab.mode == 'native' and 'nvim.lsp.inline_completion' or 'spectab.ghost'
local buf

local function ghost(row)
  local ns = vim.api.nvim_get_namespaces()[ns_name]
  if not ns then return nil end
  for _, m in ipairs(vim.api.nvim_buf_get_extmarks(buf, ns, { row - 1, 0 }, { row - 1, -1 }, { details = true })) do
    local t = {}
    for _, c in ipairs(m[4].virt_text or {}) do t[#t + 1] = c[1] end
    for _, l in ipairs(m[4].virt_lines or {}) do
      t[#t + 1] = '\n'
      for _, c in ipairs(l) do t[#t + 1] = c[1] end
    end
    return table.concat(t)
  end
end

local function every(ms, fn)
  local timer = uv.new_timer()
  timer:start(0, ms, vim.schedule_wrap(function()
    local ok, done = pcall(fn)
    if not ok then finish(tostring(done)) end
    if not ok or done then timer:stop(); timer:close() end
  end))
end

local answered -- when the last textDocument/inlineCompletion answer arrived (LspRequest: 0.11+)
vim.api.nvim_create_autocmd('LspRequest', { callback = function(args)
  local r = args.data.request or {}
  if r.method == 'textDocument/inlineCompletion' and r.type == 'complete' then
    answered = uv.hrtime()
  end
end })

local function trigger(i)
  if i > #rows then return finish(nil) end
  local row = rows[i]
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  local t0 = uv.hrtime()
  vim.api.nvim_feedkeys('A', 'n', false)
  answered = nil
  every(2, function()
    local g = ghost(row)
    if not g then
      -- an answer without a suggestion (nothing to suggest there, or the deadline came first)
      local empty = answered and answered > t0 and (uv.hrtime() - answered) / 1e6 > 100
      if empty or (uv.hrtime() - t0) / 1e6 > 70000 then
        table.insert(out.triggers, { row = row, ms = vim.NIL, empty = empty })
        vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('<Esc>', true, false, true), 'n', false)
        vim.defer_fn(function() trigger(i + 1) end, 300)
        return true
      end
      return false
    end
    local entry = { row = row, ms = (uv.hrtime() - t0) / 1e6, ghost = g }
    table.insert(out.triggers, entry)
    require('spectab.status').refresh(function(s)
      entry.server_ms = s and s.lastLatencyMs
      vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('<Esc>', true, false, true), 'n', false)
      vim.defer_fn(function() trigger(i + 1) end, 300)
    end)
    return true
  end)
end

vim.api.nvim_create_autocmd('LspAttach', { once = true, callback = function(args)
  buf = args.buf
  local asked = false
  every(200, function()
    if not asked then
      asked = true
      require('spectab.status').refresh(function(s)
        asked = false
        if s and s.state == 'ready' and not out.ready then
          out.ready = true
          trigger(1)
        end
      end)
    end
    return out.ready
  end)
end })
vim.cmd.edit(vim.fn.fnameescape(env.BENCH_FILE))
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def run(nvim: Path, mode: str, triggers: int, tmp: Path) -> dict:
    funcs = FUNCTIONS[: triggers + WARMUP]
    text, rows = "", []
    for name, args in funcs:
        text += f"def {name}({args}):\n    return\n\n\n"
        rows.append(text.count("\n") - 2)  # the `    return` line, 1-based
    source = tmp / f"bench_{mode}.py"
    source.write_text(text)
    script, result = tmp / "bench.lua", tmp / f"result_{mode}.json"
    script.write_text(LUA)
    env = os.environ | {
        "BENCH_PLUGIN": str(PLUGIN), "BENCH_FILE": str(source), "BENCH_RESULT": str(result), "BENCH_MODE": mode,
        "BENCH_CMD": json.dumps(SERVER), "BENCH_ROWS": json.dumps(rows), "BENCH_TIMEOUT_MS": str(600_000),
        "SPECTAB_LOG_DIR": str(tmp / f"log_{mode}"), "XDG_STATE_HOME": str(tmp / "state"), "PYTHONPATH": str(ROOT),
    }
    subprocess.run([str(nvim), "--headless", "--clean", "-S", str(script)], cwd=tmp, env=env,
                   capture_output=True, text=True, timeout=660)
    data = json.loads(result.read_text())
    if data.get("error"):
        raise SystemExit(f"{mode}: {data['error']}")
    data["triggers"] = data["triggers"][WARMUP:]
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triggers", type=int, default=20, help=f"measured triggers per path (at most {len(FUNCTIONS) - WARMUP})")
    args = ap.parse_args()
    assert 1 <= args.triggers <= len(FUNCTIONS) - WARMUP

    nvim12, nvim11 = nvim_012(), nvim_011()
    if nvim12 is None:
        raise SystemExit("Neovim 0.12 is not installed: bash editor-clients/neovim/ci-install.sh")
    paths = [("Neovim 0.12, native (vim.lsp.inline_completion)", nvim12, "native"),
             ("Neovim 0.12, fallback (plugin's extmarks)", nvim12, "fallback")]
    if nvim11:
        paths.append(("Neovim 0.11, auto = fallback", nvim11, "auto"))

    rows, data = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, nvim, mode in paths:
            load = os.getloadavg()[0]
            res = run(nvim, mode, args.triggers, Path(tmp))
            load = max(load, os.getloadavg()[0])
            shown = [t["ms"] for t in res["triggers"] if t.get("ms") is not None]
            server = [t["server_ms"] for t in res["triggers"] if t.get("server_ms") is not None]
            missed = len(res["triggers"]) - len(shown)
            rows.append([label, res["version"], len(shown), missed, f"{pct(shown, .5):.0f}", f"{pct(shown, .95):.0f}",
                         f"{pct(server, .5):.0f}", f"{statistics.median(s - v for s, v in zip(shown, server)):.0f}" if server else "-",
                         f"{load:.1f}"])
            data[mode if mode != "auto" else "auto_011"] = res
            print(label, rows[-1], flush=True)

    notes = ("Trigger: `A` typed in normal mode at the end of a bare `    return` line (entering insert mode), a different "
             "function each time (fresh requests, 2 warm-up triggers not counted); visible = the suggestion's extmark is in "
             "the buffer (polled every 2 ms, headless). Server: the latency `spectab/status` reports for that request (from "
             "its arrival to the answer, including the server's 75 ms debounce of automatic triggers). The native path waits "
             "200 ms in Neovim's own debounce before it asks; the fallback waits 30 ms (`delay_ms`). SmolLM2-135M-Instruct, "
             "prompt lookup, CPU, the server's default settings (maxNewTokens 64, multiline auto, deadlineMs 4000: a "
             "suggestion not finished by then is cut to its complete words, or is empty). Empty answers are counted, not "
             "timed. Load average: the machine's 1-minute load (2 cores) before or after that path, whichever is higher; "
             "other work on the machine slows the model.")
    command = f"python benchmarks/editor_neovim.py --triggers {args.triggers}"
    write_results("editor_neovim", command, data, rows,
                  ["path", "Neovim", "shown", "empty answers", "keystroke to ghost text p50 ms", "p95 ms",
                   "server p50 ms", "client overhead p50 ms", "load average"], notes)


if __name__ == "__main__":
    main()
