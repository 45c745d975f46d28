"""A small LSP client for the tests: `spectab serve` as a subprocess, JSON-RPC over its real pipes."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class LspClient:
    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spectab", "serve", *args], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=os.environ | {"PYTHONPATH": str(ROOT)} | (env or {}),
        )
        self._next_id = 0
        self._responses: dict[int, dict] = {}
        self.arrived: dict[int, float] = {}  # request id -> time.perf_counter() of its answer
        self._cond = threading.Condition()
        self.notifications: queue.Queue = queue.Queue()
        self.messages: list[dict] = []  # window/showMessage params
        self.progress: list[dict] = []  # $/progress values
        self.configuration: dict = {}  # what workspace/configuration answers
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # -- wire ------------------------------------------------------------------------------------
    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send_raw(self, body: bytes) -> None:
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            headers = {}
            while True:
                line = out.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            message = json.loads(out.read(int(headers["content-length"])))
            if "id" in message and "method" in message:
                self._answer_server_request(message)
            elif "id" in message:
                self.arrived[message["id"]] = time.perf_counter()
                with self._cond:
                    self._responses[message["id"]] = message
                    self._cond.notify_all()
            else:
                if message["method"] == "window/showMessage":
                    self.messages.append(message["params"])
                elif message["method"] == "$/progress":
                    self.progress.append(message["params"]["value"])
                self.notifications.put(message)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def _answer_server_request(self, message: dict) -> None:
        if message["method"] == "workspace/configuration":
            result = [self.configuration for _ in message["params"]["items"]]
        else:
            result = None  # window/workDoneProgress/create and friends
        self._send({"jsonrpc": "2.0", "id": message["id"], "result": result})

    # -- calls -----------------------------------------------------------------------------------
    def request_async(self, method: str, params) -> int:
        self._next_id += 1
        self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return self._next_id

    def wait(self, request_id: int, timeout: float = 120) -> dict:
        end = time.monotonic() + timeout
        with self._cond:
            while request_id not in self._responses:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no answer to request {request_id}; server stderr:\n{''.join(self.stderr[-20:])}")
                self._cond.wait(min(left, 0.5))
            return self._responses.pop(request_id)

    def request(self, method: str, params, timeout: float = 120):
        response = self.wait(self.request_async(method, params), timeout)
        if "error" in response:
            raise LspError(response["error"])
        return response["result"]

    def notify(self, method: str, params) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    # -- conveniences ----------------------------------------------------------------------------
    def initialize(self, options: dict | None = None, encodings: list[str] | None = None, progress: bool = True) -> dict:
        caps = {"window": {"workDoneProgress": progress}, "textDocument": {"inlineCompletion": {}},
                "workspace": {"configuration": True}}
        if encodings:
            caps["general"] = {"positionEncodings": encodings}
        result = self.request("initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": caps,
                                             "initializationOptions": options or {}})
        self.notify("initialized", {})
        return result

    def wait_ready(self, timeout: float = 300) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status = self.request("spectab/status", {})
            if status["state"] != "loading":
                return status
            time.sleep(0.2)
        raise TimeoutError("the model did not load")

    def open(self, uri: str, text: str, language: str = "python") -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}})

    def change(self, uri: str, version: int, line: int, character: int, end_line: int, end_character: int, text: str) -> None:
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [
            {"range": {"start": {"line": line, "character": character}, "end": {"line": end_line, "character": end_character}},
             "text": text}]})

    def inline(self, uri: str, line: int, character: int, trigger: int = 1, timeout: float = 120) -> list[dict]:
        result = self.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": trigger}}, timeout)
        return result["items"] if isinstance(result, dict) else result

    def close(self) -> int:
        try:
            if self.proc.poll() is None:
                self.request("shutdown", None, timeout=30)
                self.notify("exit", None)
            return self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            return self.proc.wait()


class LspError(Exception):
    def __init__(self, error: dict):
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
