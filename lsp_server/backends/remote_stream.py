"""Reading a server's answer as it arrives: the body's framing (chunked, Content-Length, or until
the connection closes) and server-sent events.

A completion streams for seconds and the user may move on at any moment, so events are handed on
one by one as their bytes arrive, and a read that is cancelled or out of time ends the stream
quietly (`stop_reason`) rather than as an error: what arrived so far is still the answer. A server
that vanishes mid-body is an error, though: the text would be cut where nobody can tell.
"""

from __future__ import annotations

import json
from typing import Iterator

from .base import BackendError

MAX_LINE = 64 * 1024
"""Longest status line, header or chunk-size line taken from a server."""


class Stopped(Exception):
    """Reading stopped early: `reason` is cancelled or deadline."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Response:
    """An answer's body, read as it arrives. `conn` has `read_line(limit)` (a line without its CRLF,
    None at the end) and `read_some(most)` (b"" at the end), both raising Stopped; `what` is the URL
    for messages."""

    def __init__(self, conn, headers: dict[str, str], what: str):
        self.conn, self.headers, self.what = conn, headers, what
        self.stop_reason = ""
        """cancelled or deadline when reading stopped before the body ended."""
        self.done = False
        """True once an event stream's `data: [DONE]` arrived."""

    @property
    def is_event_stream(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    def body(self) -> Iterator[bytes]:
        """The body's bytes as they come; BackendError when the server stops mid-body."""
        conn, cut = self.conn, BackendError(f"{self.what} stopped mid-answer (the connection closed early)")
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size_line = conn.read_line(MAX_LINE)
                if size_line is None:
                    raise cut
                try:
                    size = int(size_line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise BackendError(f"{self.what} sent a malformed chunked body") from None
                if size == 0:
                    return
                while size:
                    data = conn.read_some(size)
                    if not data:
                        raise cut
                    size -= len(data)
                    yield data
                if conn.read_line(MAX_LINE) is None:  # the CRLF after each chunk
                    raise cut
        elif "content-length" in self.headers:
            try:
                size = int(self.headers["content-length"])
            except ValueError:
                raise BackendError(f"{self.what} sent a malformed Content-Length") from None
            while size > 0:
                data = conn.read_some(size)
                if not data:
                    raise cut
                size -= len(data)
                yield data
        else:
            while data := conn.read_some(65536):
                yield data

    def read_all(self, most: int) -> bytes:
        out = bytearray()
        for data in self.body():
            out += data
            if len(out) > most:
                raise BackendError(f"{self.what} sent an answer over {most // 1024} KiB")
        return bytes(out)

    def events(self) -> Iterator[object]:
        """Each server-sent event's `data` as JSON, until `data: [DONE]` or the end of the body.
        A server that ignored `stream` and answered with one JSON body yields that body once.
        Stops quietly (setting `stop_reason`) when cancelled or out of time."""
        try:
            if not self.is_event_stream:
                yield self._json(self.read_all(16 * 1024 * 1024))
                return
            pending, data_lines = b"", []
            for data in self.body():
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    line = line.rstrip(b"\r")
                    if not line:  # a blank line ends an event
                        if data_lines:
                            payload = b"\n".join(data_lines)
                            data_lines = []
                            if payload.strip() == b"[DONE]":
                                self.done = True
                                return
                            yield self._json(payload)
                    elif line.startswith(b"data:"):
                        data_lines.append(line[5:].removeprefix(b" "))
                    # comments (": ping") and other fields (event:, id:, retry:) carry no text
            if data_lines:  # a last event without its blank line
                payload = b"\n".join(data_lines)
                if payload.strip() == b"[DONE]":
                    self.done = True
                else:
                    yield self._json(payload)
        except Stopped as stop:
            self.stop_reason = stop.reason

    def read_json(self, most: int) -> object:
        """The whole body (at most `most` bytes) as JSON."""
        return self._json(self.read_all(most))

    def _json(self, payload: bytes) -> object:
        try:
            return json.loads(payload)
        except ValueError:
            shown = payload[:60].decode("utf-8", "replace")
            raise BackendError(f"{self.what} sent a malformed answer (not JSON: {shown!r})") from None
