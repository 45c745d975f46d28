"""The engine inside this process (`engine: "inprocess"`): today's one-process mode, no socket.

The models load here (torch is imported only by this module's `open`), and the KV lanes, the
drafter and the generation loop are the engine's own; this class only maps a request onto
`Completer.complete`.
"""

from __future__ import annotations

from typing import Callable

from .base import Backend, GenerationRequest, GenerationResult


class InProcessBackend(Backend):
    kind = "inprocess"

    def __init__(self, completer):
        self.completer = completer  # engine.completer.Completer

    @classmethod
    def open(cls, settings, kv_lanes: int = 0) -> "InProcessBackend":
        # imported here, not at the top: torch and transformers take seconds to import, and
        # `initialize` must be answered at once
        from engine.completer import Completer, EngineOptions, alternatives_time_share
        from engine.devices import set_threads

        set_threads(settings.threads)
        options = EngineOptions(context_tokens=settings.contextTokens, kv_lanes=kv_lanes,
                                alternatives_time_share=alternatives_time_share())
        return cls(Completer.open(settings.profile, settings.target, settings.draft, settings.device, settings.dtype,
                                  fim=None if settings.fim == "auto" else settings.fim, options=options, quant=settings.quant))

    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool],
                 on_text: Callable[[str], None]) -> GenerationResult:
        from engine.requests import run_request

        body = request.as_dict()
        deadline = body.pop("deadline")
        return GenerationResult.from_engine(run_request(self.completer, body, deadline, cancelled, on_text))

    def set_threads(self, threads: int) -> None:
        from engine.devices import set_threads

        set_threads(threads)

    def forget(self, document: str) -> None:
        self.completer.forget(document)

    def lanes(self) -> list[dict]:
        return self.completer.lanes.describe()

    def describe(self) -> dict:
        c = self.completer
        return {"engine": "inprocess", "pid": None, "profile": c.profile, "target": c.target_info.name,
                "draft": c.draft_name, "device": str(c.device), "quant": c.quant}

    def close(self) -> None:
        self.completer = None
