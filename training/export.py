"""Checkpoint -> a Hugging Face `LlamaForCausalLM` folder (safetensors, config, tokenizer) that
`spectab complete --draft PATH` and transformers load."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.errors import SpectabError
from engine.loading import save_folder
from engine.model import Llama

from . import checkpoint
from .config import TrainConfig
from .tokenizer import load_tokenizer


def load_trained(path: Path) -> tuple[Llama, TrainConfig]:
    """The model of a checkpoint (a file, or the newest one in a run folder)."""
    found = checkpoint.latest(path)
    if found is None:
        raise SpectabError(f"no checkpoint at {path} (a ckpt-*.pt file or a run folder holding them)")
    saved = checkpoint.load(found)
    cfg = TrainConfig.from_json(saved["config"])
    model = Llama(cfg.model)
    model.load_state_dict(saved["model"])
    return model.eval(), cfg


def export(path: Path, out: Path, tokenizer: str | None = None) -> Path:
    model, cfg = load_trained(path)
    tok = load_tokenizer(tokenizer or cfg.tokenizer)
    extra = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "torch_dtype": "float32"}
    with torch.no_grad():
        save_folder(model, tok.hf, out, extra_config=extra)
    return out
