"""`spectab serve` end to end: a real LSP client over the server's real pipes, real models."""

import json
import time

import pytest

from engine.completer import Completer, EngineOptions
from engine.loading import load_model
from lsp_server.context import cursor_at
from lsp_server.postprocess import finish

from .lsp_client import LspClient, LspError

URI = "file:///work/example.py"
SOURCE = "import os\n\n\ndef add(a, b):\n    return\n"


@pytest.fixture(scope="module")
def tiny_server(tiny_models, tmp_path_factory):
    """A server on the tiny target with the always-agreeing draft, greedy, left to right."""
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path_factory.mktemp("logs"))})
    client.initialize({"target": str(tiny_models["target"]), "draft": str(tiny_models["same"]), "device": "cpu",
                       "fim": "none", "maxNewTokens": 12, "debounceMs": 75,
                       # a random model is unsure of every token: no cut, one candidate
                       "minConfidence": 0, "candidates": 1, "extraContextTokens": 0})
    assert client.wait_ready()["state"] == "ready"
    yield client
    assert client.close() == 0


def expected(tiny_models, text: str, offset: int, max_new: int = 12) -> str:
    """What the server must answer: the engine's greedy output for that cursor, post-processed."""
    # the server's default quant (auto: float safetensors become int8 on the CPU)
    c = Completer(load_model(str(tiny_models["target"]), "cpu", quant="auto"), load_model(str(tiny_models["same"]), "cpu", quant="auto"),
                  "none", EngineOptions(context_tokens=1024))
    cur = cursor_at(text, offset, 1024)
    multiline = cur.at_line_end
    return finish(c.complete(cur.prefix, cur.suffix, max_new, single_line=not multiline).text, cur, multiline)


def test_initialize_answers_at_once_and_advertises_inline_completion(tiny_models, tmp_path):
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path)})
    try:
        caps = client.initialize({"target": str(tiny_models["target"]), "draft": "ngram"})["capabilities"]
        assert caps["inlineCompletionProvider"]  # a non-empty object: Emacs reads {} as absent
        assert caps["completionProvider"] is not None and caps["positionEncoding"] == "utf-16"
        assert caps["textDocumentSync"]["change"] == 2  # incremental
        assert "spectab.accepted" in caps["executeCommandProvider"]["commands"]
        client.open(URI, SOURCE)
        # while the model loads: an empty answer, not an error
        assert client.inline(URI, 4, 10) == [] or client.request("spectab/status", {})["state"] == "ready"
        client.wait_ready()
        kinds = [p["kind"] for p in client.progress]
        assert kinds[0] == "begin" and kinds[-1] == "end" and client.progress[-1]["message"] == "ready"
        assert (tmp_path / "server.log").read_text().count("ready:") == 1
    finally:
        client.close()


def test_inline_and_plain_completion(tiny_server, tiny_models):
    tiny_server.open(URI, SOURCE)
    items = tiny_server.inline(URI, 4, 10)
    want = expected(tiny_models, SOURCE, SOURCE.index("return") + 6)
    assert want  # the tiny model does suggest something here
    assert [i["insertText"] for i in items] == [want]
    assert items[0]["range"] == {"start": {"line": 4, "character": 10}, "end": {"line": 4, "character": 10}}
    assert items[0]["command"]["command"] == "spectab.accepted"
    plain = tiny_server.request("textDocument/completion", {"textDocument": {"uri": URI}, "position": {"line": 4, "character": 10}})
    item = plain["items"][0]
    # the edit replaces the word being typed ('return') with itself plus the suggestion
    assert item["textEdit"]["newText"] == "return" + want and item["textEdit"]["range"]["start"]["character"] == 4
    assert item["label"] == ("return" + want).split("\n")[0]
    tiny_server.request("workspace/executeCommand", {"command": "spectab.accepted", "arguments": items[0]["command"]["arguments"]})
    assert tiny_server.request("spectab/status", {})["acceptedSuggestions"] >= 1


def test_incremental_edits_then_completion(tiny_server, tiny_models):
    uri = "file:///work/edited.py"
    tiny_server.open(uri, "def f(x):\n    pass\n")
    tiny_server.change(uri, 2, 1, 4, 1, 8, "y = x *")  # replace 'pass'
    tiny_server.change(uri, 3, 0, 6, 0, 7, "value")  # rename the parameter
    text = "def f(value):\n    y = x *\n"
    got = [i["insertText"] for i in tiny_server.inline(uri, 1, 11)]
    want = expected(tiny_models, text, text.index("x *") + 3)
    assert got == ([want] if want else [])


def test_typed_ahead_is_served_without_generating(tiny_server):
    uri = "file:///work/typed.py"
    text = "def g(n):\n    total = \n"
    tiny_server.open(uri, text)
    items = tiny_server.inline(uri, 1, 12)
    assert items and len(items[0]["insertText"]) >= 2  # something to type into
    suggestion = items[0]["insertText"]
    before = tiny_server.request("spectab/status", {})
    tiny_server.change(uri, 2, 1, 12, 1, 12, suggestion[0])
    again = tiny_server.inline(uri, 1, 13)
    after = tiny_server.request("spectab/status", {})
    assert [i["insertText"] for i in again] == [suggestion[1:]]
    assert after["typedAhead"] == before["typedAhead"] + 1 and after["generations"] == before["generations"]


def test_burst_of_fast_requests_only_the_last_works(tiny_server):
    uri = "file:///work/burst.py"
    tiny_server.open(uri, "x = 1\n" * 5 + "y = ")
    before = tiny_server.request("spectab/status", {})["generations"]
    ids = []
    for i in range(50):
        ids.append(tiny_server.request_async("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": 5, "character": 4}, "context": {"triggerKind": 2}}))
        if i % 7 == 3:
            tiny_server.notify("$/cancelRequest", {"id": ids[-1]})
    answers = [tiny_server.wait(i) for i in ids]
    assert len(answers) == 50  # every request answered
    for a in answers[:-1]:
        assert a.get("result") == {"items": []} or a.get("error", {}).get("code") == -32800
    assert "result" in answers[-1]
    assert tiny_server.request("spectab/status", {})["generations"] == before + 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8", "utf-32"])
def test_positions_on_non_ascii_lines(tiny_models, tmp_path, encoding):
    line = 's = "é中😀" + name'
    text = f"def h(name):\n    {line}\n"
    units = {"utf-16": len(line.encode("utf-16-le")) // 2, "utf-8": len(line.encode()), "utf-32": len(line)}[encoding]
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path)})
    try:
        caps = client.initialize({"target": str(tiny_models["target"]), "draft": "none", "fim": "none",
                                  "maxNewTokens": 8, "device": "cpu", "minConfidence": 0, "candidates": 1, "extraContextTokens": 0},
                                 encodings=[encoding])["capabilities"]
        assert caps["positionEncoding"] == encoding
        client.wait_ready()
        client.open(URI, text)
        got = client.inline(URI, 1, 4 + units)
        want = expected(tiny_models, text, text.index("name\n") + 4, max_new=8)
        assert [i["insertText"] for i in got] == ([want] if want else [])
        if got:
            assert got[0]["range"]["start"] == {"line": 1, "character": 4 + units}
        # the middle of the emoji is no position at all in UTF-8 (4 bytes) and UTF-16 (2 units)
        if encoding != "utf-32":
            before = line[: line.index("😀")]
            start = len(before.encode()) if encoding == "utf-8" else len(before.encode("utf-16-le")) // 2
            assert client.inline(URI, 1, 4 + start + (2 if encoding == "utf-8" else 1)) == []
    finally:
        client.close()


def test_configuration_changes_apply_without_restart(tiny_server):
    uri = "file:///work/config.py"
    tiny_server.open(uri, "def k():\n    return \n")
    tiny_server.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"maxNewTokens": 1, "multiline": "never"}}})
    one = tiny_server.inline(uri, 1, 11)
    assert all(len(i["insertText"]) <= 12 for i in one)  # one token at most
    tiny_server.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"maxNewTokens": "many", "bogus": 1}}})
    deadline = time.monotonic() + 10
    while len(tiny_server.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    said = " ".join(m["message"] for m in tiny_server.messages)
    assert "spectab.maxNewTokens must be an integer 1..512" in said and "unknown setting spectab.bogus" in said
    # pull model: settings null -> the server asks for the section
    tiny_server.configuration = {"maxNewTokens": 12, "multiline": "auto"}
    tiny_server.notify("workspace/didChangeConfiguration", {"settings": None})
    time.sleep(0.5)
    assert tiny_server.request("spectab/status", {})["state"] == "ready"


def test_deadline_and_language_filter(tiny_server):
    uri = "file:///work/slow.py"
    tiny_server.open(uri, "def slow():\n    ")
    tiny_server.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"maxNewTokens": 400, "deadlineMs": 50}}})
    before = tiny_server.request("spectab/status", {})["generations"]
    items = tiny_server.inline(uri, 1, 4)  # answered: a safe part of the text, or nothing
    status = tiny_server.request("spectab/status", {})
    assert isinstance(items, list) and status["generations"] == before + 1 and status["lastStopReason"] == "deadline"
    tiny_server.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"maxNewTokens": 12, "deadlineMs": 4000, "languages": ["rust"]}}})
    assert tiny_server.inline(uri, 1, 4) == []
    assert tiny_server.request("spectab/status", {})["generations"] == before + 1  # not even tried
    tiny_server.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"languages": []}}})


def test_model_load_failure_is_said_once_and_the_server_keeps_serving(tiny_models, tmp_path):
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path)})
    try:
        client.initialize({"target": str(tmp_path / "missing.gguf")})
        status = client.wait_ready()
        assert status["state"] == "error" and "does not exist" in status["error"]
        client.open(URI, SOURCE)
        for _ in range(3):
            assert client.inline(URI, 4, 10) == []
        errors = [m for m in client.messages if m["type"] == 1]
        assert len(errors) == 1 and "missing.gguf does not exist" in errors[0]["message"]
        # fixing the setting loads the model
        client.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"target": str(tiny_models["target"]), "draft": "ngram"}}})
        assert client.wait_ready()["state"] == "ready"
        assert isinstance(client.inline(URI, 4, 10), list)
    finally:
        assert client.close() == 0


def test_bad_quant_settings_are_said_and_the_server_recovers(tiny_models, tmp_path):
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path)})
    try:
        # a quant this device cannot run: the load fails with the reason, once
        client.initialize({"target": str(tiny_models["target"]), "draft": "ngram", "device": "meta", "quant": "int4"})
        status = client.wait_ready()
        assert status["state"] == "error" and "runs on the CPU only" in status["error"]
        errors = [m for m in client.messages if m["type"] == 1]
        assert len(errors) == 1 and "quant int4 runs on the CPU only" in errors[0]["message"]
        # an unknown value: one message, the rest of the change applies, the server serves
        client.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"quant": "int3", "device": "cpu"}}})
        assert client.wait_ready()["state"] == "ready"
        assert any("spectab.quant must be auto, none, int8, int4" in m["message"] for m in client.messages)
        status = client.request("spectab/status", {})
        assert status["quant"] == "int4+int8" and status["device"] == "cpu"  # the 336-wide down projection: int8
        client.open(URI, SOURCE)
        assert isinstance(client.inline(URI, 4, 10), list)
        client.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"quant": "none", "threads": 1}}})
        time.sleep(0.5)
        assert client.wait_ready()["state"] == "ready" and client.request("spectab/status", {})["quant"] == "none"
    finally:
        assert client.close() == 0


def test_bad_requests_get_errors_or_empty_results(tiny_server):
    with pytest.raises(LspError) as err:
        tiny_server.inline("file:///never/opened.py", 0, 0)
    assert err.value.code == -32602 and "didOpen" in str(err.value)
    tiny_server.open(URI, SOURCE)
    assert tiny_server.inline(URI, 4, 99) == []  # past the end of the line
    assert tiny_server.inline(URI, 40, 0) == []  # past the end of the file
    assert tiny_server.inline(URI, 4, 10, trigger=0) is not None  # VS Code's own trigger enum
    with pytest.raises(LspError):  # malformed params: no position
        tiny_server.request("textDocument/inlineCompletion", {"textDocument": {"uri": URI}, "context": {"triggerKind": 1}})
    tiny_server.send_raw(b"{this is not json")
    huge = "x = 1\n" * 700_000
    tiny_server.open("file:///work/huge.py", huge)
    assert tiny_server.inline("file:///work/huge.py", 10, 5) == []
    tiny_server.open("file:///work/binary.py", "a\x00b\n")
    assert tiny_server.inline("file:///work/binary.py", 0, 1) == []
    assert any("too large or binary" in m["message"] for m in tiny_server.messages)
    # still serving
    assert tiny_server.request("spectab/status", {})["state"] == "ready"
    assert tiny_server.proc.poll() is None


def test_smollm2_profile_completes_over_lsp(smollm2, tmp_path):
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path)})
    try:
        client.initialize({"profile": "smollm2-135m", "deadlineMs": 60000})  # a loaded machine must not cut it
        assert client.wait_ready()["state"] == "ready"
        client.open(URI, SOURCE)
        items = client.inline(URI, 4, 10)
        assert items and "a + b" in items[0]["insertText"]
        plain = client.request("textDocument/completion", {"textDocument": {"uri": URI}, "position": {"line": 4, "character": 10}})
        assert "a + b" in plain["items"][0]["textEdit"]["newText"]
    finally:
        client.close()


def test_tcp_mode(tiny_models, tmp_path):
    import socket
    import subprocess
    import sys

    from .lsp_client import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "spectab", "serve", "--tcp", str(port), "--target", str(tiny_models["target"]),
                             "--draft", "none", "--log-file", str(tmp_path / "tcp.log")], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.1)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode()
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        reply = conn.makefile("rb")
        headers = {}
        while (line := reply.readline().strip()):
            key, _, value = line.decode().partition(":")
            headers[key.lower()] = value.strip()
        length = int(headers["content-length"])
        assert "inlineCompletionProvider" in json.loads(reply.read(length))["result"]["capabilities"]
        conn.close()
    finally:
        proc.kill()
        proc.wait()


def test_confidence_cut_and_hidden_counts_and_partial_accepts(tiny_models, tmp_path):
    """A random model is unsure of everything: at a threshold above its probabilities nothing is
    shown and the status says so; `spectab.accepted` with partial counts apart from whole."""
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path)})
    try:
        client.initialize({"target": str(tiny_models["target"]), "draft": "ngram", "device": "cpu", "fim": "none",
                           "maxNewTokens": 8, "minConfidence": 0.99, "extraContextTokens": 0, "engine": "inprocess"})
        client.wait_ready()
        client.open(URI, SOURCE)
        assert client.inline(URI, 4, 10) == []
        status = client.request("spectab/status", {})
        assert status["confidenceHidden"] == 1 and status["confidenceCut"] == 0 and status["lastStopReason"] == "confidence"
        client.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"minConfidence": 0, "candidates": 3}}})
        time.sleep(0.5)
        items = client.inline(URI, 4, 10)
        assert 1 < len(items) <= 3 and all(0 < i["data"]["confidence"] <= 1 for i in items)
        args = items[0]["command"]["arguments"]
        client.request("workspace/executeCommand", {"command": "spectab.accepted", "arguments": [{**args[0], "partial": True}]})
        client.request("workspace/executeCommand", {"command": "spectab.accepted", "arguments": [{**args[0], "partial": True}]})
        client.request("workspace/executeCommand", {"command": "spectab.accepted", "arguments": args})
        status = client.request("spectab/status", {})
        assert status["partialAccepts"] == 2 and status["acceptedSuggestions"] == 1 and status["alternatives"] >= 1
        # the menu (eglot's path) lists the candidates too, greedy first
        menu = client.request("textDocument/completion", {"textDocument": {"uri": URI}, "position": {"line": 4, "character": 10}})
        assert menu["items"][0]["sortText"] == "00" and menu["items"][0]["data"]["candidate"] == 0
    finally:
        client.close()
