"""The shared engine's socket: where it lives, who may use it, and how messages travel on it.

Both sides import this module: the engine (`spectab engine`) and the fronts (`spectab serve`). It
imports no torch, so a front stays small.

- One engine per user and model settings: its files live in the user runtime dir (platformdirs;
  `SPECTAB_RUNTIME_DIR` overrides it) under a key made from the settings that decide which models
  load (`engine-<key>.sock`, `.lock`, `.json`).
- Only its user: the runtime dir is 0700 and the socket 0600; a front refuses a socket that belongs
  to someone else or that others can open, and the engine checks each peer's uid (SO_PEERCRED).
  Where there are no Unix sockets (or `SPECTAB_ENGINE_TRANSPORT=tcp`), the engine listens on
  loopback TCP and every connection must present a random token kept in a 0600 file.
- Messages are JSON objects, one per line.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpectabError

RUNTIME_ENV = "SPECTAB_RUNTIME_DIR"
TRANSPORT_ENV = "SPECTAB_ENGINE_TRANSPORT"
MAX_MESSAGE = 64 * 1024 * 1024  # a prompt is at most a few hundred kB; anything larger is garbage
ENGINE_KEYS = ("profile", "target", "draft", "device", "dtype", "fim", "contextTokens", "quant")
"""The settings that decide which models an engine holds: fronts that agree on all share one."""


def runtime_dir() -> Path:
    """The user's runtime dir for spectab, made 0700 (tightened if it is ours and looser)."""
    override = os.environ.get(RUNTIME_ENV)
    if override:
        path = Path(override)
    else:
        from platformdirs import user_runtime_dir

        with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: platformdirs falls back to /tmp, fine
            warnings.simplefilter("ignore")
            path = Path(user_runtime_dir("spectab"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if hasattr(os, "getuid"):
        st = path.stat()
        if st.st_uid != os.getuid():
            raise SpectabError(f"the runtime dir {path} belongs to another user; set {RUNTIME_ENV} to a folder of yours")
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return path


def engine_key(settings: dict) -> str:
    """A short stable name for a set of model settings (relative model paths made absolute first,
    so two editors in different folders naming the same file share an engine)."""
    canonical = {}
    for key in ENGINE_KEYS:
        value = settings.get(key)
        if key in ("target", "draft") and isinstance(value, str) and value not in ("ngram", "none"):
            path = Path(value).expanduser()
            if path.exists():
                value = str(path.resolve())
        canonical[key] = value
    text = json.dumps(canonical, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def use_tcp() -> bool:
    return not hasattr(socket, "AF_UNIX") or os.environ.get(TRANSPORT_ENV) == "tcp"


@dataclass(frozen=True)
class Address:
    """The files of one engine in the runtime dir."""

    folder: Path
    key: str

    @property
    def socket(self) -> Path:
        return self.folder / f"engine-{self.key}.sock"

    @property
    def lock(self) -> Path:
        return self.folder / f"engine-{self.key}.lock"

    @property
    def info(self) -> Path:
        """JSON: pid, transport, port (TCP), the settings it was started with."""
        return self.folder / f"engine-{self.key}.json"

    @property
    def token(self) -> Path:
        return self.folder / f"engine-{self.key}.token"

    def read_info(self) -> dict | None:
        try:
            return json.loads(self.info.read_text())
        except (OSError, ValueError):
            return None


def addresses(folder: Path | None = None) -> list[Address]:
    """Every engine this user has files for (running or stale)."""
    folder = folder or runtime_dir()
    return [Address(folder, p.stem.removeprefix("engine-")) for p in sorted(folder.glob("engine-*.json"))]


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600, never widened)."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def check_socket(path: Path) -> None:
    """Refuse a socket file that is not ours alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ConnectionRefusedError(f"no engine socket at {path}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise SpectabError(f"{path} is not a socket; remove it")
    if st.st_uid != os.getuid():
        raise SpectabError(f"the engine socket {path} belongs to user {st.st_uid}, not you: refusing to use it")
    if st.st_mode & 0o077:
        raise SpectabError(f"the engine socket {path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}): refusing to use it")


def peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux), or None where unknown."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def connect(address: Address, timeout: float = 5.0) -> tuple[socket.socket, str | None]:
    """A connection to the engine at `address` and the token to present (TCP), or raises
    ConnectionRefusedError (no engine there) / SpectabError (one that must not be used)."""
    info = address.read_info() or {}
    if info.get("transport") == "tcp":
        try:
            token = address.token.read_text().strip()
        except OSError:
            raise ConnectionRefusedError(f"no token file {address.token}") from None
        sock = socket.create_connection(("127.0.0.1", int(info["port"])), timeout=timeout)
        return sock, token
    check_socket(address.socket)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(address.socket))
    except OSError:
        sock.close()
        raise ConnectionRefusedError(f"nothing listens on {address.socket}") from None
    return sock, None


class Channel:
    """JSON lines over a connected socket; `send` may be called from any thread."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._file = sock.makefile("rb")
        self._send_lock = threading.Lock()

    def send(self, message: dict) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with self._send_lock:
            self.sock.sendall(data)

    def recv(self) -> dict | None:
        """The next message, or None when the other side has gone."""
        try:
            line = self._file.readline(MAX_MESSAGE + 1)
        except (OSError, ValueError):
            return None
        if not line or not line.endswith(b"\n"):
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
