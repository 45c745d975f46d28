"""The user's shared engine as a backend: find it (or start it), stream generations over its socket.

A front never loads a model. It connects to the engine of its model settings (engine/service/wire.py
names it), starting `spectab engine` when nothing listens; several fronts starting at once get one
engine, because only one engine can hold the settings' lock. One reader thread per connection routes
the engine's messages to the request waiting for them. When the engine dies (killed, out of memory)
the request in flight is answered empty with one message, and the next request starts a new engine.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from engine.errors import SpectabError
from engine.service.wire import ENGINE_KEYS, Address, Channel, connect, engine_key, runtime_dir

from .base import Backend, BackendError, GenerationRequest, GenerationResult

log = logging.getLogger("spectab.server")

START_TIMEOUT_S = 60  # from spawning the engine to its socket answering (imports, not the model load)
ANSWER_GRACE_S = 5  # past a request's deadline, the engine has this long to say it stopped
POLL_S = 0.02  # how often a waiting request looks at its cancel flag


def engine_settings(settings) -> dict:
    return {key: getattr(settings, key) for key in ENGINE_KEYS}


def engine_command(settings, kv_lanes: int, idle_minutes: float) -> list[str]:
    argv = [sys.executable, "-m", "spectab", "engine", "--device", settings.device, "--dtype", settings.dtype,
            "--quant", settings.quant, "--context-tokens", str(settings.contextTokens), "--threads", str(settings.threads),
            "--kv-lanes", str(kv_lanes), "--idle-minutes", str(idle_minutes)]
    for flag, value in (("--profile", settings.profile), ("--target", settings.target), ("--draft", settings.draft)):
        if value and flag != "--profile" and Path(value).expanduser().exists():
            # the engine runs in another folder: a relative model path must name the same file there
            # (and give the same engine key, which is made from absolute paths)
            value = str(Path(value).expanduser().resolve())
        if value:
            argv += [flag, value]
    if settings.fim != "auto":
        argv += ["--fim", settings.fim]
    return argv


class _Connection:
    """One socket to the engine and the thread that reads it."""

    def __init__(self, channel: Channel, hello: dict, on_event: Callable[[dict], None]):
        self.channel, self.hello = channel, hello
        self.pid = hello.get("pid")
        self.alive = True
        self._on_event = on_event
        self._waiting: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="spectab-engine-reader", daemon=True).start()

    def _read(self) -> None:
        while True:
            message = self.channel.recv()
            if message is None:
                break
            target = None
            if "id" in message:
                with self._lock:
                    target = self._waiting.get(message["id"])
            if target is not None:
                target.put(message)
            else:
                self._on_event(message)
        self.alive = False
        with self._lock:
            waiting = list(self._waiting.values())
        for q in waiting:
            q.put(None)  # the engine is gone: wake every waiter
        self._on_event({"event": "closed"})

    def register(self, request_id: int) -> queue.Queue:
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._waiting[request_id] = q
        return q

    def unregister(self, request_id: int) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    def close(self) -> None:
        self.alive = False
        self.channel.close()


class SharedBackend(Backend):
    kind = "shared"

    def __init__(self, settings, kv_lanes: int = 0, idle_minutes: float = 30):
        self.settings = settings
        self.kv_lanes, self.idle_minutes = kv_lanes, idle_minutes
        self.address = Address(runtime_dir(), engine_key(engine_settings(settings)))
        self._conn: _Connection | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._state = "loading"
        self._state_changed = threading.Condition()
        self._models: dict | None = None
        self._error = ""
        self._on_progress: Callable[[str], None] = lambda message: None
        self.restarts = 0
        self._reopening: threading.Thread | None = None
        self.lost: Callable[[str], None] = lambda message: None
        """Called (from the reader thread) when the engine goes away; the server tells the user."""

    # -- connecting ------------------------------------------------------------------------------
    def open(self, on_progress: Callable[[str], None]) -> None:
        """Connect (starting the engine if needed) and wait until its models are loaded; raises
        BackendError with the engine's reason when they cannot load."""
        self._on_progress = on_progress
        conn = self._connection()
        with self._state_changed:
            while self._state == "loading" and conn.alive:
                self._state_changed.wait(0.5)
        if not conn.alive:
            raise BackendError(f"the shared engine (pid {conn.pid}) stopped while loading; see its log (engine.log)")
        if self._state == "error":
            raise BackendError(self._error)

    def _connection(self) -> _Connection:
        with self._lock:
            if self._conn is not None and self._conn.alive:
                return self._conn
            sock, token = self._connect_or_start()
            channel = Channel(sock)
            try:
                channel.send({"op": "hello", "role": "front", "token": token, "pid": os.getpid()})
                hello = channel.recv()
            except OSError:
                hello = None
            if not hello or hello.get("event") != "hello":
                channel.close()
                message = hello.get("message") if hello else "no answer"
                raise BackendError(f"the shared engine refused the connection: {message}")
            sock.settimeout(None)
            self._apply_state(hello)
            self._conn = _Connection(channel, hello, self._event)
            log.info("connected to the shared engine %s (pid %s)", self.address.key, self._conn.pid)
            return self._conn

    def _try_connect(self):
        """(socket, token) of a running engine, None when nothing listens; BackendError for a
        socket that must not be used."""
        try:
            return connect(self.address)
        except ConnectionRefusedError:
            return None
        except SpectabError as err:
            raise BackendError(str(err)) from None

    def _connect_or_start(self):
        found = self._try_connect()
        if found is not None:
            return found
        argv = engine_command(self.settings, self.kv_lanes, self.idle_minutes)
        log.info("starting the shared engine: %s", " ".join(argv))
        logs = _log_dir()
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "engine-start.log", "ab") as out:
            # its own session: closing the editor (and this front's process group) leaves it running
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                    cwd=str(Path.home()) if Path.home().exists() else None)
        # reap it when it exits (idle, stopped, killed), or it stays a zombie while this front lives
        threading.Thread(target=proc.wait, name="spectab-engine-reaper", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = self._try_connect()
            if found is not None:
                return found
            code = proc.poll()
            if code not in (None, 0):
                raise BackendError(f"the shared engine failed to start (exit {code}); see {logs / 'engine-start.log'}")
            # exit 0: another front's engine won the lock; it is about to listen
            time.sleep(0.05)
        raise BackendError(f"the shared engine did not start within {START_TIMEOUT_S} s; see {logs / 'engine-start.log'}")

    def _apply_state(self, message: dict) -> None:
        with self._state_changed:
            self._state = message.get("state", self._state)
            self._error = message.get("error") or ""
            self._models = message.get("models") or self._models
            self._state_changed.notify_all()

    def _event(self, message: dict) -> None:
        event = message.get("event")
        if event in ("state", "hello"):
            self._apply_state(message)
        elif event == "progress":
            self._on_progress(str(message.get("message", "")))
        elif event == "closed":
            with self._state_changed:
                self._state_changed.notify_all()

    # -- generating ------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool],
                 on_text: Callable[[str], None]) -> GenerationResult:
        conn = self._connection_for_request()
        if conn is None:
            return GenerationResult("", "engine restarting")
        request_id = next(self._ids)
        answers = conn.register(request_id)
        body = request.as_dict()
        body.pop("deadline")
        if request.deadline is not None:
            body["timeout_s"] = max(0.0, request.deadline - time.monotonic())
        body["threads"] = self.settings.threads or None
        try:
            conn.channel.send({"op": "generate", "id": request_id, "request": body})
            pieces: list[str] = []
            give_up = None if request.deadline is None else request.deadline + ANSWER_GRACE_S
            cancel_sent = False
            while True:
                if not cancel_sent and cancelled():
                    # the engine stops at its next round; until it has, this front's worker stays
                    # busy (as with an in-process engine), so the requests that supersede each
                    # other meanwhile never reach the engine and cost it no prefill
                    _quiet_send(conn, {"op": "cancel", "id": request_id})
                    cancel_sent = True
                    give_up = time.monotonic() + ANSWER_GRACE_S
                if give_up is not None and time.monotonic() > give_up:
                    if cancel_sent:
                        return GenerationResult("".join(pieces), "cancelled")
                    _quiet_send(conn, {"op": "cancel", "id": request_id})
                    raise BackendError(f"the shared engine (pid {conn.pid}) gave no answer in time")
                try:
                    message = answers.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if message is None:
                    raise self._lost(conn)
                event = message.get("event")
                if event == "text":
                    pieces.append(message["text"])
                    on_text(message["text"])
                elif event == "done":
                    return GenerationResult.from_engine(message.get("result") or {},
                                                        stop_reason="cancelled" if cancel_sent else None)
                elif event == "error":
                    raise BackendError(str(message.get("message", "the engine failed this request")))
        except OSError:
            raise self._lost(conn) from None
        finally:
            conn.unregister(request_id)

    def _connection_for_request(self) -> _Connection | None:
        """The live connection, or None while a restarted engine loads (the request is answered
        empty at once rather than waiting for the load)."""
        conn = self._conn
        if conn is not None and conn.alive and self._state == "ready":
            return conn
        if conn is not None and not conn.alive and not (self._reopening and self._reopening.is_alive()):
            raise self._lost(conn)  # it died between requests: say so (once) and start it again
        self._restart()
        return None

    def _restart(self) -> None:
        """Start (at most one) background reopen: a new engine, waited for until its models load."""
        with self._lock:
            if self._reopening is not None and self._reopening.is_alive():
                return
            self.restarts += 1

            def reopen() -> None:
                try:
                    self.open(self._on_progress)
                    log.info("the shared engine is back (pid %s)", self._conn.pid if self._conn else "?")
                except BackendError as err:
                    log.error("could not restart the shared engine: %s", err)

            self._reopening = threading.Thread(target=reopen, name="spectab-engine-restart", daemon=True)
            self._reopening.start()

    def _lost(self, conn: _Connection) -> BackendError:
        conn.close()
        with self._state_changed:
            self._state = "loading"
        self._restart()
        return BackendError(f"the shared engine (pid {conn.pid}) stopped; starting it again")

    def forget(self, document: str) -> None:
        conn = self._conn
        if conn is not None and conn.alive:
            _quiet_send(conn, {"op": "forget", "document": document})

    def engine_status(self) -> dict | None:
        from engine.service.cli import ask

        return ask(self.address, "status", timeout=2.0)

    def describe(self) -> dict:
        conn = self._conn
        return {"engine": "shared", "pid": conn.pid if conn else None, "key": self.address.key, **(self._models or {})}

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _quiet_send(conn: _Connection, message: dict) -> None:
    try:
        conn.channel.send(message)
    except OSError:
        pass


def _log_dir() -> Path:
    folder = os.environ.get("SPECTAB_LOG_DIR")
    if folder:
        return Path(folder)
    from platformdirs import user_log_path

    return user_log_path("spectab")
