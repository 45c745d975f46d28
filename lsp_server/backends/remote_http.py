"""HTTP for the remote backends: the standard library only, every wait bounded, each failure one line.

A front that talks to a server must stay small and must never hang the worker thread, so this is a
minimal HTTP/1.1 client over `socket` (and `ssl`) rather than http.client or a dependency:
- Reads are `recv` calls in short slices. A timed-out read of http.client's buffered file cannot be
  resumed, so it could not wait in pieces; the slices let a superseded request (`cancelled()`) or a
  passed deadline stop the read within one slice, and a stopped server costs at most the time left.
- One connection per request (`Connection: close`): stopping a stream is closing its socket, and
  the servers stop generating for a client that is gone (llama-server and llama-cpp-python's
  server check for it as they stream); nothing is pooled, so nothing is shared between threads or
  left half-read. A loopback or LAN connect costs well under a millisecond next to a completion.
Errors are `BackendError`s whose message names the URL without credentials; the API key is only
ever written into the Authorization header.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from engine.errors import SpectabError, first_line

from .base import BackendError
from .remote_stream import MAX_LINE, Response, Stopped

POLL_S = 0.05
"""How often a waiting read looks at `cancelled()`: well under a keystroke."""
DEFAULT_TIMEOUT_S = 30.0
"""The bound for a request that comes without a deadline."""
MAX_ERROR_BODY = 64 * 1024
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _redacted(value: str) -> str:
    # what the user typed, for an error message, without a password that may be in it
    return re.sub(r"//[^/@]*@", "//***@", value)


@dataclass(frozen=True)
class Endpoint:
    url: str
    """scheme://host[:port][/path] as shown to the user: no credentials."""
    scheme: str
    host: str
    port: int
    path: str
    """The base path, no trailing slash ('' for the server root)."""
    basic_auth: str | None = None
    """user:password from the URL (a reverse proxy's), sent as Basic authorization."""

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(value: object) -> Endpoint:
    """The endpoint of an `engine` URL; SpectabError for anything but http(s) with a host."""
    shown = _redacted(value) if isinstance(value, str) else repr(value)
    wrong = SpectabError(f"engine must be shared, inprocess or an http(s):// URL, not '{shown}'")
    if not isinstance(value, str):
        raise wrong
    parts = urllib.parse.urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        raise wrong from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise wrong
    port = port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    shown_host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    url = f"{parts.scheme}://{shown_host}{f':{parts.port}' if parts.port else ''}{path}"
    auth = None
    if parts.username is not None:
        auth = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return Endpoint(url, parts.scheme, parts.hostname, port, path, auth)


def check_url(value: object) -> str:
    """`value` as a valid engine URL (stripped, no trailing slash), or SpectabError."""
    parse_url(value)
    return value.strip().rstrip("/")


class HttpStatusError(BackendError):
    """The server answered with an error status."""

    def __init__(self, message: str, status: int, retry_after: float = 0.0):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _resolve(endpoint: Endpoint, timeout: float) -> list:
    """getaddrinfo within `timeout`. The resolver has no timeout of its own and can wait far longer
    than a keystroke's deadline, so a name (not an address) is looked up on a helper thread that
    is left behind if it is late."""
    def lookup():
        return socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)

    try:
        ipaddress.ip_address(endpoint.host)
        numeric = True
    except ValueError:
        numeric = False
    found: list = []
    failed: list = []

    def run():
        try:
            found.extend(lookup())
        except OSError as err:
            failed.append(err)

    if numeric:
        run()
    else:
        helper = threading.Thread(target=run, name="spectab-resolve", daemon=True)
        helper.start()
        helper.join(timeout)
        if helper.is_alive():
            raise BackendError(f"looking up the host of {endpoint.url} took over {timeout:.1f} s; is DNS reachable?")
    if failed:
        raise BackendError(f"cannot resolve the host of {endpoint.url}: {first_line(failed[0])}")
    if not found:
        raise BackendError(f"cannot resolve the host of {endpoint.url}")
    return found


class _Connection:
    """One request's socket and what has been read from it but not used yet."""

    def __init__(self, endpoint: Endpoint, deadline: float, cancelled: Callable[[], bool] | None):
        self.endpoint, self.deadline, self.cancelled = endpoint, deadline, cancelled
        self.buf = bytearray()
        url = endpoint.url
        sock, error = None, None
        for family, kind, proto, _, address in _resolve(endpoint, self._left()):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._left())
                sock.connect(address)
                break
            except OSError as err:
                sock.close()
                sock, error = None, err
            except Stopped:
                sock.close()
                raise
        if sock is None:
            if isinstance(error, ConnectionRefusedError):
                raise BackendError(f"nothing is listening at {url} (connection refused); is the server running?")
            if isinstance(error, TimeoutError):
                raise BackendError(f"{url} did not accept a connection in time; is the host up and reachable?")
            raise BackendError(f"cannot reach {url}: {first_line(error) if error else 'no address'}")
        if endpoint.scheme == "https":
            try:
                sock.settimeout(self._left())
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=endpoint.host)
            except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
                sock.close()
                raise BackendError(f"TLS with {url} failed: {first_line(err)}") from None
            except Stopped:
                sock.close()
                raise
        self.sock = sock

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Stopped("deadline")
        return left

    def send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self._left())
            self.sock.sendall(data)
        except TimeoutError:
            raise Stopped("deadline") from None
        except OSError as err:
            raise BackendError(f"{self.endpoint.url} dropped the connection while spectab was sending: "
                               f"{first_line(err)}") from None

    def recv(self) -> bytes:
        """The next bytes, b"" at the end; Stopped when cancelled or out of time first."""
        while True:
            if self.cancelled is not None and self.cancelled():
                raise Stopped("cancelled")
            left = self._left()
            self.sock.settimeout(min(POLL_S, left) if self.cancelled is not None else left)
            try:
                return self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as err:
                raise BackendError(f"{self.endpoint.url} broke the connection mid-answer: {first_line(err)}") from None

    def read_line(self, limit: int) -> bytes | None:
        """One line without its CRLF; None at the end of the stream."""
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise BackendError(f"{self.endpoint.url} sent a malformed answer (a line over {limit} bytes)")
            data = self.recv()
            if not data:
                return None
            self.buf += data
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return line.rstrip(b"\r")

    def read_some(self, most: int) -> bytes:
        """Up to `most` bytes, at least one; b"" at the end of the stream."""
        if not self.buf:
            self.buf += self.recv()
        data = bytes(self.buf[:most])
        del self.buf[:most]
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Http:
    """Requests to one server; `key_env` names the environment variable holding its API key."""

    def __init__(self, endpoint: Endpoint, key_env: str = "", not_found_hint: str = ""):
        self.endpoint, self.key_env, self.not_found_hint = endpoint, key_env, not_found_hint
        self._key = os.environ.get(key_env, "") if key_env else ""

    def _headers(self, method: str, path: str, body: bytes | None, stream: bool) -> bytes:
        lines = [f"{method} {self.endpoint.path}{path} HTTP/1.1", f"Host: {self.endpoint.host_header}",
                 "User-Agent: spectab", "Connection: close",
                 f"Accept: {'text/event-stream' if stream else 'application/json'}"]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        if self._key:
            lines.append(f"Authorization: Bearer {self._key}")
        elif self.endpoint.basic_auth:
            lines.append("Authorization: Basic " + base64.b64encode(self.endpoint.basic_auth.encode()).decode())
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def open(self, method: str, path: str, body: dict | None, deadline: float | None,
             cancelled: Callable[[], bool] | None = None, stream: bool = False) -> Response | None:
        """The 200 response to one request, None when `cancelled` turned true first. BackendError
        for anything else, including the deadline passing before the server answered."""
        deadline = deadline if deadline is not None else time.monotonic() + DEFAULT_TIMEOUT_S
        what = f"{self.endpoint.url}{path}"
        raw = None if body is None else json.dumps(body).encode()
        started = time.monotonic()
        conn = None
        try:
            conn = _Connection(self.endpoint, deadline, cancelled)
            conn.send(self._headers(method, path, raw, stream) + (raw or b""))
            status, headers = self._read_head(conn, what)
            if status != 200:
                self._fail(status, headers, conn, what)
            return Response(conn, headers, what)
        except Stopped as stop:
            if conn is not None:
                conn.close()
            if stop.reason == "cancelled":
                return None
            raise BackendError(f"{what} did not answer within {time.monotonic() - started:.1f} s; "
                               f"is the server overloaded or stopped?") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def get_json(self, path: str, deadline: float | None) -> object:
        response = self.open("GET", path, None, deadline)
        try:
            return response.read_json(MAX_ERROR_BODY * 16)
        except Stopped:
            raise BackendError(f"{response.what} did not finish its answer in time") from None
        finally:
            response.conn.close()

    @staticmethod
    def _read_head(conn: _Connection, what: str) -> tuple[int, dict[str, str]]:
        status_line = conn.read_line(MAX_LINE)
        if status_line is None:
            raise BackendError(f"{what} closed the connection without answering")
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise BackendError(f"{what} does not speak HTTP (it answered {status_line[:40]!r})")
        headers: dict[str, str] = {}
        while True:
            line = conn.read_line(MAX_LINE)
            if line is None:
                raise BackendError(f"{what} closed the connection mid-header")
            if not line:
                return int(parts[1]), headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()

    def _fail(self, status: int, headers: dict[str, str], conn: _Connection, what: str) -> None:
        detail = ""
        try:
            detail = _error_detail(Response(conn, headers, what).read_all(MAX_ERROR_BODY))
        except (BackendError, Stopped):
            pass  # the status says enough
        said = f": {detail}" if detail else ""
        if status in (401, 403):
            if not self.key_env:
                fix = "set spectab.engineApiKeyEnv to the name of an environment variable that holds the key"
            elif not self._key:
                fix = f"the environment variable {self.key_env} (spectab.engineApiKeyEnv) is not set or empty"
            else:
                fix = f"the key in the environment variable {self.key_env} is wrong or lacks access"
            raise HttpStatusError(f"{what} refused the request ({status}{said}): {fix}", status)
        if status == 404:
            hint = f"; {self.not_found_hint}" if self.not_found_hint else ""
            raise HttpStatusError(f"{what} does not exist (404){hint}", status)
        if status == 429:
            try:
                retry = float(headers.get("retry-after", "0"))
            except ValueError:
                retry = 0.0
            raise HttpStatusError(f"{what} is rate-limiting spectab (429{said}); waiting before the next request",
                                  status, retry)
        if status >= 500:
            raise HttpStatusError(f"{what} failed with {status}{said}", status)
        raise HttpStatusError(f"{what} rejected the request ({status}{said})", status)


def _error_detail(body: bytes) -> str:
    """The message inside an error body ({"error": {"message"}}, {"detail"}, or plain text), one
    short line."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("<"):  # an HTML error page (a proxy's, a web server's): the status says it
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    for _ in range(3):  # {"error": {"message": ...}}, {"detail": [...]} and the like
        if isinstance(data, dict):
            data = next((data[k] for k in ("error", "message", "detail", "msg") if k in data), data)
            if isinstance(data, dict) and "message" in data:
                data = data["message"]
        if isinstance(data, list) and data:
            data = data[0]
    message = data if isinstance(data, str) else json.dumps(data)
    message = " ".join(message.split())
    return message[:160] + ("..." if len(message) > 160 else "")
