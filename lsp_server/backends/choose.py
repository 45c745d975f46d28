"""From the `engine` setting to a ready backend: `inprocess`, `shared` (the default) or a URL."""

from __future__ import annotations

from typing import Callable

from .base import Backend

ENGINE_KINDS = ("shared", "inprocess")


def check_engine(value: str) -> str:
    """`shared`, `inprocess` or an http(s) URL; anything else is one clear error."""
    if value in ENGINE_KINDS:
        return value
    from .remote_http import check_url

    return check_url(value)


def open_backend(settings, on_progress: Callable[[str], None]) -> Backend:
    """Load (in-process), connect to (shared) or check (remote) what generates; blocks until ready."""
    engine = check_engine(settings.engine)
    if engine == "inprocess":
        from .inprocess import InProcessBackend

        return InProcessBackend.open(settings, settings.kvLanes)
    if engine == "shared":
        from .shared import SharedBackend

        backend = SharedBackend(settings, settings.kvLanes, settings.idleMinutes)
        try:
            backend.open(on_progress)
        except BaseException:
            backend.close()
            raise
        return backend
    from .remote import open_remote

    return open_remote(engine, settings.engineApi, settings.engineModel or None, settings.engineApiKeyEnv, settings.fim)
