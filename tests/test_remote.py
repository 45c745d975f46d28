"""Remote engines against real servers on loopback, never stand-ins for them.

- llama-cpp-python 0.3.36's OpenAI-compatible server (`python -m llama_cpp.server`) serving the
  SmolLM2-135M GGUF, for the `openai` backend: completion, streaming, cancellation, a server
  killed or stopped mid-request, a wrong API key.
- llama.cpp's own `llama-server`, built from the llama.cpp sources of the same release (the Python
  server has no /infill), for the `infill` backend: slots per document, its prompt cache, and its
  refusal of a model without infilling tokens.
Both are built once into the venv of benchmarks/llamacpp_env.py (about 6 + 10 minutes on 2 cores
the first time; the build's progress is printed, and a failed build fails the tests with its log).
Python's own http.server plays what it is, a web server that is not an engine, and a loopback
socket that answers with fixed bytes checks HTTP framing and statuses (429, 503, a cut chunk) that
a healthy server will not produce on demand; neither is presented as a test of an engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine.errors import SpectabError
from lsp_server.backends.base import BackendError, GenerationRequest
from lsp_server.backends.remote import Backoff, SlotMap, check_url, open_remote
from lsp_server.backends.remote_http import HttpStatusError
from lsp_server.backends.remote_prompt import family_of, resolve

ROOT = Path(__file__).resolve().parent.parent
BUILDER = ROOT / "benchmarks" / "llamacpp_env.py"
ADD = "def add(a, b):\n    return"
KEY_ENV = "SPECTAB_TEST_REMOTE_KEY"


def request(prefix: str = ADD, suffix: str = "\n", tokens: int = 16, single_line: bool = True,
            document: str = "file:///work/add.py", seconds: float = 60.0) -> GenerationRequest:
    return GenerationRequest(document, prefix, suffix, tokens, 0.0, single_line, time.monotonic() + seconds)


def run(backend, req: GenerationRequest, cancelled=lambda: False):
    pieces: list[str] = []
    result = backend.generate(req, cancelled, pieces.append)
    return result, pieces


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, repr(text)
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def built(pytestconfig, *flags: str) -> Path:
    """benchmarks/llamacpp_env.py's answer, building what is missing with its progress shown."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        done = subprocess.run([sys.executable, str(BUILDER), *flags], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        pytest.fail(f"python benchmarks/llamacpp_env.py {' '.join(flags)} failed (exit {done.returncode}); "
                    "the message above names its build log")
    return Path(done.stdout.strip().splitlines()[-1])


class Server:
    """A server process on a free loopback port, ready once `ready_path` answers."""

    def __init__(self, cmd: list[str], port: int, log: Path, ready_path: str):
        self.port, self.log, self.url = port, log, f"http://127.0.0.1:{port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{cmd[0]} exited ({self.proc.returncode}) while starting:\n{self.tail()}")
            try:
                urllib.request.urlopen(self.url + ready_path, timeout=2).read()
                return
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):  # up, and asking for its key
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{cmd[0]} did not come up on port {port} in 180 s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def llama_python(pytestconfig) -> Path:
    return built(pytestconfig, "--server")


@pytest.fixture(scope="session")
def llama_server_binary(pytestconfig) -> Path:
    return built(pytestconfig, "--llama-server")


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """Starts servers and stops every one of them at the end of the run."""
    started: list[Server] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(cmd: list, ready_path: str, port: int | None = None, port_flag: str | None = "--port") -> Server:
        port = port or free_port()
        cmd = [str(c) for c in cmd] + ([port_flag] if port_flag else []) + [str(port)]
        server = Server(cmd, port, logs / f"{Path(cmd[0]).name}-{port}.log", ready_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def python_server(servers, llama_python, gguf, *extra, port=None) -> Server:
    return servers([llama_python, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                    "--n_ctx", "2048", *extra], "/v1/models", port)


@pytest.fixture(scope="session")
def openai_url(servers, llama_python, smollm2_gguf) -> str:
    return python_server(servers, llama_python, smollm2_gguf).url


# ---------------------------------------------------------------------------------------------
# The OpenAI-compatible API (llama-cpp-python's server, SmolLM2-135M)

def test_the_remote_modules_do_not_import_torch():
    code = ("import sys, lsp_server.backends.remote; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_openai_completes_add_left_to_right(openai_url, smollm2_gguf):
    backend = open_remote(openai_url, "openai", None, "", "auto")
    result, pieces = run(backend, request())
    # SmolLM2's vocabulary has no infilling tokens, so `auto` sends the prefix alone
    assert result.text.startswith(" a + b"), result
    assert "".join(pieces) == result.text and result.stop_reason == "stop"
    info = backend.describe()
    assert info == {"engine": "remote", "url": openai_url, "api": "openai", "model": str(smollm2_gguf)}


def test_smollm2_is_completed_left_to_right_and_refuses_infilling(smollm2_gguf):
    assert family_of(str(smollm2_gguf)) is None
    assert resolve(str(smollm2_gguf), "auto") == (None, "none")
    with pytest.raises(SpectabError, match="does not know the infilling markers"):
        open_remote("http://127.0.0.1:1", "openai", str(smollm2_gguf), "", "psm")


def test_infilling_markers_by_model_name():
    assert family_of("codellama/CodeLlama-7b-hf").name == "codellama"
    assert family_of("codellama/CodeLlama-7b-Instruct-hf").name == "codellama"
    assert family_of("codellama/CodeLlama-7b-Python-hf") is None  # not trained to infill
    assert family_of("/models/codellama-34b.Q4_K_M.gguf") is None
    assert family_of("bigcode/starcoder2-3b").name == "starcoder"
    assert family_of("Qwen/Qwen2.5-Coder-1.5B").name == "qwen2.5-coder"
    assert family_of("deepseek-ai/deepseek-coder-1.3b-base").name == "deepseek-coder"
    assert family_of("/opt/models/codellama/SmolLM2-135M.gguf") is None  # the file's name decides
    with pytest.raises(SpectabError, match="prefix-suffix-middle"):
        resolve("Qwen/Qwen2.5-Coder-1.5B", "spm")


def confidence_cut_expected(result) -> tuple[str, float]:
    """A threshold between two of the pieces' probabilities, and the text before the first piece
    under it."""
    assert result.probs is not None and len(result.probs) == len(result.ends) and result.ends[-1] == len(result.text)
    assert all(0.0 < p <= 1.0 for p in result.probs), result.probs
    probs = result.probs
    # the first piece less sure than every piece before it, and a threshold between the two
    i = next((j for j in range(1, len(probs)) if probs[j] < min(probs[:j])), None)
    assert i is not None, f"no piece less sure than every piece before it: {probs}"
    return result.text[:result.ends[i - 1]], (probs[i] + min(probs[:i])) / 2


def test_openai_pieces_carry_probabilities_and_min_confidence_cuts_before_the_first_unsure_one(openai_url):
    long = request("def fibonacci(n):\n", "", tokens=24, single_line=False)
    whole, _ = run(open_remote(openai_url, "openai"), long)
    kept, threshold = confidence_cut_expected(whole)
    cut, pieces = run(open_remote(openai_url, "openai"), dataclasses.replace(long, min_confidence=threshold))
    assert cut.stop_reason == "confidence" and cut.text == kept and "".join(pieces) == kept, (whole, threshold, cut)
    assert cut.probs == [p for p in whole.probs[:len(cut.probs)]] and min(cut.probs) >= threshold


def test_a_server_that_refuses_the_probability_field_is_asked_without_it():
    asked = []
    events = b'data: {"choices": [{"text": " a + b", "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    refusal = b'{"error": {"message": "unknown field logprobs"}}'

    def answer(body: bytes) -> bytes:
        asked.append(b'"logprobs"' in body)
        if b'"logprobs"' in body:
            return b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(refusal), refusal)
        return SSE_HEAD + chunked(events) + b"0\r\n\r\n"

    with canned_http(answer) as url:
        backend = open_remote(url, "openai", "m")
        first, _ = run(backend, request())
        second, _ = run(backend, request())
    assert first.text == second.text == " a + b" and first.probs is None
    assert asked == [True, False, False]  # refused once, then never asked again


def test_streaming_pieces_add_up_and_cancelling_stops_the_stream(openai_url):
    backend = open_remote(openai_url, "openai", None, "", "none")
    long = request("def fibonacci(n):\n", "", tokens=48, single_line=False)
    whole, pieces = run(backend, long)
    assert len(pieces) > 1 and "".join(pieces) == whole.text

    # cancelled once the first piece is there: the stream is closed at once
    cut_pieces: list[str] = []
    cut = backend.generate(long, lambda: bool(cut_pieces), cut_pieces.append)
    assert cut.stop_reason == "cancelled" and len(cut_pieces) == 1 < 48
    assert cut.text == cut_pieces[0] == pieces[0]
    # and the server serves the next request as before
    again, _ = run(backend, request())
    assert again.text.startswith(" a + b")


def test_a_server_killed_mid_answer_is_one_message_then_backoff(servers, llama_python, smollm2_gguf):
    server = python_server(servers, llama_python, smollm2_gguf)
    backend = open_remote(server.url, "openai", None, "", "none")
    run(backend, request())  # the model id is known from here on

    def kill_on_first_piece(piece: str) -> None:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()

    with pytest.raises(BackendError) as failed:
        backend.generate(request("def fibonacci(n):\n", "", tokens=200, single_line=False), lambda: False,
                         kill_on_first_piece)
    message = one_line(failed.value)
    assert server.url in message and ("mid-answer" in message or "connection" in message), message

    # backing off: the next request fails the same way without touching the network; a listener
    # on the server's port sees no connection
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", server.port))
        listener.listen(8)
        with pytest.raises(BackendError) as again:
            run(backend, request())
        assert str(again.value) == message
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()

    # the server back on its port: once the backoff (1 s after one failure) is over, it answers
    python_server(servers, llama_python, smollm2_gguf, port=server.port)
    while True:
        try:
            result, _ = run(backend, request())
            break
        except BackendError as err:
            assert str(err) == message  # still backing off, nothing else
            time.sleep(0.2)
    assert result.text.startswith(" a + b") and backend.backoff.error is None


def test_a_stopped_server_times_out_at_the_deadline(servers, llama_python, smollm2_gguf):
    server = python_server(servers, llama_python, smollm2_gguf)
    backend = open_remote(server.url, "openai", None, "", "none")
    run(backend, request())
    server.proc.send_signal(signal.SIGSTOP)  # the kernel still accepts connections; nobody answers
    try:
        with pytest.raises(BackendError) as failed:
            run(backend, request(seconds=1.5))
        message = one_line(failed.value)
        assert server.url in message and "did not answer within" in message, message
    finally:
        server.proc.send_signal(signal.SIGCONT)


def test_api_keys_wrong_missing_and_right(servers, llama_python, smollm2_gguf, monkeypatch):
    secret = "right-key-4f9a"
    server = python_server(servers, llama_python, smollm2_gguf, "--api_key", secret)

    monkeypatch.setenv(KEY_ENV, "wrong-key-77c1")
    with pytest.raises(BackendError) as wrong:
        run(open_remote(server.url, "openai", None, KEY_ENV, "none"), request())
    message = one_line(wrong.value)
    assert "401" in message and KEY_ENV in message and "wrong" in message, message
    assert "wrong-key-77c1" not in message and secret not in message

    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(BackendError) as unset:
        run(open_remote(server.url, "openai", None, KEY_ENV, "none"), request())
    assert "401" in one_line(unset.value) and f"{KEY_ENV} (spectab.engineApiKeyEnv) is not set" in str(unset.value)

    with pytest.raises(BackendError) as none:
        run(open_remote(server.url, "openai", None, "", "none"), request())
    assert "401" in one_line(none.value) and "set spectab.engineApiKeyEnv" in str(none.value)

    monkeypatch.setenv(KEY_ENV, secret)
    result, _ = run(open_remote(server.url, "openai", None, KEY_ENV, "none"), request())
    assert result.text.startswith(" a + b")


# ---------------------------------------------------------------------------------------------
# Bad input and unreachable servers

@pytest.mark.parametrize("value", ["not a url", "ftp://x", "http://", "https:///v1", "http://host:port", 42, None])
def test_check_url_refuses_what_is_not_an_http_url(value):
    with pytest.raises(SpectabError) as err:
        check_url(value)
    shown = value if isinstance(value, str) else repr(value)
    assert str(err.value) == f"engine must be shared, inprocess or an http(s):// URL, not '{shown}'"


def test_check_url_keeps_passwords_out_of_its_message():
    assert check_url(" http://127.0.0.1:8000/v1/ ") == "http://127.0.0.1:8000/v1"
    with pytest.raises(SpectabError) as err:
        check_url("ftp://me:hunter2@example.com")
    assert "hunter2" not in str(err.value)
    backend = open_remote("https://me:hunter2@example.com:8443/api", "openai", "codellama/CodeLlama-7b-hf")
    assert backend.describe()["url"] == "https://example.com:8443/api"


def test_open_remote_refuses_bad_settings():
    with pytest.raises(SpectabError, match="engineApi must be openai or infill, not 'grpc'"):
        open_remote("http://127.0.0.1:8000", "grpc")
    with pytest.raises(SpectabError) as pasted:
        open_remote("http://127.0.0.1:8000", "openai", None, "sk-live-1234567890")
    assert "sk-live" not in str(pasted.value) and "name of an environment variable" in str(pasted.value)
    with pytest.raises(SpectabError, match="unknown infilling mode 'fill'"):
        open_remote("http://127.0.0.1:8000", "openai", None, "", "fill")


def test_a_closed_port_is_one_message_and_backs_off():
    url = f"http://127.0.0.1:{free_port()}"  # bound and closed again: nothing listens there
    for api in ("openai", "infill"):
        backend = open_remote(url, api)
        with pytest.raises(BackendError) as refused:
            run(backend, request(seconds=5))
        message = one_line(refused.value)
        assert message == f"nothing is listening at {url} (connection refused); is the server running?"
        with pytest.raises(BackendError) as again:
            run(backend, request(seconds=5))
        assert str(again.value) == message


def test_an_unroutable_host_fails_by_the_deadline():
    backend = open_remote("http://192.0.2.1:9", "openai", "m")  # TEST-NET-1: never routed
    with pytest.raises(BackendError) as failed:
        run(backend, request(seconds=1.0))
    assert "192.0.2.1" in one_line(failed.value)


def test_a_web_server_that_is_not_an_engine(servers, tmp_path):
    site = tmp_path / "site"
    (site / "v1").mkdir(parents=True)
    (site / "v1" / "models").write_text("<html>a web page, not a model list</html>")
    web = servers([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", site], "/",
                  port_flag=None)
    with pytest.raises(BackendError) as malformed:
        run(open_remote(web.url, "openai"), request())
    assert "not JSON" in one_line(malformed.value) and f"{web.url}/v1/models" in str(malformed.value)
    with pytest.raises(BackendError) as missing:
        run(open_remote(web.url + "/elsewhere", "openai"), request())
    assert one_line(missing.value).startswith(f"{web.url}/elsewhere/v1/models does not exist (404); does the server")
    with pytest.raises(BackendError) as no_post:  # it serves files: POST is not implemented (501)
        run(open_remote(web.url, "openai", "m"), request())
    assert one_line(no_post.value) == f"{web.url}/v1/completions failed with 501"


@contextlib.contextmanager
def canned_http(answer, tls: ssl.SSLContext | None = None):
    """A loopback socket that reads each request and answers it with `answer` (bytes, or a
    function of the request's body giving them), byte for byte, then hangs up: HTTP framing as servers send it (chunks split anywhere, keep-alive pings, error
    pages, a cut connection) with no engine behind it. It stands in for no server; it checks that
    the client reads what any server may send."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if tls is not None:
                try:
                    conn = tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):  # the client refused the certificate
                    conn.close()
                    continue
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                head, _, body = head.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(answer(body) if callable(answer) else answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_event_streams_framed_as_servers_frame_them():
    events = (b': ping\r\n\r\ndata:{"choices": [{"text": " a", "finish_reason": null}]}\r\n\r\n'
              b'data: {"choices": [{"text": " + b", "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
    # chunk boundaries inside a line, inside "data:", and inside the JSON
    with canned_http(SSE_HEAD + chunked(events[:5], events[5:17], events[17:60], events[60:]) + b"0\r\n\r\n") as url:
        result, pieces = run(open_remote(url, "openai", "m"), request())
    assert pieces == [" a", " + b"] and result.text == " a + b" and result.stop_reason == "stop"

    whole = b'{"choices": [{"text": " a + b", "finish_reason": "length"}]}'  # a server that ignored stream
    with canned_http(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(whole), whole)) as url:
        result, _ = run(open_remote(url, "openai", "m"), request())
    assert result.text == " a + b" and result.stop_reason == "length"


def test_https_checks_the_certificate(tmp_path, monkeypatch):
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        pytest.fail("this test makes its certificate with the openssl command: apt-get install openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    events = b'data: {"choices": [{"text": " a + b", "finish_reason": "stop"}]}\n\n'
    with canned_http(SSE_HEAD + chunked(events) + b"0\r\n\r\n", tls) as url:
        with pytest.raises(BackendError) as untrusted:  # a certificate nobody vouches for
            run(open_remote(url, "openai", "m"), request())
        assert one_line(untrusted.value).startswith(f"TLS with {url} failed: ")
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now trusted, as a team's own CA would be
        result, _ = run(open_remote(url, "openai", "m"), request())
    assert result.text == " a + b"


@pytest.mark.parametrize("answer, expected", [
    (SSE_HEAD + chunked(b'data: {"choices": [{"text": " a", "finish_reason": null}]}\n\n') + b"3\r\nda",
     "/v1/completions stopped mid-answer (the connection closed early)"),
    (SSE_HEAD + chunked(b'data: {"object": "text_completion"}\n\n') + b"0\r\n\r\n",
     "/v1/completions sent a malformed answer (no choices)"),
    (SSE_HEAD + chunked(b"data: <html>\n\n") + b"0\r\n\r\n",
     "/v1/completions sent a malformed answer (not JSON: '<html>')"),
    (SSE_HEAD + chunked(b'data: {"error": {"message": "out of KV cache"}}\n\n') + b"0\r\n\r\n",
     "/v1/completions failed mid-answer: out of KV cache"),
    (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 35\r\n\r\n"
     b'{"error": {"message": "slow down"}}',
     "/v1/completions is rate-limiting spectab (429: slow down); waiting before the next request"),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 19\r\n\r\nService Unavailable",
     "/v1/completions failed with 503: Service Unavailable"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "/v1/completions does not speak HTTP (it answered b'SSH-2.0-OpenSSH_9.2')"),
])
def test_what_servers_may_send_is_one_line_each(answer, expected):
    with canned_http(answer) as url:
        with pytest.raises(BackendError) as failed:
            run(open_remote(url, "openai", "m"), request(seconds=10))
    assert one_line(failed.value) == url + expected


def test_backoff_doubles_to_a_minute_and_a_success_resets_it():
    now = [100.0]
    backoff = Backoff(clock=lambda: now[0])
    err = BackendError("down")
    waits = []
    for _ in range(9):
        backoff.failed(err)
        waits.append(backoff.until - now[0])
        with pytest.raises(BackendError):
            backoff.check()
        now[0] = backoff.until
        backoff.check()  # over: the next request may go out
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    backoff.succeeded()
    backoff.failed(err)
    assert backoff.until - now[0] == 1
    backoff.failed(HttpStatusError("429", 429, retry_after=7))  # the server's Retry-After wins
    assert backoff.until - now[0] == 7


def test_slots_stay_with_their_documents():
    slots = SlotMap()
    a, b, c = (slots.slot(f"file:///{n}.py", 2) for n in "abc")
    assert a != b and c in (a, b)  # a third document takes the least recently used one's slot
    assert slots.slot("file:///c.py", 2) == c and slots.slot("file:///x.py", 0) == -1


# ---------------------------------------------------------------------------------------------
# llama.cpp's /infill (llama-server)

@pytest.fixture(scope="session")
def fim_gguf(tmp_path_factory) -> Path:
    """A tiny random Llama over CodeLlama's 32016-token vocabulary, whose infilling tokens
    llama-server looks for; the benchmark's writer makes it."""
    from benchmarks.cpu_vs_llamacpp import SHAPES_7B, write_codellama_gguf

    path = tmp_path_factory.mktemp("fim") / "codellama-vocab-tiny.gguf"
    write_codellama_gguf(path, SHAPES_7B["tiny"])
    return path


@pytest.fixture(scope="session")
def infill_url(servers, llama_server_binary, fim_gguf) -> str:
    return servers([llama_server_binary, "-m", fim_gguf, "--host", "127.0.0.1", "-c", "2048", "-np", "2",
                    "-t", "2"], "/health").url


def test_infill_streams_and_keeps_each_document_in_its_slot(infill_url, fim_gguf):
    backend = open_remote(infill_url, "infill")
    body = "def add(a, b):\n    return a + b\n\n" * 20
    docs = {name: request(body + f"# {name}\n", "\n", tokens=8, single_line=False, document=f"file:///{name}.py")
            for name in ("left", "right")}
    lanes: dict[str, list[str | None]] = {name: [] for name in docs}
    reused: dict[str, list[int]] = {name: [] for name in docs}
    for _ in range(2):
        for name, req in docs.items():
            result, pieces = run(backend, req)
            assert "".join(pieces) == result.text
            lanes[name].append(result.lane)
            reused[name].append(result.reused_prompt_tokens)
    assert backend.total_slots == 2
    assert len(set(lanes["left"])) == len(set(lanes["right"])) == 1 and lanes["left"][0] != lanes["right"][0]
    assert {lanes["left"][0], lanes["right"][0]} == {"slot 0", "slot 1"}
    # alternating documents did not evict each other: the repeat found its prompt in its slot
    for name in docs:
        assert reused[name][1] > reused[name][0], reused
    assert backend.describe() == {"engine": "remote", "url": infill_url, "api": "infill", "model": str(fim_gguf)}


def test_infill_pieces_carry_probabilities_and_min_confidence_hides_an_unsure_suggestion(infill_url):
    backend = open_remote(infill_url, "infill")
    whole, _ = run(backend, request(tokens=6, single_line=False))
    assert whole.text and whole.probs is not None and len(whole.probs) == len(whole.ends) and whole.ends[-1] == len(whole.text)
    # the tiny random model is unsure of everything: a threshold above its surest piece hides it all
    hidden, pieces = run(backend, dataclasses.replace(request(tokens=6, single_line=False), min_confidence=max(whole.probs) * 1.01))
    assert hidden.text == "" and pieces == [] and hidden.stop_reason == "confidence"


def test_infill_refuses_a_model_without_infilling_tokens(servers, llama_server_binary, smollm2_gguf):
    server = servers([llama_server_binary, "-m", smollm2_gguf, "--host", "127.0.0.1", "-c", "1024", "-t", "2"],
                     "/health")
    with pytest.raises(BackendError) as refused:
        run(open_remote(server.url, "infill"), request())
    message = one_line(refused.value)
    assert f"{server.url}/infill" in message and "Infill is not supported by this model" in message, message


def test_the_openai_api_of_llama_server_with_a_key(servers, llama_server_binary, smollm2_gguf, monkeypatch):
    server = servers([llama_server_binary, "-m", smollm2_gguf, "--host", "127.0.0.1", "-c", "1024", "-t", "2",
                      "--api-key", "right-key-4f9a"], "/health")
    monkeypatch.setenv(KEY_ENV, "right-key-4f9a")
    result, pieces = run(open_remote(server.url, "openai", None, KEY_ENV), request())
    assert result.text.startswith(" a + b") and "".join(pieces) == result.text
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(BackendError) as wrong:
        run(open_remote(server.url, "infill", None, KEY_ENV), request())
    assert "401" in one_line(wrong.value) and KEY_ENV in str(wrong.value)


def test_over_lsp_a_remote_suggestion_carries_its_confidence_and_min_confidence_hides_it(openai_url, tmp_path):
    from .lsp_client import LspClient

    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path)})
    try:
        client.initialize({"engine": openai_url, "engineApi": "openai", "maxNewTokens": 8, "minConfidence": 0,
                           "extraContextTokens": 0, "multiline": "never", "debounceMs": 0})
        assert client.wait_ready()["state"] == "ready"
        client.open("file:///work/add.py", ADD + "\n")
        items = client.inline("file:///work/add.py", 1, len("    return"), trigger=2)
        assert items and items[0]["insertText"].startswith(" a + b") and 0 < items[0]["data"]["confidence"] <= 1, items
        # above the surest piece's probability: nothing is shown, and the status says why
        client.notify("workspace/didChangeConfiguration", {"settings": {"spectab": {"minConfidence": 0.9999}}})
        client.change("file:///work/add.py", 2, 1, 10, 1, 10, " ")
        client.change("file:///work/add.py", 3, 1, 10, 1, 11, "")
        assert client.inline("file:///work/add.py", 1, len("    return"), trigger=2) == []
        status = client.request("spectab/status", {})
        assert status["confidenceHidden"] == 1 and status["lastStopReason"] == "confidence", status
    finally:
        client.close()
