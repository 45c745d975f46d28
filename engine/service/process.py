"""`spectab engine`: one process that holds the models for every editor of one user.

Fronts (`spectab serve`, one per editor window) connect over the socket in wire.py. The engine:
- takes the lock of its settings' key for its whole life, so fronts that start engines at the same
  moment end up with one (the others see the lock held and leave quietly);
- binds its socket before loading, so fronts connect at once and watch the load's progress;
- generates one request at a time (scheduler.py), each in its document's KV lane (lanes.py);
- exits after `idle_minutes` with no front connected, on `spectab engine stop`, or on SIGTERM.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path

from ..errors import SpectabError, first_line
from .scheduler import Job, Scheduler
from .wire import Address, Channel, peer_uid, use_tcp, write_private

log = logging.getLogger("spectab.engine")


def rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class _Broadcast(logging.Handler):
    """The engine's load progress (converting, packing, downloading) goes to every connected front."""

    def __init__(self, engine: "EngineProcess"):
        super().__init__(logging.INFO)
        self.engine = engine

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("spectab.engine"):
            return  # the engine's own lines are for its log, not the editors
        self.engine.broadcast({"event": "progress", "message": record.getMessage()})


class EngineProcess:
    def __init__(self, address: Address, settings: dict, kv_lanes: int = 0, idle_minutes: float = 30,
                 threads: int = 0, listen: tuple[str, int] | None = None, token_file: Path | None = None):
        self.address, self.settings = address, settings
        self.kv_lanes, self.idle_minutes, self.threads = kv_lanes, idle_minutes, threads
        self.listen, self.token_file = listen, token_file
        self.state, self.error = "loading", ""
        self.completer = None
        self.scheduler = Scheduler(self._dropped)
        self.clients: dict[int, Channel] = {}
        self._client_ids = itertools.count(1)
        self._clients_lock = threading.Lock()
        self._idle_since = time.monotonic()
        self._stop = threading.Event()
        self._tokens: dict[socket.socket, str | None] = {}
        self.served = 0

    # -- life ------------------------------------------------------------------------------------
    def run(self) -> int:
        lock = _take_lock(self.address.lock)
        if lock is None:
            info = self.address.read_info() or {}
            log.info("an engine for these settings is already running (pid %s)", info.get("pid", "?"))
            return 0
        listeners = self._bind()
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        for sock in listeners:
            threading.Thread(target=self._accept, args=(sock,), name="spectab-accept", daemon=True).start()
        threading.Thread(target=self._load, name="spectab-engine-load", daemon=True).start()
        threading.Thread(target=self._work, name="spectab-engine-generate", daemon=True).start()
        while not self._stop.wait(0.5):
            if self._idle_expired():
                if self.state == "error":
                    log.info("the models failed to load and no editor is connected: exiting")
                else:
                    log.info("no editor connected for %s minutes: exiting", self.idle_minutes)
                break
        log.info("engine stopping")
        self.scheduler.close()
        for sock in listeners:
            sock.close()
        for path in (self.address.socket, self.address.info, self.address.token):
            try:
                path.unlink()
            except OSError:
                pass
        lock.close()
        return 0

    def _idle_expired(self) -> bool:
        with self._clients_lock:
            if self.clients:
                return False
            idle = time.monotonic() - self._idle_since
        if self.state == "error":
            return idle > 5  # nobody left to tell: the next front starts a fresh engine
        return self.idle_minutes > 0 and idle > self.idle_minutes * 60

    def _bind(self) -> list[tuple[socket.socket, str | None]]:
        sockets = []
        info = {"pid": os.getpid(), "key": self.address.key, "settings": self.settings, "started": time.time()}
        if use_tcp():
            token = secrets.token_urlsafe(32)
            write_private(self.address.token, token + "\n")
            sock = socket.create_server(("127.0.0.1", 0))
            info.update(transport="tcp", port=sock.getsockname()[1])
            self._tokens[sock] = token
        else:
            path = self.address.socket
            try:
                path.unlink()  # a stale socket of an engine that died: we hold the lock, it is not in use
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # created 0600: there is no moment at which others could connect
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            sock.listen(64)
            info.update(transport="unix", socket=str(path))
            self._tokens[sock] = None
        sockets.append(sock)
        if self.listen:
            token = self.token_file.read_text().strip()
            extra = socket.create_server(self.listen)
            self._tokens[extra] = token
            sockets.append(extra)
            log.warning("listening on %s:%d as well: any host that presents the token in %s may use this engine",
                        *self.listen, self.token_file)
        write_private(self.address.info, _json(info))
        log.info("engine %s (pid %d) listening; loading %s", self.address.key, os.getpid(), self.settings)
        return sockets

    def _load(self) -> None:
        handler = _Broadcast(self)
        logging.getLogger("spectab").addHandler(handler)
        try:
            from ..completer import Completer, EngineOptions, alternatives_time_share
            from ..devices import set_threads

            set_threads(self.threads)
            s = self.settings
            options = EngineOptions(context_tokens=s["contextTokens"], kv_lanes=self.kv_lanes,
                                    alternatives_time_share=alternatives_time_share())
            fim = None if s.get("fim") in (None, "auto") else s["fim"]
            self.completer = Completer.open(s.get("profile"), s.get("target"), s.get("draft"), s.get("device", "auto"),
                                            s.get("dtype", "auto"), fim=fim, options=options, quant=s.get("quant", "auto"))
            self.state = "ready"
            log.info("ready: %s", self.models())
        except SpectabError as err:
            self.state, self.error = "error", str(err)
        except Exception as err:  # a bug or a library failure: still one line for the fronts
            log.exception("model load failed")
            self.state, self.error = "error", f"{type(err).__name__}: {first_line(err)}"
        finally:
            logging.getLogger("spectab").removeHandler(handler)
        if self.state == "error":
            log.error("model load failed: %s", self.error)
        self.broadcast({"event": "state", **self.state_message()})

    # -- connections -----------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        token = self._tokens[listener]
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the engine is stopping
            threading.Thread(target=self._serve, args=(conn, token), name="spectab-engine-client", daemon=True).start()

    def _serve(self, conn: socket.socket, token: str | None) -> None:
        if token is None and peer_uid(conn) not in (None, os.getuid()):
            conn.close()  # another user reached our socket (it is 0600: this should not happen)
            return
        conn.settimeout(10)  # the hello must come quickly; afterwards a front may stay quiet for hours
        channel = Channel(conn)
        hello = channel.recv()
        if not hello or hello.get("op") != "hello":
            channel.close()
            return
        if token is not None and not hmac.compare_digest(str(hello.get("token", "")), token):
            _send(channel, {"event": "refused", "message": "wrong or missing engine token"})
            channel.close()
            return
        conn.settimeout(None)
        front = hello.get("role", "front") == "front"
        client = next(self._client_ids)
        if front:
            with self._clients_lock:
                self.clients[client] = channel
        _send(channel, {"event": "hello", "client": client, **self.state_message()})
        try:
            while True:
                message = channel.recv()
                if message is None:
                    break
                self._handle(client, channel, message)
        finally:
            with self._clients_lock:
                if self.clients.pop(client, None) is not None and not self.clients:
                    self._idle_since = time.monotonic()
            self.scheduler.drop_client(client)
            channel.close()

    def _handle(self, client: int, channel: Channel, message: dict) -> None:
        op = message.get("op")
        if op == "generate":
            request = message.get("request") or {}
            job_id = message.get("id")
            if self.state != "ready":
                _send(channel, {"event": "done", "id": job_id, "result": {"text": "", "stop_reason": self.state}})
                return
            self.scheduler.submit(Job(client, job_id, str(request.get("document") or ""), request))
        elif op == "cancel":
            self.scheduler.cancel(client, message.get("id"))
        elif op == "forget":
            document = str(message.get("document") or "")
            self.scheduler.cancel_document(document)
            if self.completer is not None:
                self.completer.forget(document)
        elif op == "status":
            _send(channel, {"event": "status", **self.status()})
        elif op == "stop":
            _send(channel, {"event": "stopping", "pid": os.getpid()})
            self._stop.set()
        else:
            _send(channel, {"event": "error", "id": message.get("id"), "message": f"unknown operation {op!r}"})

    def broadcast(self, message: dict) -> None:
        with self._clients_lock:
            channels = list(self.clients.values())
        for channel in channels:
            _send(channel, message)

    # -- generation ------------------------------------------------------------------------------
    def _dropped(self, job: Job, reason: str) -> None:
        with self._clients_lock:
            channel = self.clients.get(job.client)
        if channel is not None:
            _send(channel, {"event": "done", "id": job.id, "result": {"text": "", "stop_reason": reason}})

    def _work(self) -> None:
        from ..devices import set_threads
        from ..requests import run_request

        while True:
            job = self.scheduler.next()
            if job is None:
                return
            with self._clients_lock:
                channel = self.clients.get(job.client)
            try:
                if channel is None:
                    continue  # the front left while this waited
                if job.cancel.is_set():
                    _send(channel, {"event": "done", "id": job.id, "result": {"text": "", "stop_reason": "superseded"}})
                    continue
                r = job.request
                if r.get("threads") is not None:
                    set_threads(int(r["threads"]))
                timeout = r.get("timeout_s")
                deadline = time.monotonic() + float(timeout) if timeout is not None else None

                def on_text(piece: str, channel=channel, job=job) -> None:
                    if not _send(channel, {"event": "text", "id": job.id, "text": piece}):
                        job.cancel.set()  # the front is gone: stop at the next round

                started = time.perf_counter()
                result = run_request(self.completer, {**r, "document": job.document}, deadline, job.cancel.is_set, on_text)
                self.served += 1
                if job.cancel.is_set():
                    result["stop_reason"] = "cancelled"
                result["engine_ms"] = (time.perf_counter() - started) * 1000
                _send(channel, {"event": "done", "id": job.id, "result": result})
            except SpectabError as err:
                _send(channel, {"event": "error", "id": job.id, "message": str(err)})
            except Exception as err:  # a bug: the request fails, the engine keeps serving
                log.exception("generation failed")
                _send(channel, {"event": "error", "id": job.id, "message": f"{type(err).__name__}: {first_line(err)}"})
            finally:
                self.scheduler.finished(job)

    # -- reports ---------------------------------------------------------------------------------
    def models(self) -> dict | None:
        c = self.completer
        if c is None:
            return None
        return {"profile": c.profile, "target": c.target_info.name, "draft": c.draft_name,
                "device": str(c.device), "quant": c.quant}

    def state_message(self) -> dict:
        return {"pid": os.getpid(), "state": self.state, "error": self.error or None, "models": self.models()}

    def status(self) -> dict:
        with self._clients_lock:
            clients = len(self.clients)
        lanes = self.completer.lanes.describe() if self.completer is not None else []
        return {"running": True, "key": self.address.key, **self.state_message(), "clients": clients,
                "lanes": lanes, "laneLimit": self.completer.lanes.limit if self.completer is not None else None,
                "queued": self.scheduler.pending(), "served": self.served, "rssMB": rss_mb()}


def _send(channel: Channel, message: dict) -> bool:
    """Send, or False when the front is gone (its reader thread cleans up)."""
    try:
        channel.send(message)
        return True
    except OSError:
        return False


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=1, sort_keys=True)


def _take_lock(path: Path):
    """An open file holding an exclusive lock on `path`, or None if another process holds it."""
    f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        import fcntl

        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            f.close()
            return None
    return f
