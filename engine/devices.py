"""Choosing where a model runs and in which precision."""

from __future__ import annotations

import os

import torch

from .config import ModelConfig
from .errors import SpectabError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Above this many parameters a float32 copy stops fitting a typical machine's memory (7B = 27 GB).
CPU_FLOAT32_MAX_PARAMS = 3e9


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SpectabError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpectabError(f"device '{name}' asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SpectabError("device 'mps' asked for, but Metal is not available here; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device, cfg: ModelConfig | None = None) -> torch.dtype:
    """`auto`: bfloat16 on CUDA (float16 where the GPU lacks bf16), float16 on MPS, float32 on the
    CPU unless the model is too large for float32 to fit comfortably, then bfloat16."""
    if name != "auto":
        if name not in DTYPES:
            raise SpectabError(f"unknown dtype '{name}'; use auto, {', '.join(DTYPES)}")
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    if cfg is not None and parameter_count(cfg) > CPU_FLOAT32_MAX_PARAMS:
        return torch.bfloat16
    return torch.float32


def parameter_count(cfg: ModelConfig) -> int:
    attn = cfg.hidden_size * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    ffn = 3 * cfg.hidden_size * cfg.intermediate_size
    embed = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    return cfg.num_layers * (attn + ffn) + embed


def physical_cores() -> int:
    """Cores this process may run on, counting hyper-threads of one core once (Linux topology;
    elsewhere the logical count). Matrix kernels gain nothing from a core's second thread."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topo}/physical_package_id") as a, open(f"{topo}/core_id") as b:
                cores.add((a.read().strip(), b.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def set_threads(n: int = 0) -> int:
    """Use `n` CPU threads for the models (0: the physical cores); returns the number set."""
    if not 0 <= n <= 1024:
        raise SpectabError(f"threads must be 0 (the physical cores) or a positive count, not {n}")
    n = n or physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
