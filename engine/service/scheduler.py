"""Which request the engine generates next: one at a time, fair across fronts, newest per document.

- Each front (client) has its own queue; the worker takes the oldest request of the next front in
  turn, so one busy window cannot starve another.
- A newer request for a document supersedes the older one wherever it is: still queued, it is
  dropped (answered at once); generating, its cancel flag is set and it stops at the next round.
- A front that goes away takes its requests with it, and nothing else.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable


@dataclass(eq=False)
class Job:
    client: int
    id: int
    document: str
    request: dict
    cancel: threading.Event = field(default_factory=threading.Event)


class Scheduler:
    def __init__(self, on_dropped: Callable[[Job, str], None]):
        """`on_dropped(job, reason)` answers a request that will never run (superseded, cancelled)."""
        self.on_dropped = on_dropped
        self._queues: OrderedDict[int, deque[Job]] = OrderedDict()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._closed = False

    def submit(self, job: Job) -> None:
        dropped = []
        with self._cond:
            for queue in self._queues.values():
                for old in [j for j in queue if j.document == job.document]:
                    queue.remove(old)
                    dropped.append(old)
            if self._running is not None and self._running.document == job.document:
                self._running.cancel.set()
            self._queues.setdefault(job.client, deque()).append(job)
            self._cond.notify()
        for old in dropped:
            self.on_dropped(old, "superseded")

    def cancel(self, client: int, job_id: int) -> None:
        dropped = None
        with self._cond:
            if self._running is not None and (self._running.client, self._running.id) == (client, job_id):
                self._running.cancel.set()
            queue = self._queues.get(client, ())
            for job in list(queue):
                if job.id == job_id:
                    queue.remove(job)
                    dropped = job
        if dropped is not None:
            self.on_dropped(dropped, "cancelled")

    def drop_client(self, client: int) -> None:
        """The front disconnected: its queued requests vanish (nobody to answer), its running one stops."""
        with self._cond:
            self._queues.pop(client, None)
            if self._running is not None and self._running.client == client:
                self._running.cancel.set()

    def cancel_document(self, document: str) -> None:
        """A document closed: whatever is queued or running for it stops."""
        dropped = []
        with self._cond:
            for queue in self._queues.values():
                for old in [j for j in queue if j.document == document]:
                    queue.remove(old)
                    dropped.append(old)
            if self._running is not None and self._running.document == document:
                self._running.cancel.set()
        for old in dropped:
            self.on_dropped(old, "cancelled")

    def next(self) -> Job | None:
        """Block until there is a request; None once closed. The front served goes to the back."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                for client in list(self._queues):
                    queue = self._queues[client]
                    if queue:
                        job = queue.popleft()
                        self._queues.move_to_end(client)
                        self._running = job
                        return job
                self._cond.wait()

    def finished(self, job: Job) -> None:
        with self._cond:
            if self._running is job:
                self._running = None

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values()) + (self._running is not None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()
