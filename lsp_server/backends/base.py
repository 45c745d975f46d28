"""What every backend does: one generation for one cursor, streamed, stoppable.

The service (service.py) owns the request lifecycle; a backend only turns a `GenerationRequest` into
text. Three kinds implement it: the engine in this process (`inprocess.py`), the user's shared engine
over its socket (`shared.py`) and a remote server (`remote.py`). Only the in-process one imports
torch, so a front that talks to an engine stays small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from engine.errors import SpectabError


class BackendError(SpectabError):
    """A generation that failed for a reason outside the request (engine gone, server unreachable,
    refused key): one line for the user; the request is answered empty."""


@dataclass(frozen=True)
class GenerationRequest:
    document: str
    """The document's URI: its KV lane (or llama.cpp slot), and the key of supersession."""
    prefix: str
    suffix: str
    max_new_tokens: int
    temperature: float = 0.0
    single_line: bool = False
    deadline: float | None = None
    """time.monotonic() after which no new round starts (what was generated is returned)."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str
    stop_reason: str = ""
    """eos, max tokens, newline, stop string, deadline, cancelled, error, ..."""
    prompt_tokens: int = 0
    reused_prompt_tokens: int = 0
    draft_proposed: int = 0
    draft_accepted: int = 0
    lane: str | None = None
    """The KV lane the engine used (shared and in-process engines)."""
    engine_ms: float | None = None
    """The shared engine's own time for this request, from taking it off its queue to its answer:
    what a request takes beyond it is the socket hop."""

    def as_dict(self) -> dict:
        return asdict(self)


class Backend:
    """One way of generating. `generate` blocks (the service runs it on its worker thread)."""

    kind = "?"
    """inprocess, shared or remote: what `spectab/status` reports as `engine`."""

    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool],
                 on_text: Callable[[str], None]) -> GenerationResult:
        """The completion at the cursor. `cancelled` is polled between rounds (or streamed chunks);
        once it is true the backend stops and returns what it has. `on_text` gets each new piece of
        text as it arrives. Raises BackendError when the engine or server fails."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What `spectab/status` shows: `engine` plus where (pid or URL) and the models."""
        return {"engine": self.kind}

    def forget(self, document: str) -> None:
        """The document closed: its KV lane (or slot) may go."""

    def set_threads(self, threads: int) -> None:
        """The `threads` setting changed (engines that run on this machine's CPU apply it)."""

    def close(self) -> None:
        """Release connections and models; called when the backend is replaced or the server ends."""
