"""Opening the backend in the background, so `initialize` is answered at once.

States: `loading`, `ready`, `error` (with the one-line reason). A new load (settings changed) replaces
the backend when it is ready; requests meanwhile get empty results, not errors.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from engine.errors import SpectabError, first_line

from .backends.base import Backend
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
        if record.name.startswith("spectab.server"):
            return  # the server's own lines go to its log only
        try:
            self.report(record.getMessage())
        except Exception:  # progress is best effort; never break a load over it
            pass


class ModelHost:
    def __init__(self):
        self.backend: Backend | None = None
        self.status = LoadState()
        self._lock = threading.Lock()
        self.on_lost: Callable[[str], None] = lambda message: None

    @property
    def ready(self) -> bool:
        return self.backend is not None and self.status.state == "ready"

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
        from .backends.choose import open_backend

        handler = _ProgressHandler(on_progress)
        engine_log = logging.getLogger("spectab")
        engine_log.addHandler(handler)
        try:
            backend = open_backend(settings, on_progress)
            error = ""
        except SpectabError as err:
            backend, error = None, str(err)
        except Exception as err:  # a bug or a library failure: still one line for the user
            log.exception("model load failed")
            backend, error = None, f"{type(err).__name__}: {first_line(err)}"
        finally:
            engine_log.removeHandler(handler)
        with self._lock:
            if generation != self.status.generation:
                if backend is not None:
                    backend.close()  # a newer load started meanwhile: its result counts, not this one
                return
            old, self.backend = self.backend, backend
            self.status = LoadState("ready", "", generation) if backend is not None else LoadState("error", error, generation)
            state = self.status
        if old is not None and old is not backend:
            old.close()
        on_done(state)

    def close(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()
