"""What every backend does: one generation for one cursor, streamed, stoppable.

The service (service.py) owns the request lifecycle; a backend only turns a `GenerationRequest` into
text. Three kinds implement it: the engine in this process (`inprocess.py`), the user's shared engine
over its socket (`shared.py`) and a remote server (`remote.py`). Only the in-process one imports
torch, so a front that talks to an engine stays small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    block_of: str | None = None
    """Multi-line: the cursor's line so far; generation stops once it leaves the cursor's block."""
    context: tuple[str, ...] = ()
    """Chunks of the other open documents, oldest first, each headed by its path (workspace.py)."""
    context_tokens: int = 0
    """The token budget of `context` (the newest chunks that fit are used)."""
    draft_fim: str = "auto"
    min_confidence: float = 0.0
    """Stop before the first token the target gives less probability (0 = never)."""
    candidates: int = 1
    """Suggestions wanted: the greedy one and up to candidates-1 alternatives."""
    want_prompt: bool = False
    """Debugging: the engine answers the text of the prompt it built."""

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
    probs: list[float] | None = None
    """The target's probability of each token of `text` (None: the backend cannot tell)."""
    ends: list[int] | None = None
    """Where each token's text ends in `text` (characters)."""
    alternatives: list[dict] = field(default_factory=list)
    """Other candidates: {"text", "probs", "ends"} each, the most likely first."""
    prompt: str | None = None
    """The prompt's text, when the request asked for it."""

    @classmethod
    def from_engine(cls, r: dict, lane: str | None = None, engine_ms: float | None = None,
                    stop_reason: str | None = None) -> "GenerationResult":
        """From an engine's result dict (engine/requests.py)."""
        return cls(r.get("text", ""), stop_reason or r.get("stop_reason", ""), r.get("prompt_tokens", 0),
                   r.get("reused_prompt_tokens", 0), r.get("draft_proposed", 0), r.get("draft_accepted", 0),
                   r.get("lane", lane), engine_ms if engine_ms is not None else r.get("engine_ms"),
                   r.get("probs"), r.get("ends"), list(r.get("alternatives") or []), r.get("prompt"))

    def as_dict(self) -> dict:
        return asdict(self)


class Backend:
    """One way of generating. `generate` blocks (the service runs it on its worker thread)."""

    kind = "?"
    """inprocess, shared or remote: what `spectab/status` reports as `engine`."""
    understands_requests = True
    """Whether the backend honours `block_of`, `min_confidence` and `candidates` itself (the
    engines do; a remote server does not, and the service watches the block end for it)."""

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
