"""The shared engine end to end: real `spectab serve` fronts over their pipes, a real `spectab engine`
process they start themselves, its socket, its CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.service.cli import ask
from engine.service.wire import Address, addresses, engine_key

from .lsp_client import ROOT, LspClient

SOURCE = "import os\n\n\ndef add(a, b):\n    return\n"


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A runtime dir of this test's own: the engines it starts are its alone, and stopped after it."""
    folder = tmp_path / "rt"
    monkeypatch.setenv("SPECTAB_RUNTIME_DIR", str(folder))
    yield folder
    for address in addresses(folder) if folder.exists() else []:
        info = address.read_info() or {}
        ask(address, "stop", timeout=5)
        _wait_gone(info.get("pid"))


def _wait_gone(pid, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < end:
        time.sleep(0.1)


def front(tmp_path: Path, options: dict, name: str = "front") -> LspClient:
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path / name)})
    client.initialize(options)
    return client


def engine_status() -> dict:
    out = subprocess.run([sys.executable, "-m", "spectab", "engine", "status", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def tiny_options(tiny_models, **extra) -> dict:
    return {"target": str(tiny_models["target"]), "draft": str(tiny_models["same"]), "device": "cpu", "fim": "none",
            "maxNewTokens": 12, "minConfidence": 0, "candidates": 1, "extraContextTokens": 0, **extra}


def test_two_fronts_share_one_engine(smollm2_gguf, runtime, tmp_path):
    fronts = [front(tmp_path, {"profile": "smollm2-135m", "deadlineMs": 60000}, f"f{i}") for i in range(2)]
    try:
        statuses = [f.wait_ready() for f in fronts]
        assert all(s["state"] == "ready" and s["engine"] == "shared" for s in statuses), statuses
        assert statuses[0]["enginePid"] == statuses[1]["enginePid"] is not None
        for i, f in enumerate(fronts):
            uri = f"file:///work/add{i}.py"
            f.open(uri, SOURCE)
            items = f.inline(uri, 4, 10)
            assert items and items[0]["insertText"].startswith(" a + b"), items
        status = engine_status()
        assert status["running"] and len(status["engines"]) == 1
        engine = status["engines"][0]
        assert engine["clients"] == 2 and engine["pid"] == statuses[0]["enginePid"]
        assert engine["models"]["profile"] == "smollm2-135m" and engine["served"] == 2
        assert {lane["document"] for lane in engine["lanes"]} == {"file:///work/add0.py", "file:///work/add1.py"}
        # the model lives in the engine, not in the fronts
        for f in fronts:
            assert rss_mb(f.proc.pid) < 150, rss_mb(f.proc.pid)
        assert engine["rssMB"] > max(rss_mb(f.proc.pid) for f in fronts)
    finally:
        for f in fronts:
            assert f.close() == 0


def test_fronts_started_at_once_get_one_engine_and_other_settings_another(tiny_models, runtime, tmp_path):
    fronts = [LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path / f"f{i}")}) for i in range(4)]
    other = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path / "other")})
    try:
        for f in fronts:  # all four initialize before any engine exists
            f.initialize(tiny_options(tiny_models))
        other.initialize(tiny_options(tiny_models, draft="ngram"))
        pids = {f.wait_ready()["enginePid"] for f in fronts}
        assert len(pids) == 1 and None not in pids
        other_pid = other.wait_ready()["enginePid"]
        assert other_pid not in pids
        engines = engine_status()["engines"]
        assert sorted(e["clients"] for e in engines) == [1, 4]
        assert len({e["key"] for e in engines}) == 2
    finally:
        for f in fronts + [other]:
            f.close()


def _alternate(client: LspClient, docs: list[str], rounds: int) -> None:
    """Type forward in each document in turn: a line more each round, the cursor at the end."""
    for r in range(rounds):
        for i, uri in enumerate(docs):
            body = "".join(f"    value_{n} = compute_{i}(value_{n - 1}, {n})\n" for n in range(1, 25 + r))
            text = f"def f{i}(a, b):\n    value_0 = a\n{body}    return \n"
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2 + r},
                                                     "contentChanges": [{"text": text}]})
            client.inline(uri, text.count("\n") - 1, 11)


@pytest.mark.parametrize("lanes", [1, 4])
def test_lanes_keep_each_documents_prefix(tiny_models, runtime, tmp_path, lanes):
    client = front(tmp_path, tiny_options(tiny_models, kvLanes=lanes))
    try:
        assert client.wait_ready()["state"] == "ready"
        docs = ["file:///work/a.py", "file:///work/b.py"]
        for i, uri in enumerate(docs):
            client.open(uri, "")
        _alternate(client, docs, 4)
        status = client.request("spectab/status", {"uri": docs[0]})
        assert status["lane"] == docs[0]
        engine = engine_status()["engines"][0]
        held = {lane["document"] for lane in engine["lanes"]}
        if lanes == 4:
            # each document kept its own cache: only the edited tail ran again
            assert held == set(docs)
            assert status["prefixCacheHitRate"] > 0.6, status
        else:
            # one lane: every switch of document starts from an empty cache
            assert len(held) == 1
            assert status["prefixCacheHitRate"] < 0.2, status
    finally:
        client.close()


def _wait_running(address: Address, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        answer = ask(address, "status", timeout=2)
        if answer and answer["queued"]:
            return
        time.sleep(0.01)
    raise AssertionError("the request never reached the engine")


def test_engine_killed_mid_request_is_said_once_and_restarted(tiny_models, runtime, tmp_path):
    options = tiny_options(tiny_models, maxNewTokens=512, multiline="always", deadlineMs=60000)
    client = front(tmp_path, options)
    try:
        status = client.wait_ready()
        pid = status["enginePid"]
        uri = "file:///work/long.py"
        client.open(uri, "def long(a, b):\n    ")
        request = client.request_async("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": 1, "character": 4}, "context": {"triggerKind": 1}})
        _wait_running(Address(runtime, status["engineKey"]))
        os.kill(pid, signal.SIGKILL)
        answer = client.wait(request, timeout=60)
        assert answer["result"]["items"] == []
        told = [m["message"] for m in client.messages if "stopped" in m["message"]]
        assert len(told) == 1 and str(pid) in told[0], client.messages
        # the next requests start a new engine; once it is up, they complete
        items, end = [], time.monotonic() + 120
        client.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"maxNewTokens": 12, "multiline": "auto"}}})
        while not items and time.monotonic() < end:
            items = client.inline(uri, 1, 4)
            time.sleep(0.2)
        assert items, "no completion after the engine restart"
        new_pid = client.request("spectab/status", {})["enginePid"]
        assert new_pid != pid and Path(f"/proc/{new_pid}").exists()
        assert len([m for m in client.messages if "stopped" in m["message"]]) == 1
    finally:
        client.close()


def test_burst_from_two_fronts_only_the_newest_generates(tiny_models, runtime, tmp_path):
    fronts = [front(tmp_path, tiny_options(tiny_models), f"f{i}") for i in range(2)]
    try:
        for f in fronts:
            f.wait_ready()
        uri = "file:///work/shared.py"  # the same file open in both windows
        text = "def add(a, b):\n    return \n"
        for f in fronts:
            f.open(uri, text)
        ids = []
        for n in range(25):
            for f in fronts:
                ids.append((f, f.request_async("textDocument/inlineCompletion", {
                    "textDocument": {"uri": uri}, "position": {"line": 1, "character": 11},
                    "context": {"triggerKind": 1}})))
        answers = [f.wait(i, timeout=120) for f, i in ids]
        assert len(answers) == 50 and all("result" in a for a in answers)
        engine = engine_status()["engines"][0]
        # most were superseded before they ran, in their front or in the engine's queue
        assert engine["served"] < 10, engine
        # the two windows' last requests reach the engine in either order: the later one generates
        assert answers[-1]["result"]["items"] or answers[-2]["result"]["items"], "the newest request got no suggestion"
        assert not any(a["result"]["items"] for a in answers[:-2][::2]), "an old request of the first front generated"
        # $/cancelRequest reaches the engine: the generation stops, the front answers
        long = {"maxNewTokens": 512, "multiline": "always", "deadlineMs": 60000}
        fronts[0].notify("workspace/didChangeConfiguration", {"settings": {"spectab": long}})
        request = fronts[0].request_async("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}, "context": {"triggerKind": 1}})
        _wait_running(Address(runtime, engine["key"]))
        fronts[0].notify("$/cancelRequest", {"id": request})
        answer = fronts[0].wait(request, timeout=60)
        assert "error" in answer or answer["result"]["items"] == []
        end = time.monotonic() + 30
        while ask(Address(runtime, engine["key"]), "status")["queued"] and time.monotonic() < end:
            time.sleep(0.05)
        assert ask(Address(runtime, engine["key"]), "status")["queued"] == 0, "the cancelled generation kept running"
    finally:
        for f in fronts:
            f.close()


def test_inprocess_engine_keeps_the_one_process_mode(tiny_models, runtime, tmp_path):
    client = front(tmp_path, tiny_options(tiny_models, engine="inprocess"))
    try:
        status = client.wait_ready()
        assert status["engine"] == "inprocess" and status["enginePid"] is None
        client.open("file:///work/x.py", SOURCE)
        client.inline("file:///work/x.py", 4, 10)
        assert engine_status() == {"running": False, "engines": []}
    finally:
        client.close()


def test_engine_exits_when_idle_and_on_stop(tiny_models, runtime, tmp_path):
    client = front(tmp_path, tiny_options(tiny_models, idleMinutes=0.02))
    pid = client.wait_ready()["enginePid"]
    client.close()
    _wait_gone(pid, timeout=30)
    assert not Path(f"/proc/{pid}").exists(), "the idle engine did not exit"
    assert engine_status()["engines"] == [] and not list(runtime.glob("*.sock"))

    client = front(tmp_path, tiny_options(tiny_models), "again")
    try:
        pid = client.wait_ready()["enginePid"]
        out = subprocess.run([sys.executable, "-m", "spectab", "engine", "stop"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, env=os.environ | {"PYTHONPATH": str(ROOT)})
        assert out.returncode == 0 and f"pid {pid}" in out.stdout
        _wait_gone(pid)
        assert not Path(f"/proc/{pid}").exists()
    finally:
        client.close()


def test_tcp_transport_needs_the_token(tiny_models, runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTAB_ENGINE_TRANSPORT", "tcp")
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path / "f"), "SPECTAB_ENGINE_TRANSPORT": "tcp"})
    try:
        client.initialize(tiny_options(tiny_models))
        status = client.wait_ready()
        assert status["state"] == "ready" and status["engine"] == "shared"
        client.open("file:///work/t.py", SOURCE)
        assert client.inline("file:///work/t.py", 4, 10) is not None
        address = Address(runtime, status["engineKey"])
        info = address.read_info()
        assert info["transport"] == "tcp" and (address.token.stat().st_mode & 0o777) == 0o600
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as conn:
            conn.sendall(b'{"op":"hello","token":"wrong"}\n')
            answer = json.loads(conn.makefile().readline())
        assert answer["event"] == "refused"
    finally:
        client.close()


def _fake_socket(path: Path, mode: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, mode)
    return sock


def _address_for(runtime: Path, tiny_models) -> Address:
    settings = {"profile": None, "target": str(tiny_models["target"]), "draft": str(tiny_models["same"]), "device": "cpu",
                "dtype": "auto", "fim": "none", "contextTokens": 1024, "quant": "auto"}
    runtime.mkdir(mode=0o700, exist_ok=True)
    return Address(runtime, engine_key(settings))


def test_unsafe_or_stale_sockets(tiny_models, runtime, tmp_path):
    address = _address_for(runtime, tiny_models)
    # a socket others may open: refused, no engine started over it
    loose = _fake_socket(address.socket, 0o666)
    client = front(tmp_path, tiny_options(tiny_models), "loose")
    try:
        status = client.wait_ready()
        assert status["state"] == "error" and "open to other users" in status["error"], status
        assert any("open to other users" in m["message"] for m in client.messages)
    finally:
        client.close()
        loose.close()
    # another user's socket: refused
    os.chown(address.socket, 65534, 65534)
    os.chmod(address.socket, 0o600)
    client = front(tmp_path, tiny_options(tiny_models), "other-user")
    try:
        status = client.wait_ready()
        assert status["state"] == "error" and "belongs to user 65534" in status["error"], status
    finally:
        client.close()
    # a stale socket (its engine died without removing it): replaced by a fresh engine
    address.socket.unlink()
    _fake_socket(address.socket, 0o600).close()
    client = front(tmp_path, tiny_options(tiny_models), "stale")
    try:
        status = client.wait_ready()
        assert status["state"] == "ready" and status["engine"] == "shared", status
    finally:
        client.close()


def test_bad_engine_settings_are_said_and_the_server_keeps_serving(tiny_models, runtime, tmp_path):
    client = front(tmp_path, tiny_options(tiny_models, engine="not a url", kvLanes=-1))
    try:
        assert client.wait_ready()["state"] == "ready"
        said = " ".join(m["message"] for m in client.messages)
        assert "spectab.engine must be shared, inprocess or an http(s):// URL" in said
        assert "spectab.kvLanes must be" in said
    finally:
        client.close()
    for argv, needle in ((["engine", "--listen", "0.0.0.0:9999"], "needs --token-file"),
                         (["serve", "--engine", "ftp://x"], "engine"),
                         (["engine", "--kv-lanes", "-2"], "--kv-lanes")):
        out = subprocess.run([sys.executable, "-m", "spectab", *argv], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env=os.environ | {"PYTHONPATH": str(ROOT), "SPECTAB_LOG_DIR": str(tmp_path)})
        assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_relative_model_paths_name_the_same_engine(tmp_path, monkeypatch):
    """The engine runs in another folder than the front that starts it: a relative model path is
    passed on absolute, and the key the engine makes from its arguments is the front's."""
    from lsp_server.backends.shared import engine_command, engine_settings
    from lsp_server.settings import Settings

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    settings = Settings(target="models/m.gguf", draft="none")
    argv = engine_command(settings, 0, 30)
    passed = argv[argv.index("--target") + 1]
    assert passed == str(tmp_path / "models" / "m.gguf")
    monkeypatch.chdir("/")
    as_engine = dict(engine_settings(settings), target=passed)
    assert engine_key(as_engine) == engine_key(engine_settings(Settings(target=str(tmp_path / "models" / "m.gguf"), draft="none")))


def test_the_shared_engine_gets_context_and_answers_candidates_with_confidence(tiny_models, runtime, tmp_path):
    """Through the socket: the other document's chunk is in the prompt the engine built, an
    explicit request gets alternatives, an automatic one the greedy suggestion only."""
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path / "ctx"), "SPECTAB_DEBUG_PROMPTS": "1"})
    try:
        client.initialize(tiny_options(tiny_models, candidates=3, extraContextTokens=256))
        assert client.wait_ready()["engine"] == "shared"
        other, here = "file:///work/util.py", "file:///work/main.py"
        client.open(other, "def scale_by_factor(values, factor):\n    return [v * factor for v in values]\n")
        client.open(here, SOURCE)
        explicit = client.inline(here, 4, 10)
        status = client.request("spectab/status", {"uri": here})
        assert "def scale_by_factor(values, factor):" in status["lastPrompt"]
        assert status["lane"] == here and status["engine"] == "shared"
        assert 2 <= len(explicit) <= 3 and len({i["insertText"] for i in explicit}) == len(explicit)
        for n, item in enumerate(explicit):
            assert item["data"]["candidate"] == n and 0 < item["data"]["confidence"] <= 1
            assert item["command"]["arguments"][0]["confidence"] == item["data"]["confidence"]
        client.change(here, 2, 4, 10, 4, 10, " ")
        automatic = client.inline(here, 4, 11, trigger=2)
        assert len(automatic) <= 1
    finally:
        assert client.close() == 0
