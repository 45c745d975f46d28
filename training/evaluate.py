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


def acceptance(draft_folder: Path, target: str, texts: list, new_tokens: int = 32, k: int = 4,
               draft_fim: str = "auto") -> dict:
    """Greedy speculative decoding at `texts` (prefixes, or (prefix, suffix) cursors) with a fixed
    draft length k: the share of drafted tokens the target accepts, the per-token acceptance a (a
    round that accepts m of n saw m successes and one failure if m < n), and the speedup that
    implies where a verify costs one target step and a draft step costs the draft/target parameter
    ratio of one (memory-bound). The target reads its own prompt (infilling when it can); the
    draft reads the same one when it infills and `draft_fim` is auto, else the prefix."""
    return measure(completer(draft_folder, target, new_tokens, k), texts, new_tokens, draft_fim)


def completer(draft_folder: Path, target: str, new_tokens: int = 32, k: int = 4):
    from engine.completer import Completer, EngineOptions
    from engine.loading import load_model

    target_model = load_model(target, allow_download=True)
    draft_model = load_model(str(draft_folder), device=str(target_model.model.device))
    opts = EngineOptions(context_tokens=512, max_new_tokens_limit=new_tokens, k=k, k_min=k, k_max=k, adaptive=False,
                         min_confidence=0.0)
    return Completer(target_model, draft_model, "auto", opts)


def measure(c, texts: list, new_tokens: int, draft_fim: str = "auto") -> dict:
    from engine.devices import parameter_count

    k = c.options.k
    proposed = accepted = rejections = 0
    for item in texts:
        prefix, suffix = (item, "") if isinstance(item, str) else item
        s = c.complete(prefix, suffix, new_tokens, draft_fim=draft_fim).stats
        proposed, accepted, rejections = proposed + s.draft_proposed, accepted + s.draft_accepted, rejections + s.draft_rounds_rejected
    a = accepted / (accepted + rejections) if accepted + rejections else 0.0
    ratio = parameter_count(c.draft_info.config) / parameter_count(c.target_info.config)
    tokens_per_round = (1 - a ** (k + 1)) / (1 - a) if a < 1 else k + 1
    return {
        "prompts": len(texts), "drafted": proposed, "accepted": accepted,
        "acceptance": accepted / proposed if proposed else 0.0, "alpha": a,
        "tokens_per_round": tokens_per_round, "draft_cost_ratio": ratio,
        "expected_speedup": tokens_per_round / (1 + k * ratio),
        "draft_prompt": "infilling" if draft_fim == "auto" and c.draft_infills and c.fim != "none" else "left to right",
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
        # the draft reads the kind of prompt it was trained on: infilling after FIM training
        draft_fim = "auto" if cfg.fim_rate > 0 else "none"
        with tempfile.TemporaryDirectory() as tmp:
            c = completer(export(path, Path(tmp) / "draft"), target, new_tokens, k)
            result["target"] = target
            # left to right: nothing after the cursor (the end of a file); the top-level numbers
            ltr = measure(c, held_out_texts(val, tok, prompts, cfg.seq_len), new_tokens, draft_fim)
            result.update(ltr)
            result["left_to_right"] = ltr
            if c.fim != "none":  # the target infills: cursors with code after them
                result["infilling"] = measure(c, held_out_cursors(val, tok, prompts, cfg.seq_len), new_tokens, draft_fim)
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



def held_out_cursors(val, tok, n: int, seq_len: int) -> list[tuple[str, str]]:
    """Infilling cursors in the validation split: in windows spread over it, a line about halfway
    through is taken out and the cursor put after its indentation, the code after it kept."""
    ds = val[0]
    picks = np.linspace(0, ds.windows - 1, num=min(n, ds.windows)).astype(int)
    cursors = []
    for i in picks:
        ids = [int(t) for t in ds.window(int(i))[:seq_len]]
        ids = ids[: ids.index(tok.eos_id)] if tok.eos_id in ids else ids  # one document
        cursor = infill_cursor(tok.decode(ids).removeprefix(" ") if tok.adds_prefix_space else tok.decode(ids))
        if cursor is not None:
            cursors.append(cursor)
    return cursors


def infill_cursor(text: str, at: float = 0.5) -> tuple[str, str] | None:
    """(prefix, suffix) around the first non-blank line from `at` of `text` on: the cursor after
    that line's indentation, its code taken out (what the target fills in), the lines after it kept;
    None when no line with code after it is left."""
    lines = text.split("\n")
    i = int(len(lines) * at)
    while i < len(lines) - 1 and not lines[i].strip():
        i += 1
    if i >= len(lines) - 1 or not lines[i].strip() or not "".join(lines[i + 1:]).strip():
        return None
    indent = len(lines[i]) - len(lines[i].lstrip())
    return "\n".join(lines[:i] + [lines[i][:indent]]), "\n" + "\n".join(lines[i + 1:])
