"""Short forwards (decode steps, draft steps, verifies of k+1) replayed as captured CUDA graphs.

A decode step of a 7B model launches hundreds of small kernels; launched one by one from Python,
the GPU waits on the host between them. Captured once into a CUDA graph, the whole step is a single
launch. `StepRunner` keeps one graph per (query length, attention span) over `static_forward`, with
static input buffers (token ids, positions) that are filled before each replay, and a static output
buffer of logits. Off CUDA (or with capture=False) it runs the same static-shape code eagerly, so
the CPU tests cover every line but the capture itself.

Rules the graphs rely on: the model's KV cache and rotary tables are not reallocated while the
runner lives (`CachedModel` makes a new runner when it sets up the cache), and the logits returned
are overwritten by the next replay of the same shape (`CachedModel` copies the rows it returns).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import Llama
from .static_forward import span_for, static_forward

MAX_GRAPH_TOKENS = 16  # longer forwards (prompt prefills) run eagerly: flash attention, no graph per length


@dataclass
class Captured:
    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # [1, S] static input
    pos: torch.Tensor  # [S] static input
    logits: torch.Tensor  # [S, vocab] static output


class StepRunner:
    def __init__(self, model: Llama, capture: bool | None = None):
        self.model = model
        device = model.device
        self.capture = device.type == "cuda" if capture is None else capture
        self.offsets = torch.arange(MAX_GRAPH_TOKENS, device=device)
        self.graphs: dict[tuple[int, int], Captured] = {}
        self.pool = None  # one memory pool for all graphs: they replay one at a time on one stream
        # warm-up and capture on the same side stream (the PyTorch CUDA-graph docs' recipe)
        self.stream = torch.cuda.Stream(device) if self.capture else None

    def __call__(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """tokens: [S] ids on the model's device at positions start..start+S-1 -> logits [S, vocab]."""
        S = tokens.numel()
        assert S <= MAX_GRAPH_TOKENS, f"{S} tokens: forwards over more than {MAX_GRAPH_TOKENS} run through Llama.forward"
        span = span_for(start + S, self.model.capacity)
        if not self.capture:
            return static_forward(self.model, tokens.view(1, S), self.offsets[:S] + start, span)
        entry = self.graphs.get((S, span))
        fresh = entry is None
        if fresh:
            entry = Captured(None, torch.empty(1, S, dtype=torch.long, device=tokens.device),
                             torch.empty(S, dtype=torch.long, device=tokens.device), None)
        # device-side copies and a scalar add: nothing here waits for the GPU
        entry.tokens.copy_(tokens.view(1, S))
        torch.add(self.offsets[:S], start, out=entry.pos)
        if fresh:
            self._capture(entry, span)
            self.graphs[(S, span)] = entry
        entry.graph.replay()
        return entry.logits

    def _capture(self, entry: Captured, span: int) -> None:
        # Warm-up runs really execute and write keys/values at entry.pos: these are the positions
        # and tokens of the call being served, so they write what the replay then writes again.
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            for _ in range(2):
                static_forward(self.model, entry.tokens, entry.pos, span)
        torch.cuda.current_stream().wait_stream(self.stream)
        entry.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(entry.graph, pool=self.pool, stream=self.stream):
            entry.logits = static_forward(self.model, entry.tokens, entry.pos, span)
        self.pool = entry.graph.pool()
