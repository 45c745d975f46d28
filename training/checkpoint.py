"""Checkpoints that resume exactly: model, optimiser, step (which is also the data position), RNG
states and the resolved config, written atomically; the last `keep_last` are kept."""

from __future__ import annotations

import os
import random
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import SpectabError

from .config import TrainConfig

NAME = re.compile(r"^ckpt-(\d{8})\.pt$")
# fields that may differ between the run that wrote a checkpoint and the run resuming it
RESUMABLE_CHANGES = {"out_dir", "log_every", "eval_every", "eval_batches", "ckpt_every", "keep_last", "compile",
                     "peak_tflops", "micro_batch", "parallel", "precision", "max_tokens"}


def checkpoints(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.glob("ckpt-*.pt") if NAME.match(p.name))


def latest(path: Path) -> Path | None:
    """`path` itself if it is a checkpoint file, else the newest checkpoint in that folder."""
    if path.is_file():
        return path
    found = checkpoints(path) if path.is_dir() else []
    return found[-1] if found else None


def save(out_dir: Path, step: int, cfg: TrainConfig, model_state: dict, optim_state: dict, keep_last: int) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"ckpt-{step:08d}.pt"
    state = {
        "step": step,
        "config": cfg.to_json(),
        "model": model_state,
        "optimizer": optim_state,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint under the real name
    for old in checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink()
    return path


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise SpectabError(f"cannot read checkpoint {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}; "
                           "it may be truncated: resume from an older one") from None


def check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint written by a run with another model, data or schedule."""
    old = TrainConfig.from_json(saved["config"])
    if old.model != cfg.model:
        diff = [f"{k} {v} -> {getattr(cfg.model, k)}" for k, v in asdict(old.model).items() if getattr(cfg.model, k) != v]
        raise SpectabError(f"{path} is from another model ({', '.join(diff)}); use a new --out_dir or the same model config")
    for key, value in asdict(old).items():
        if key != "model" and key not in RESUMABLE_CHANGES and getattr(cfg, key) != value:
            raise SpectabError(f"{path} was written with {key}={value!r}, this run has {getattr(cfg, key)!r}; "
                               "resume with the same setting or start a new --out_dir")


def restore_rng(saved: dict) -> None:
    rng = saved["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def model_state(model: nn.Module, llama: nn.Module, fsdp: bool) -> dict:
    """The full (unsharded) weights, on the CPU."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k.removeprefix("llama."): v for k, v in full.items()}
    return {k: v.detach().cpu() for k, v in llama.state_dict().items()}
