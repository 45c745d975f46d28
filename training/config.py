"""The training configuration: one typed record, the single source of truth for a run.

Presets (training/presets/) fill it in; every field can be overridden on the command line
(`--lr 3e-4`, `--model.hidden_size 64`); the resolved config is saved with every checkpoint.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from engine.config import ModelConfig
from engine.errors import SpectabError


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    """The Llama shape to train (see engine/config.py)."""
    tokenizer: str = ""
    """Tokenizer the data was prepared with: hub id, folder or .gguf (checked against the shards)."""
    data: tuple[str, ...] = ()
    """Prepared datasets (folders from `spectab train prepare`), each `PATH` or `PATH:WEIGHT`."""
    out_dir: str = "runs/spectab"
    """Checkpoints, the resolved config and log.jsonl go here."""

    seq_len: int = 2048
    """Tokens per training sequence (documents are packed into windows of this length)."""
    global_batch_tokens: int = 1024 * 2048
    """Tokens per optimiser step over all ranks; must be a multiple of seq_len. Micro-batches and
    gradient accumulation are derived from it and the real world size, so a step always sees this
    many tokens whatever the number of GPUs."""
    micro_batch: int = 8
    """Sequences per rank per forward/backward."""

    max_tokens: int = 670_000_000_000
    """Tokens to train on; steps = max_tokens / global_batch_tokens (rounded up)."""
    lr: float = 6e-4
    """Peak learning rate (after warm-up)."""
    min_lr: float = 6e-5
    """Learning rate at the end of the cosine decay."""
    warmup_steps: int = 2000
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    """Applied to matrices only (not to norms)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""

    precision: str = "auto"
    """auto (bf16 autocast on GPU, float32 on CPU), bf16, fp32."""
    compile: bool = False
    """torch.compile the model."""
    parallel: str = "ddp"
    """ddp (replicated weights) or fsdp (FSDP2 fully_shard) under torchrun."""
    seed: int = 1337
    """Seeds initialisation and the data order."""

    fim_rate: float = 0.0
    """Share of documents laid out for fill-in-the-middle (CodeLlama: 0.9); needs a tokenizer with
    infilling tokens. Cut points and order are drawn from the seed and the sequence number."""
    fim_spm_rate: float = 0.5
    """Share of the infilling documents in SPM order (suffix first), the rest PSM (CodeLlama: 0.5)."""

    init_from: str = ""
    """Start from these weights (hub id, Hugging Face folder, .gguf) instead of random ones."""
    vocab_from: str = ""
    """With init_from: grow the model's vocabulary to this tokenizer's (its first ids must be the
    model's own), e.g. a 32000-token draft to CodeLlama's 32016. The new embedding and output rows
    start as the mean of the existing ones; set --model.vocab_size to the tokenizer's size."""
    teacher: str = ""
    """distill: the target model whose distribution the draft learns."""
    distill_temperature: float = 1.0
    distill_weight: float = 1.0
    """distill: loss = weight * KL(teacher || draft) + (1 - weight) * cross-entropy."""

    log_every: int = 10
    eval_every: int = 500
    """Validation loss every this many steps (0 = only at the end)."""
    eval_batches: int = 20
    ckpt_every: int = 1000
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted."""
    peak_tflops: float = 0.0
    """Peak dense bf16 TFLOPS of one device, for MFU (0 = look the device up)."""

    @property
    def steps(self) -> int:
        return -(-self.max_tokens // self.global_batch_tokens)

    @property
    def sequences_per_step(self) -> int:
        return self.global_batch_tokens // self.seq_len

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per rank per step; refuses shapes that do not divide."""
        if self.global_batch_tokens % self.seq_len:
            raise SpectabError(f"global_batch_tokens {self.global_batch_tokens} is not a multiple of seq_len {self.seq_len}")
        per_rank, rest = divmod(self.sequences_per_step, world_size)
        if rest:
            raise SpectabError(f"{self.sequences_per_step} sequences per step do not divide over {world_size} ranks; "
                               f"choose global_batch_tokens as a multiple of {self.seq_len * world_size}")
        accum, rest = divmod(per_rank, self.micro_batch)
        if rest or not accum:
            raise SpectabError(f"{per_rank} sequences per rank do not divide into micro-batches of {self.micro_batch}; "
                               f"choose micro_batch among {_divisors(per_rank)}")
        return accum

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data["model"] = ModelConfig(**data["model"])
        data["data"] = tuple(data.get("data", ()))
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2))


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field: `--lr`, `--global_batch_tokens`, `--model.hidden_size`, ..."""
    group = parser.add_argument_group("config overrides (any field of TrainConfig / ModelConfig)")
    for f in fields(TrainConfig):
        if f.name == "model":
            continue
        kind = "LIST" if f.name == "data" else f.type
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        group.add_argument(*names, dest=f"cfg.{f.name}", default=None, metavar=str(kind).upper()[:12],
                           nargs="+" if f.name == "data" else None, help=_doc(TrainConfig, f.name))
    for f in fields(ModelConfig):
        group.add_argument(f"--model.{f.name}", dest=f"cfg.model.{f.name}", default=None, metavar=str(f.type).upper()[:12])


def apply_overrides(cfg: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    top, model = {}, {}
    for key, value in vars(args).items():
        if not key.startswith("cfg.") or value is None:
            continue
        name = key[4:]
        if name.startswith("model."):
            f = next(f for f in fields(ModelConfig) if f.name == name[6:])
            model[f.name] = _parse(f.name, value, _default_of(f, ModelConfig))
        else:
            f = next(f for f in fields(TrainConfig) if f.name == name)
            top[name] = tuple(value) if name == "data" else _parse(name, value, _default_of(f, TrainConfig))
    if model:
        top["model"] = replace(cfg.model, **model)
    return replace(cfg, **top)


def _default_of(f, cls) -> Any:
    if f.default is not MISSING:
        return f.default
    return None


def _parse(name: str, text: str, example: Any) -> Any:
    try:
        if isinstance(example, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(example, int):
            return int(float(text)) if "e" in text.lower() else int(text)
        if isinstance(example, float):
            return float(text)
        if example is None:  # ModelConfig fields without defaults are all ints
            return int(text)
        return text
    except ValueError:
        raise SpectabError(f"--{name}: '{text}' is not a valid {type(example).__name__ if example is not None else 'int'}") from None


def _doc(cls, name: str) -> str:
    # the docstring under each field is the help text
    import inspect

    src = inspect.getsource(cls)
    marker = f"    {name}:"
    i = src.find(marker)
    if i < 0:
        return ""
    rest = src[i:].split("\n", 2)
    if len(rest) > 1 and rest[1].strip().startswith('"""'):
        doc = rest[1].strip().strip('"')
        return doc.replace("%", "%%")
    return ""


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 64) + 1) if n % d == 0)

