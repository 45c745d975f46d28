"""Runs Emacs in batch mode with editor-clients/emacs/spectab.el and tests/editors/emacs_driver.el.

Used by tests/editors/test_emacs.py and benchmarks/editor_emacs.py. Emacs starts `spectab serve`
through eglot (the command it is given), the driver plays a scenario and writes what it saw as
JSON; the callers check it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "editor-clients" / "emacs"
DRIVER = Path(__file__).resolve().parent / "emacs_driver.el"


def emacs_binary() -> str | None:
    return shutil.which("emacs")


def server_command() -> list[str]:
    """How Emacs starts the server: this interpreter's `spectab serve` (the venv's)."""
    return [sys.executable, "-m", "spectab", "serve"]


def run_driver(scenario: str, file: Path, workdir: Path, *, settings: dict | None = None, timeout: float = 170,
               show_log: bool = False, **args) -> dict:
    """Run one scenario in a fresh batch Emacs; the driver's observations (plus `stderr`, unless
    `show_log` lets Emacs's messages through as they come)."""
    out = workdir / f"emacs-{scenario}.json"
    params = {
        "scenario": scenario,
        "file": str(file),
        "server_command": server_command(),
        # the defcustoms the scenario sets, by variable name
        "settings": {"spectab-profile": "smollm2-135m", **(settings or {})},
        **args,
    }
    from engine.loading import cache_dir

    env = os.environ | {
        "SPECTAB_CACHE_DIR": str(cache_dir()),  # before HOME changes: conversions are reused
        "SPECTAB_DRIVER_ARGS": json.dumps(params),
        "SPECTAB_DRIVER_OUT": str(out),
        "PYTHONPATH": str(ROOT),
        "SPECTAB_LOG_DIR": str(workdir / "logs"),
        "HOME": str(workdir / "home"),  # nothing of the user's Emacs setup
    }
    (workdir / "home").mkdir(exist_ok=True)
    cmd = [emacs_binary() or "emacs", "--batch", "-L", str(CLIENT_DIR), "-l", str(DRIVER), "-f", "spectab-driver-main"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=None if show_log else subprocess.PIPE,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    result = json.loads(out.read_text()) if out.exists() else {"error": "the driver wrote nothing"}
    result["returncode"] = proc.returncode
    result["stderr"] = (proc.stderr or "")[-6000:]
    return result
