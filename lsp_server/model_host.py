"""Loading the engine in the background, so `initialize` is answered at once.

States: `loading`, `ready`, `error` (with the one-line reason). A new load (settings changed) replaces
the engine when it is ready; requests meanwhile get empty results, not errors.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from engine.errors import SpectabError, first_line

from .settings import Settings

log = logging.getLogger("spectab.server")


@dataclass
class LoadState:
    state: str = "loading"
    error: str = ""
    generation: int = 0


class _ProgressHandler(logging.Handler):
    """Forwards the engine's progress lines (converting, downloading) to a callback."""

    def __init__(self, report: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.report(record.getMessage())
        except Exception:  # progress is best effort; never break a load over it
            pass


class ModelHost:
    def __init__(self):
        self.completer = None  # engine.completer.Completer once loaded
        self.status = LoadState()
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.completer is not None and self.status.state == "ready"

    def begin(self) -> int:
        """Say `loading` from now on (before the load starts, so no status request can see the
        previous state); returns the number to pass to `load`."""
        with self._lock:
            self.status = LoadState("loading", "", self.status.generation + 1)
            return self.status.generation

    def load(self, generation: int, settings: Settings, on_progress: Callable[[str], None],
             on_done: Callable[[LoadState], None]) -> None:
        """Load in a thread; `on_done` is called from that thread when it ends."""
        threading.Thread(target=self._load, args=(settings, generation, on_progress, on_done),
                         name=f"spectab-load-{generation}", daemon=True).start()

    def _load(self, settings: Settings, generation: int, on_progress, on_done) -> None:
        handler = _ProgressHandler(on_progress)
        engine_log = logging.getLogger("spectab")
        engine_log.addHandler(handler)
        try:
            # imported here, not at the top: torch and transformers take seconds to import, and
            # `initialize` must be answered at once
            from engine.completer import Completer, EngineOptions
            from engine.devices import set_threads

            set_threads(settings.threads)
            options = EngineOptions(context_tokens=settings.contextTokens)
            completer = Completer.open(settings.profile, settings.target, settings.draft, settings.device,
                                       settings.dtype, fim=None if settings.fim == "auto" else settings.fim, options=options,
                                       quant=settings.quant)
            error = ""
        except SpectabError as err:
            completer, error = None, str(err)
        except Exception as err:  # a bug or a library failure: still one line for the user
            log.exception("model load failed")
            completer, error = None, f"{type(err).__name__}: {first_line(err)}"
        finally:
            engine_log.removeHandler(handler)
        with self._lock:
            if generation != self.status.generation:
                return  # a newer load started meanwhile: its result counts, not this one
            if completer is not None:
                self.completer = completer
                self.status = LoadState("ready", "", generation)
            else:
                self.completer = None
                self.status = LoadState("error", error, generation)
            state = self.status
        on_done(state)
