"""The request lifecycle: from a cursor in a document to one suggestion, fast and never in the way.

- Per document the newest request wins: the older one is answered empty at once and its generation
  stops at the engine's next round. Generation runs on one worker thread, one at a time; a request
  that was superseded while it waited for the worker does no work, so nothing queues up.
- Automatic triggers wait `debounceMs` first (explicit ones do not); each request has a deadline
  after which the best safe part of what was generated is answered.
- Typed-ahead: when the user types the start of the last suggestion, the rest is served from it.
- Each request carries the workspace context (workspace.py), the confidence cut and, for explicit
  requests, the number of candidates; every suggestion is post-processed, and candidates that end
  up empty or equal to an earlier one are dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .backends.base import BackendError, GenerationRequest
from .context import Cursor, cursor_at
from .model_host import ModelHost
from .postprocess import cut_block, finish, safe_partial, shown_confidence
from .settings import Settings
from .workspace import Workspace

log = logging.getLogger("spectab.server")


@dataclass
class Stats:
    requests: int = 0
    generations: int = 0
    typed_ahead: int = 0
    superseded: int = 0
    empty: int = 0
    accepted: int = 0
    partial_accepts: int = 0
    confidence_cut: int = 0
    """Suggestions shortened by the confidence cut."""
    confidence_hidden: int = 0
    """Suggestions the confidence cut left nothing of (not shown)."""
    candidates: int = 0
    """Alternative suggestions returned beside the greedy ones."""
    prompt_tokens: int = 0
    reused_prompt_tokens: int = 0
    draft_proposed: int = 0
    draft_accepted: int = 0
    last_latency_ms: float | None = None
    last_stop: str | None = None
    backend_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "generations": self.generations,
            "typedAhead": self.typed_ahead,
            "superseded": self.superseded,
            "empty": self.empty,
            "acceptedSuggestions": self.accepted,
            "partialAccepts": self.partial_accepts,
            "confidenceCut": self.confidence_cut,
            "confidenceHidden": self.confidence_hidden,
            "alternatives": self.candidates,
            "lastLatencyMs": None if self.last_latency_ms is None else round(self.last_latency_ms, 1),
            "lastStopReason": self.last_stop,
            "backendErrors": self.backend_errors,
            "acceptanceRate": round(self.draft_accepted / self.draft_proposed, 4) if self.draft_proposed else None,
            "promptTokens": self.prompt_tokens,
            "reusedPromptTokens": self.reused_prompt_tokens,
            "prefixCacheHitRate": round(self.reused_prompt_tokens / self.prompt_tokens, 4) if self.prompt_tokens else None,
        }


@dataclass
class _Shown:
    """The last suggestion of a document, for typed-ahead reuse."""
    before: str
    after: str
    text: str
    multiline: bool


@dataclass(frozen=True)
class Suggestion:
    text: str
    confidence: float | None = None
    """The least probability the target gave a token of `text` (None: the backend cannot say)."""


@dataclass
class Answer:
    items: list[Suggestion]
    """Greedy first, then alternatives; empty for no suggestion."""
    cursor: Cursor | None = None
    source: str = "model"

    @property
    def text(self) -> str:
        return self.items[0].text if self.items else ""


class CompletionService:
    def __init__(self, host: ModelHost, tell=lambda message: None):
        """`tell(message)` shows a backend failure to the user (once per message; on the event loop)."""
        self.host = host
        self.tell = tell
        self.stats = Stats()
        self.lanes: dict[str, str | None] = {}  # document -> the KV lane its last generation used
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spectab-generate")
        self._ids = itertools.count(1)
        self._inflight: dict[str, tuple[int, threading.Event, asyncio.Event]] = {}
        self._shown: dict[str, _Shown] = {}
        self.workspace = Workspace()
        self.last_prompts: dict[str, str] = {}  # with SPECTAB_DEBUG_PROMPTS=1: uri -> the engine's prompt
        self.debug_prompts = os.environ.get("SPECTAB_DEBUG_PROMPTS") == "1"

    def forget(self, uri: str) -> None:
        self._shown.pop(uri, None)
        self.workspace.closed(uri)
        self.last_prompts.pop(uri, None)
        self.lanes.pop(uri, None)
        self._supersede(uri)
        backend = self.host.backend
        if backend is not None:
            self._worker.submit(backend.forget, uri)  # after a generation in flight, never during

    def shutdown(self) -> None:
        for uri in list(self._inflight):
            self._supersede(uri)
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def suggest(self, uri: str, text: str, offset: int, explicit: bool, settings: Settings) -> Answer:
        """The suggestion at `offset` of `text` ("" = none). Must run on the event loop."""
        arrived = time.monotonic()
        self.stats.requests += 1
        request_id = next(self._ids)
        self._supersede(uri)
        cancel, superseded = threading.Event(), asyncio.Event()
        self._inflight[uri] = (request_id, cancel, superseded)
        try:
            cur = cursor_at(text, offset, settings.contextTokens)
            multiline = settings.multiline == "always" or (settings.multiline == "auto" and cur.at_line_end)
            reused = self._typed_ahead(uri, text, offset)
            if reused is not None:
                self.stats.typed_ahead += 1
                return self._answer(Answer([Suggestion(reused)], cur, "typed-ahead"), arrived)
            backend = self.host.backend if self.host.ready else None
            if backend is None:
                return self._answer(Answer([], cur), arrived)
            self.workspace.visited(uri, text, offset)  # first: the context reads this text's imports
            context = self.workspace.context_for(uri, cur.prefix + cur.suffix) if settings.extraContextTokens else ()
            if not explicit and settings.debounceMs:
                try:
                    await asyncio.wait_for(superseded.wait(), settings.debounceMs / 1000)
                except asyncio.TimeoutError:
                    pass
            if cancel.is_set():
                self.stats.superseded += 1
                return self._answer(Answer([]), arrived)
            deadline = arrived + settings.deadlineMs / 1000
            request = GenerationRequest(
                uri, cur.prefix, cur.suffix, settings.maxNewTokens, settings.temperature, single_line=not multiline,
                deadline=deadline, block_of=cur.line_prefix if multiline else None, context=context,
                context_tokens=settings.extraContextTokens if context else 0, draft_fim=settings.draftFim,
                min_confidence=settings.minConfidence, candidates=settings.candidates if explicit else 1,
                want_prompt=self.debug_prompts)
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(self._worker, self._generate, backend, request, cur, multiline, cancel)
            gate = asyncio.ensure_future(superseded.wait())
            try:
                await asyncio.wait({job, gate}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gate.cancel()
            if cancel.is_set() or not job.done():
                self.stats.superseded += 1
                return self._answer(Answer([]), arrived)
            try:
                items = job.result()
            except BackendError as err:
                # the engine or server failed (gone, unreachable, refused): empty, said once
                self.stats.backend_errors += 1
                self.stats.last_stop = "error"
                self.tell(str(err))
                return self._answer(Answer([], cur), arrived)
            if items:
                self._shown[uri] = _Shown(text[:offset], text[offset:], items[0].text, multiline)
            return self._answer(Answer(items, cur), arrived)
        except asyncio.CancelledError:
            cancel.set()  # $/cancelRequest: the engine stops at its next round
            raise
        finally:
            if self._inflight.get(uri, (None,))[0] == request_id:
                del self._inflight[uri]

    def _supersede(self, uri: str) -> None:
        old = self._inflight.pop(uri, None)
        if old is not None:
            old[1].set()
            old[2].set()

    def _typed_ahead(self, uri: str, text: str, offset: int) -> str | None:
        shown = self._shown.get(uri)
        if shown is None or text[offset:] != shown.after:
            return None
        before = text[:offset]
        if not before.startswith(shown.before):
            return None
        typed = before[len(shown.before):]
        if 0 < len(typed) < len(shown.text) and shown.text.startswith(typed):
            return shown.text[len(typed):]
        return None

    def _generate(self, backend, request: GenerationRequest, cur: Cursor, multiline: bool,
                  cancel: threading.Event) -> list[Suggestion]:
        """On the worker thread: generate, then post-process the greedy suggestion and each
        alternative (empty ones and repeats dropped)."""
        if cancel.is_set():
            return []  # superseded while waiting for the worker: no work
        self.stats.generations += 1
        block_done = threading.Event()
        pieces: list[str] = []

        def watch(piece: str) -> None:
            # an engine stops at the block end itself; for a remote server, stop reading once a
            # whole line falls outside the cursor's block
            if not multiline or backend.understands_requests:
                return
            pieces.append(piece)
            so_far = "".join(pieces)
            whole_lines = so_far[: so_far.rfind("\n") + 1]
            if whole_lines and len(cut_block(whole_lines, cur)) < len(whole_lines.rstrip("\n")):
                block_done.set()

        s = backend.generate(request, lambda: cancel.is_set() or block_done.is_set(), watch)
        self.stats.last_stop = "block end" if block_done.is_set() else s.stop_reason
        self.stats.prompt_tokens += s.prompt_tokens
        self.stats.reused_prompt_tokens += s.reused_prompt_tokens
        self.stats.draft_proposed += s.draft_proposed
        self.stats.draft_accepted += s.draft_accepted
        self.lanes[request.document] = s.lane
        if s.prompt is not None:
            self.last_prompts[request.document] = s.prompt
        if cancel.is_set():
            return []
        text = s.text
        if s.stop_reason == "deadline":
            text = safe_partial(text, multiline)
        shown = finish(text, cur, multiline)
        if s.stop_reason == "confidence":
            if shown:
                self.stats.confidence_cut += 1
            else:
                self.stats.confidence_hidden += 1
        if not shown:
            return []  # alternatives only beside a greedy suggestion the user would see
        items = [Suggestion(shown, shown_confidence(len(shown), s.probs, s.ends))]
        for alt in s.alternatives:
            alt_text = finish(str(alt.get("text", "")), cur, multiline)
            if alt_text and all(alt_text != item.text for item in items):
                items.append(Suggestion(alt_text, shown_confidence(len(alt_text), alt.get("probs"), alt.get("ends"))))
                self.stats.candidates += 1
        return items[: request.candidates]

    def _answer(self, answer: Answer, arrived: float) -> Answer:
        latency = (time.monotonic() - arrived) * 1000
        self.stats.last_latency_ms = latency
        self.stats.latencies_ms.append(latency)
        del self.stats.latencies_ms[:-1000]
        if not answer.text:
            self.stats.empty += 1
        return answer
