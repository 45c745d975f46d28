"""KV lanes: one KV cache (target, and draft when there is one) per document, least recently used
evicted.

A single cache serves one prompt at a time: switching from one file (or editor window) to another and
back would prefill each prompt anew. With a lane per document, each keeps its own cached prefix, so
alternating costs nothing. The caches take memory only where positions are written (see
`engine.model.lazy_zeros`), so a lane of a short file holds little; the lane count is still bounded,
because a lane's cache can grow to the full prompt budget.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from .cached_model import CachedModel

log = logging.getLogger("spectab")

DEFAULT_LANE = ""  # requests that name no document (the CLI, benchmarks) share this one
MAX_AUTO_LANES = 16
AUTO_MEMORY_SHARE = 0.5  # auto sizing lets full lanes take at most this share of the free memory


@dataclass
class Lane:
    document: str
    target: CachedModel
    draft: CachedModel | None
    drafter: object
    """The drafter bound to this lane's draft cache (prompt lookup and plain need none)."""

    @property
    def tokens(self) -> int:
        return len(self.target.ids)

    def release(self) -> None:
        self.target.release()
        if self.draft is not None:
            self.draft.release()


class LanePool:
    """At most `limit` lanes; `get(document)` returns the document's lane, making one (and evicting
    the least recently used) when needed."""

    def __init__(self, make: Callable[[str], Lane], limit: int):
        assert limit >= 1, "a lane pool needs at least one lane"
        self.make, self.limit = make, limit
        self.lanes: OrderedDict[str, Lane] = OrderedDict()
        self.evictions = 0

    def get(self, document: str | None) -> Lane:
        key = document or DEFAULT_LANE
        lane = self.lanes.get(key)
        if lane is not None:
            self.lanes.move_to_end(key)
            return lane
        while len(self.lanes) >= self.limit:
            old_key, old = self.lanes.popitem(last=False)
            old.release()
            self.evictions += 1
            log.debug("KV lane of %s evicted (%d lanes)", old_key or "(default)", self.limit)
        lane = self.make(key)
        self.lanes[key] = lane
        return lane

    def forget(self, document: str) -> None:
        lane = self.lanes.pop(document, None)
        if lane is not None:
            lane.release()

    def reset(self) -> None:
        for lane in self.lanes.values():
            lane.target.reset()
            if lane.draft is not None:
                lane.draft.reset()

    def describe(self) -> list[dict]:
        """Most recently used last: each lane's document and the tokens its target cache holds."""
        return [{"document": key or None, "tokens": lane.tokens} for key, lane in self.lanes.items()]


def auto_lane_count(bytes_per_lane: int, free_bytes: int | None = None) -> int:
    """How many full lanes fit in a share of the memory free now (at least 1, at most 16)."""
    free = available_memory() if free_bytes is None else free_bytes
    if not free or bytes_per_lane <= 0:
        return 4
    return max(1, min(MAX_AUTO_LANES, int(free * AUTO_MEMORY_SHARE // bytes_per_lane)))


def available_memory() -> int | None:
    """Bytes the system could give this process now (Linux MemAvailable; None elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
