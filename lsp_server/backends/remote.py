"""Remote engines: a team's server generates, spectab's front only sends text and streams the answer.

Two APIs (setting `engineApi`):
- `openai`: POST /v1/completions, which vLLM, SGLang, TGI, llama.cpp's llama-server and
  llama-cpp-python's server all speak. spectab builds the prompt text (remote_prompt.py) and sends
  it with `max_tokens`, `temperature`, `stop` and `stream: true`.
- `infill`: llama-server's POST /infill, where the server builds the infilling prompt with the
  model's own tokens, keeps the prompt cached (`cache_prompt`) and runs it in the slot spectab
  names: each document keeps its own slot, so two files or two windows do not evict each other's
  cache (always asking for slot 0 is what makes them do that).
Both stream, stop reading the moment the request is superseded or its deadline passes, and turn
every failure into one BackendError line followed by a backoff (`Backoff`). Both ask for each
token's log-probability (`logprobs: 1`, llama-server's `n_probs: 1`), so `minConfidence` works as
with the engines: the stream is left before the first piece the model gave less than it, and each
suggestion carries its confidence. A server that refuses the request with the field (400 or 422)
is asked again without it, and once that is taken, from then on without. Nothing here imports torch.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from engine.errors import SpectabError
from engine.prompts import FIM_MODES

from .base import Backend, BackendError, GenerationRequest, GenerationResult
from .remote_http import DEFAULT_TIMEOUT_S, ENV_NAME, Http, HttpStatusError, check_url, parse_url
from .remote_prompt import prompt_text, resolve, stop_strings
from .remote_stream import Response

APIS = ("openai", "infill")

__all__ = ["APIS", "LlamaInfill", "OpenAICompletions", "check_url", "open_remote"]


# a remote server's tokenizer is not here: chunks are budgeted at a typical 4 characters a token
CHARS_PER_TOKEN = 4


def context_within(request: GenerationRequest) -> list[str]:
    """The newest context chunks that fit the request's budget, oldest first."""
    room = request.context_tokens * CHARS_PER_TOKEN
    kept: list[str] = []
    for chunk in reversed(request.context):
        if len(chunk) > room:
            break
        kept.insert(0, chunk)
        room -= len(chunk)
    return kept


class Backoff:
    """After a failure, the next requests fail at once, without network traffic, for 1 s, then
    2, 4, ... up to 60 s after each further failure: a stopped or overloaded server is not hit on
    every keystroke, and the user sees one message, not one per request. A success resets it."""

    def __init__(self, first: float = 1.0, most: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.first, self.most, self.clock = first, most, clock
        self.delay = 0.0
        self.until = 0.0
        self.error: BackendError | None = None

    def check(self) -> None:
        if self.error is not None and self.clock() < self.until:
            # a new exception with the same line: re-raising one instance would grow its traceback
            raise BackendError(str(self.error))

    def failed(self, error: BackendError) -> None:
        self.delay = self.first if not self.delay else min(self.most, self.delay * 2)
        # a 429's Retry-After is the server's own word on when to come back
        wait = max(self.delay, min(self.most, getattr(error, "retry_after", 0.0)))
        self.until = self.clock() + wait
        self.error = error

    def succeeded(self) -> None:
        self.delay, self.until, self.error = 0.0, 0.0, None


@dataclass
class Streamed:
    """What a stream gave: its text, why it stopped, its last event, and per streamed piece the
    model's probability (the least of its tokens') and where the piece ends in the text."""
    text: str
    stop_reason: str
    last: dict
    probs: list[float] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def result(self, **more) -> GenerationResult:
        # the probabilities only when every piece had one: a partial list would misplace the cut
        known = len(self.probs) == len(self.ends) and bool(self.probs)
        return GenerationResult(self.text, stop_reason=self.stop_reason, probs=self.probs if known else None,
                                ends=self.ends if known else None, **more)


class _Remote(Backend):
    kind = "remote"
    understands_requests = False  # a server knows no block end or candidates (the confidence cut is ours)
    api = "?"
    probability_field: tuple[str, object] = ("", None)
    """The request field that asks for each token's log-probability, and its value."""

    def __init__(self, url: str, key_env: str, model: str | None, not_found_hint: str):
        self.endpoint = parse_url(url)
        self.http = Http(self.endpoint, key_env, not_found_hint)
        self.model = model or None
        self.backoff = Backoff()
        self.asks_probabilities = True  # until the server refuses the field

    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool],
                 on_text: Callable[[str], None]) -> GenerationResult:
        self.backoff.check()
        deadline = request.deadline if request.deadline is not None else time.monotonic() + DEFAULT_TIMEOUT_S
        started = time.monotonic()
        if started >= deadline:  # out of time before asking: not the server's fault
            return GenerationResult("", stop_reason="deadline")
        try:
            result = self._generate(request, deadline, cancelled, on_text)
            if result.stop_reason == "deadline" and not result.text:
                raise BackendError(f"{self.endpoint.url} sent no text within {time.monotonic() - started:.1f} s "
                                   "(spectab.deadlineMs); is it overloaded or stopped?")
        except BackendError as err:
            self.backoff.failed(err)
            self._forget()
            raise
        if result.text or result.stop_reason != "cancelled":  # an answer, not just a request given up
            self.backoff.succeeded()
        return result

    def _generate(self, request: GenerationRequest, deadline: float, cancelled: Callable[[], bool],
                  on_text: Callable[[str], None]) -> GenerationResult:
        raise NotImplementedError

    def _forget(self) -> None:
        """Drop what was learnt from the server: after a failure it may come back different."""

    def describe(self) -> dict:
        return {"engine": self.kind, "url": self.endpoint.url, "api": self.api, "model": self.model}

    def _stream(self, path: str, body: dict, request: GenerationRequest, deadline: float,
                cancelled: Callable[[], bool], on_text: Callable[[str], None],
                piece: Callable[[dict], tuple[str, str | None, float | None]]) -> Streamed:
        """POST `body` (with the probability field, while the server takes it) and stream its
        events: `piece(event)` gives (text, finish reason or None, the piece's probability or
        None). A piece under `request.min_confidence` ends the stream before it, as "confidence"."""
        name, value = self.probability_field
        if self.asks_probabilities and name:
            try:
                return self._read(path, {**body, name: value}, request, deadline, cancelled, on_text, piece)
            except HttpStatusError as err:
                if err.status not in (400, 422):
                    raise
                # asked again without the field: refused again, the request itself was at fault
                streamed = self._read(path, body, request, deadline, cancelled, on_text, piece)
                self.asks_probabilities = False  # taken without it: ask without from now on
                return streamed
        return self._read(path, body, request, deadline, cancelled, on_text, piece)

    def _read(self, path, body, request, deadline, cancelled, on_text, piece) -> Streamed:
        response: Response | None = self.http.open("POST", path, body, deadline, cancelled, stream=True)
        if response is None:
            return Streamed("", "cancelled", {})
        pieces, probs, ends, finish, last, length = [], [], [], None, {}, 0
        try:
            for event in response.events():
                if not isinstance(event, dict):
                    raise BackendError(f"{response.what} sent a malformed answer (an event that is not an object)")
                if "error" in event:
                    raise BackendError(f"{response.what} failed mid-answer: {_message(event['error'])}")
                text, finish, prob = piece(event)
                last = event
                if text and prob is not None and prob < request.min_confidence:
                    return Streamed("".join(pieces), "confidence", last, probs, ends)
                if text:
                    pieces.append(text)
                    length += len(text)
                    if prob is not None:
                        probs.append(prob)
                    ends.append(length)
                    on_text(text)
                if finish or cancelled():
                    break
        finally:
            response.conn.close()  # the server stops generating when its client goes
        text = "".join(pieces)
        if finish:
            return Streamed(text, finish, last, probs, ends)
        if cancelled():
            return Streamed(text, "cancelled", last, probs, ends)
        if response.stop_reason:
            return Streamed(text, response.stop_reason, last, probs, ends)
        if response.done:  # [DONE] without a finish reason: the server's way of saying it is finished
            return Streamed(text, "stop", last, probs, ends)
        raise BackendError(f"{response.what} stopped mid-answer (the stream ended before the completion did)")


def _probability(logprobs: object) -> float | None:
    """The least probability among a piece's tokens, from their log-probabilities (None when
    the server sent none, or something that is not one)."""
    if not isinstance(logprobs, list) or not logprobs:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x) for x in logprobs):
        return None
    return math.exp(min(min(logprobs), 0.0))


def _message(error: object) -> str:
    if isinstance(error, dict):
        error = error.get("message", error)
    return " ".join(str(error).split())[:160]


class OpenAICompletions(_Remote):
    """An OpenAI-compatible /v1/completions server. `model` None: the first id of GET /v1/models."""

    api = "openai"
    probability_field = ("logprobs", 1)

    def __init__(self, url: str, key_env: str = "", model: str | None = None, fim: str = "auto"):
        super().__init__(url, key_env, model, "does the server speak the OpenAI API under /v1 (or is this "
                                               "llama-server for spectab.engineApi infill)?")
        self.fim = fim
        # the URL may already name the API root (http://host:8000/v1)
        self.v1 = "" if self.endpoint.path.endswith("/v1") else "/v1"
        if self.model is not None:
            resolve(self.model, fim)  # a format this model cannot do is a settings error, said now

    def _model(self, deadline: float) -> str:
        if self.model is None:
            answer = self.http.get_json(f"{self.v1}/models", deadline)
            data = answer.get("data") if isinstance(answer, dict) else None
            first = data[0] if isinstance(data, list) and data else None
            if not isinstance(first, dict) or not isinstance(first.get("id"), str):
                raise BackendError(f"{self.endpoint.url}{self.v1}/models lists no model; set spectab.engineModel")
            self.model = first["id"]
        return self.model

    def _generate(self, request, deadline, cancelled, on_text):
        model = self._model(deadline)
        try:
            family, mode = resolve(model, self.fim)
        except SpectabError as err:
            raise BackendError(str(err)) from None
        # the other files' chunks lead the prefix, as the engines place them
        prefix = "".join(context_within(request)) + request.prefix
        body = {"model": model, "prompt": prompt_text(family, mode, prefix, request.suffix),
                "max_tokens": request.max_new_tokens, "temperature": request.temperature, "stream": True}
        stops = stop_strings(family, mode, request.single_line)
        if stops:
            body["stop"] = stops
        return self._stream(f"{self.v1}/completions", body, request, deadline, cancelled, on_text, self._piece).result()

    def _piece(self, event: dict) -> tuple[str, str | None, float | None]:
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise BackendError(f"{self.endpoint.url}{self.v1}/completions sent a malformed answer (no choices)")
        if not choices:  # a usage-only event
            return "", None
        choice = choices[0]
        text = choice.get("text", "") if isinstance(choice, dict) else None
        if not isinstance(text, str):
            raise BackendError(f"{self.endpoint.url}{self.v1}/completions sent a malformed answer "
                               "(a choice without text)")
        finish = choice.get("finish_reason")
        logprobs = choice.get("logprobs")
        prob = _probability(logprobs.get("token_logprobs")) if isinstance(logprobs, dict) else None
        return text, {"length": "length", "stop": "stop"}.get(finish, finish) if finish else None, prob

    def _forget(self) -> None:
        pass  # the configured or discovered model stays: a restarted server serves the same one


class SlotMap:
    """The llama-server slot of each document. A new document takes the slot its URI hashes to (so
    fronts that share one server spread over its slots), or the next one no other document of this
    front holds; it keeps it while it is among the `total` most recently used."""

    def __init__(self):
        self._slots: OrderedDict[str, int] = OrderedDict()

    def slot(self, document: str, total: int) -> int:
        if total < 1:
            return -1  # slot count unknown: the server picks an idle one
        held = self._slots.get(document)
        if held is not None and held < total:
            self._slots.move_to_end(document)
            return held
        self._slots.pop(document, None)
        taken = {s for s in self._slots.values() if s < total}
        preferred = zlib.crc32(document.encode()) % total
        free = [s for s in range(total) if s not in taken]
        if free:
            slot = min(free, key=lambda s: (s - preferred) % total)
        else:  # every slot held: the least recently used document gives its own up
            _, slot = self._slots.popitem(last=False)
        self._slots[document] = slot
        return slot


class LlamaInfill(_Remote):
    """llama.cpp's llama-server /infill. `model` is only sent when set (llama-server's router mode
    picks a model by it); the format comes from the model's own infilling tokens."""

    api = "infill"
    probability_field = ("n_probs", 1)

    def __init__(self, url: str, key_env: str = "", model: str | None = None):
        super().__init__(url, key_env, model, "is this llama.cpp's llama-server (llama-cpp-python's server has no "
                                              "/infill: use spectab.engineApi openai)?")
        self.slots = SlotMap()
        self.total_slots: int | None = None
        self.served: str | None = None
        """The model file llama-server reports (GET /props model_path), for the status."""

    def _total_slots(self, deadline: float) -> int:
        """GET /props' total_slots, else the length of GET /slots, else 0 (unknown)."""
        if self.total_slots is None:
            total = 0
            try:
                props = self.http.get_json("/props", deadline)
                if isinstance(props, dict):
                    total = props.get("total_slots") if isinstance(props.get("total_slots"), int) else 0
                    self.served = props.get("model_path") if isinstance(props.get("model_path"), str) else None
            except HttpStatusError:  # an older or locked-down server: the slot list may still say
                pass
            if total < 1:
                try:
                    slots = self.http.get_json("/slots", deadline)
                    total = len(slots) if isinstance(slots, list) else 0
                except HttpStatusError:  # --no-slots: the server picks an idle slot itself
                    total = 0
            self.total_slots = max(total, 0)
        return self.total_slots

    def _generate(self, request, deadline, cancelled, on_text):
        slot = self.slots.slot(request.document, self._total_slots(deadline))
        body = {"input_prefix": request.prefix, "input_suffix": request.suffix,
                # llama.cpp's own slot for other files' chunks: it places them before the prefix
                "input_extra": [{"filename": "", "text": chunk} for chunk in context_within(request)],
                "prompt": "", "n_predict": request.max_new_tokens, "temperature": request.temperature,
                "cache_prompt": True, "stream": True, "id_slot": slot}
        if request.single_line:
            body["stop"] = ["\n"]
        if self.model:
            body["model"] = self.model
        streamed = self._stream("/infill", body, request, deadline, cancelled, on_text, self._piece)
        last = streamed.last
        timings = last.get("timings") if isinstance(last.get("timings"), dict) else {}
        cached, fresh = timings.get("cache_n", 0), timings.get("prompt_n", 0)
        used = last.get("id_slot", slot)
        return streamed.result(
            prompt_tokens=cached + fresh if isinstance(cached, int) and isinstance(fresh, int) else 0,
            reused_prompt_tokens=cached if isinstance(cached, int) else 0,
            lane=f"slot {used}" if isinstance(used, int) and used >= 0 else None,
        )

    def _piece(self, event: dict) -> tuple[str, str | None, float | None]:
        text = event.get("content", "")
        if not isinstance(text, str):
            raise BackendError(f"{self.endpoint.url}/infill sent a malformed answer (content is not text)")
        probs = event.get("completion_probabilities")
        prob = _probability([p.get("logprob") for p in probs if isinstance(p, dict)]) if isinstance(probs, list) else None
        if event.get("stop") is True:
            kind = event.get("stop_type")
            return text, {"eos": "eos", "limit": "length", "word": "stop"}.get(kind, "stop"), prob
        return text, None, prob

    def _forget(self) -> None:
        self.total_slots = None  # a restarted server may have another slot count

    def describe(self) -> dict:
        return super().describe() | {"model": self.model or self.served}


def open_remote(url: str, api: str = "openai", model: str | None = None, key_env: str = "",
                fim: str = "auto") -> Backend:
    """The backend for an `engine` URL; SpectabError (one line) for settings that cannot work.
    Nothing is sent until the first request."""
    check_url(url)
    if api not in APIS:
        raise SpectabError(f"engineApi must be openai or infill, not '{api}'")
    if key_env and not ENV_NAME.fullmatch(key_env):
        # never echoed: a key pasted here by mistake must not reach the logs
        raise SpectabError("engineApiKeyEnv must be the name of an environment variable that holds the key "
                           "(e.g. SPECTAB_API_KEY), not the key itself")
    if fim not in FIM_MODES:
        raise SpectabError(f"unknown infilling mode '{fim}'; choose one of {', '.join(FIM_MODES)}")
    if api == "infill":
        return LlamaInfill(url, key_env, model)
    return OpenAICompletions(url, key_env, model, fim)
