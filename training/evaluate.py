"""`spectab train eval`: validation loss and perplexity of a trained draft, and, given a target,
how well it drafts for that target, measured with the engine on held-out text."""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.errors import SpectabError

from .data import parse_data
from .distributed import TrainModule, World
from .export import export, load_trained
from .shards import tokenizer_fingerprint
from .tokenizer import load_tokenizer
from .trainer import _val_split, evaluate


def acceptance(draft_folder: Path, target: str, texts: list[str], new_tokens: int = 32, k: int = 4) -> dict:
    """Greedy speculative decoding of `texts` (prefixes) with a fixed draft length k: the share of
    drafted tokens the target accepts, the per-token acceptance a (a round that accepts m of n saw m
    successes and one failure if m < n), and the speedup that implies where a verify costs one
    target step and a draft step costs the draft/target parameter ratio of one (memory-bound)."""
    from engine.completer import Completer, EngineOptions
    from engine.devices import parameter_count
    from engine.loading import load_model

    target_model = load_model(target, allow_download=True)
    draft_model = load_model(str(draft_folder), device=str(target_model.model.embed.weight.device))
    opts = EngineOptions(context_tokens=512, max_new_tokens_limit=new_tokens, k=k, k_min=k, k_max=k, adaptive=False,
                         min_confidence=0.0)
    c = Completer(target_model, draft_model, "none", opts)
    proposed = accepted = rejections = 0
    for text in texts:
        s = c.complete(text, "", new_tokens).stats
        proposed, accepted, rejections = proposed + s.draft_proposed, accepted + s.draft_accepted, rejections + s.draft_rounds_rejected
    a = accepted / (accepted + rejections) if accepted + rejections else 0.0
    ratio = parameter_count(draft_model.config) / parameter_count(target_model.config)
    tokens_per_round = (1 - a ** (k + 1)) / (1 - a) if a < 1 else k + 1
    return {
        "prompts": len(texts), "drafted": proposed, "accepted": accepted,
        "acceptance": accepted / proposed if proposed else 0.0, "alpha": a,
        "tokens_per_round": tokens_per_round, "draft_cost_ratio": ratio,
        "expected_speedup": tokens_per_round / (1 + k * ratio),
    }


def run_eval(path: Path, data: tuple[str, ...] = (), target: str = "", prompts: int = 16, new_tokens: int = 32,
             k: int = 4) -> dict:
    model, cfg = load_trained(path)
    if data:
        cfg = replace(cfg, data=data)
    tok = load_tokenizer(cfg.tokenizer)
    fingerprint = tokenizer_fingerprint(tok.pieces())
    val = [d for d in (_val_split(p, cfg.seq_len, fingerprint) for p, _ in parse_data(cfg.data)) if d is not None]
    if not val:
        raise SpectabError("no validation split in the data; prepare it with --val-every > 0")
    import torch

    world = World(0, 1, 0, torch.device("cpu"))
    loss = evaluate(TrainModule(model), val, cfg, world)
    result = {"checkpoint": str(path), "val_loss": loss, "perplexity": math.exp(loss)}
    if target:
        texts = held_out_texts(val, tok, prompts, cfg.seq_len)
        with tempfile.TemporaryDirectory() as tmp:
            folder = export(path, Path(tmp) / "draft")
            result["target"] = target
            result.update(acceptance(folder, target, texts, new_tokens, k))
    return result


def held_out_texts(val, tok, n: int, seq_len: int) -> list[str]:
    """Prefixes from the validation split: the first half of windows spread over it."""
    ds = val[0]
    picks = np.linspace(0, ds.windows - 1, num=min(n, ds.windows)).astype(int)
    texts = []
    for i in picks:
        ids = [int(t) for t in ds.window(int(i))[: seq_len // 2] if int(t) != tok.eos_id]
        texts.append(tok.decode(ids))
    return [t for t in texts if t.strip()]

