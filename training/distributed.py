"""One process, or one of many under torchrun: who we are, and how the model is wrapped.

The same entry point runs everywhere: without torchrun's environment it is rank 0 of 1; under
`torchrun` it joins the process group (NCCL on GPUs, gloo on CPUs) that torchrun's c10d rendezvous
set up, on one node or many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from engine.errors import SpectabError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def join() -> World:
    rank, size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local, device)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean(value: float, world: World) -> float:
    """The mean of a number over all ranks."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return float(t.item()) / world.size


class TrainModule(nn.Module):
    """forward() is the training forward: DDP and FSDP hook forward, not other methods."""

    def __init__(self, llama):
        super().__init__()
        self.llama = llama

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.llama.train_logits(tokens)


def wrap(module: TrainModule, world: World, parallel: str) -> nn.Module:
    if parallel not in ("ddp", "fsdp"):
        raise SpectabError(f"--parallel must be ddp or fsdp, not '{parallel}'")
    if world.size == 1:
        return module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[world.local_rank] if world.device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for block in module.llama.layers:
        fully_shard(block)
    fully_shard(module)
    return module
