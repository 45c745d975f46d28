"""The training loop, for `run` (next-token cross-entropy) and `distill` (the teacher's distribution).

One command from one CPU to many GPU nodes: the global batch is fixed in tokens; each rank takes its
slice of every step's sequences and accumulates gradients over micro-batches.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import ModelConfig
from engine.errors import SpectabError
from engine.model import Llama

from . import checkpoint
from .config import TrainConfig
from .data import Dataset, Mixture, parse_data
from .fim import FimTransform
from .distributed import TrainModule, World, join, leave, mean, wrap
from .shards import tokenizer_fingerprint
from .tokenizer import load_tokenizer

log = logging.getLogger("spectab")

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
               "MI300X": 1307.0, "MI250": 181.0, "4090": 165.0}
"""Dense bf16 tensor TFLOPS per device (an MI250 counts as its two dies, each 181)."""


@dataclass
class StepLog:
    step: int
    loss: float
    lr: float
    tokens_per_s: float
    mfu: float | None
    val_loss: float | None = None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def init_weights(model: Llama, seed: int) -> None:
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            torch.nn.init.ones_(p)
        else:
            torch.nn.init.normal_(p, std=0.02)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """6 x matmul parameters (forward + backward) plus attention's score and value products."""
    from engine.devices import parameter_count

    matmul = parameter_count(cfg) - cfg.vocab_size * cfg.hidden_size  # the embedding is a lookup
    return 6 * matmul + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


def peak_tflops(cfg: TrainConfig, device: torch.device) -> float:
    if cfg.peak_tflops:
        return cfg.peak_tflops
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)


def run(cfg: TrainConfig, resume: bool = False, stop_after: int = 0, time_limit_s: float = 0.0) -> list[StepLog]:
    """Train (or distill, when cfg.teacher is set); returns the step logs of this process."""
    world = join()
    try:
        return _run(cfg, world, resume, stop_after, time_limit_s)
    finally:
        leave()


def _run(cfg: TrainConfig, world: World, resume: bool, stop_after: int, time_limit_s: float) -> list[StepLog]:
    out = Path(cfg.out_dir)
    accum = cfg.accumulation(world.size)
    per_rank = cfg.sequences_per_step // world.size
    tok = load_tokenizer(cfg.tokenizer)
    fingerprint = tokenizer_fingerprint(tok.pieces())
    if tok.vocab_size > cfg.model.vocab_size:
        raise SpectabError(f"the tokenizer has {tok.vocab_size} tokens but the model only {cfg.model.vocab_size}; set --model.vocab_size")
    specs = parse_data(cfg.data)
    fim = FimTransform(tok, cfg.fim_rate, cfg.fim_spm_rate, cfg.seed) if cfg.fim_rate > 0 else None
    train = Mixture([Dataset(p, "train", cfg.seq_len, fingerprint) for p, _ in specs], [w for _, w in specs], cfg.seed, fim)
    val = [d for d in (_val_split(p, cfg.seq_len, fingerprint) for p, _ in specs) if d is not None]

    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if world.device.type == "cuda" else "fp32")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" and world.device.type == "cuda" else nullcontext()

    if cfg.vocab_from and not cfg.init_from:
        raise SpectabError("--vocab_from grows the vocabulary of a model given with --init_from; set both")
    llama = Llama(cfg.model)
    if cfg.init_from:
        llama = _load_initial(llama, cfg.init_from, cfg.vocab_from)
    else:
        init_weights(llama, cfg.seed)
    llama.to(world.device)
    teacher = _teacher(cfg, tok, world) if cfg.teacher else None
    module = TrainModule(torch.compile(llama) if cfg.compile else llama)
    model = wrap(module, world, cfg.parallel)
    fsdp = cfg.parallel == "fsdp" and world.size > 1
    decay = [p for n, p in llama.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in llama.named_parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=world.device.type == "cuda")

    start = 0
    if resume:
        path = checkpoint.latest(out)
        if path is None:
            raise SpectabError(f"--resume: no checkpoint in {out}")
        saved = checkpoint.load(path)
        checkpoint.check_resumable(saved, cfg, path)
        _restore(model, llama, optim, saved, fsdp)
        checkpoint.restore_rng(saved)
        start = saved["step"] + 1
        if world.main:
            log.info("resumed from %s at step %d", path, start)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        log.info("%s: %d steps of %d tokens (%d sequences: %d ranks x %d micro-batches x %d), %.1fM parameters",
                 "distilling" if teacher else "training", cfg.steps, cfg.global_batch_tokens, cfg.sequences_per_step,
                 world.size, accum, cfg.micro_batch, sum(p.numel() for p in llama.parameters()) / 1e6)

    peak = peak_tflops(cfg, world.device)
    per_token = flops_per_token(cfg.model, cfg.seq_len)
    logs: list[StepLog] = []
    jsonl = open(out / "log.jsonl", "a") if world.main else None
    started = time.perf_counter()
    model.train()
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optim.param_groups:
                group["lr"] = lr
            total = torch.zeros((), device=world.device)
            for i in range(accum):
                first = step * cfg.sequences_per_step + world.rank * per_rank + i * cfg.micro_batch
                batch = train.batch(first, cfg.micro_batch).to(world.device, non_blocking=True)
                x, y = batch[:, :-1], batch[:, 1:]
                _sync_gradients(model, i == accum - 1, fsdp)
                with autocast:
                    logits = model(x)
                    loss = _loss(logits, x, y, teacher, cfg)
                (loss / accum).backward()
                total += loss.detach() / accum
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optim.step()
            optim.zero_grad(set_to_none=True)
            if world.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            loss_all = mean(total.item(), world)
            tps = cfg.global_batch_tokens / seconds
            entry = StepLog(step, loss_all, lr, tps, per_token * tps / (peak * 1e12 * world.size) if peak else None)
            last = step == cfg.steps - 1 or (stop_after and step + 1 - start >= stop_after) or \
                (time_limit_s and time.perf_counter() - started > time_limit_s)
            if val and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last):
                entry.val_loss = mean(evaluate(model, val, cfg, world, autocast), world)
            logs.append(entry)
            if world.main:
                jsonl.write(json.dumps(entry.__dict__) + "\n")
                jsonl.flush()
                if step % cfg.log_every == 0 or last or entry.val_loss is not None:
                    _print(entry, cfg, started, step - start + 1)
            if (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0) or last:
                _save(out, step, cfg, model, llama, optim, fsdp, world)
            if last:
                break
    finally:
        if jsonl:
            jsonl.close()
    return logs


def _loss(logits, x, y, teacher, cfg: TrainConfig) -> torch.Tensor:
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    if teacher is None or cfg.distill_weight == 0:
        return ce
    with torch.no_grad():
        t_logits = teacher.train_logits(x).float()[..., : logits.shape[-1]]
    T = cfg.distill_temperature
    # KL(teacher || draft) on the draft's vocabulary (a 32016-token teacher's extra ids dropped)
    kl = F.kl_div(F.log_softmax(logits.float() / T, -1).flatten(0, 1), F.log_softmax(t_logits / T, -1).flatten(0, 1),
                  log_target=True, reduction="batchmean") * T * T
    return cfg.distill_weight * kl + (1 - cfg.distill_weight) * ce


@torch.no_grad()
def evaluate(model, val: list[Dataset], cfg: TrainConfig, world: World, autocast=nullcontext()) -> float:
    """Mean validation loss over the first eval_batches micro-batches of each dataset's val split
    (each rank takes every world.size-th batch). `model` maps tokens to logits: the wrapped
    training module (FSDP gathers its shards in forward) or a TrainModule."""
    was = model.training
    model.eval()
    losses = []
    for ds in val:
        for b in range(world.rank, cfg.eval_batches, world.size):
            rows = [ds.window((b * cfg.micro_batch + r) % ds.windows) for r in range(cfg.micro_batch)]
            batch = torch.from_numpy(np.stack(rows).astype(np.int64)).to(world.device)
            with autocast:
                logits = model(batch[:, :-1])
            losses.append(F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()).item())
    if hasattr(model, "reshard"):
        model.reshard()  # FSDP2 keeps the root gathered after a forward without backward
    model.train(was)
    return sum(losses) / len(losses) if losses else float("nan")


def _val_split(path: str, seq_len: int, fingerprint: bytes) -> Dataset | None:
    manifest = json.loads((Path(path) / "manifest.json").read_text()) if (Path(path) / "manifest.json").is_file() else {}
    if not manifest.get("shards", {}).get("val"):
        return None
    return Dataset(path, "val", seq_len, fingerprint)


def _sync_gradients(model, last: bool, fsdp: bool) -> None:
    # accumulate locally and all-reduce once per step, on the last micro-batch
    if fsdp:
        model.set_requires_gradient_sync(last)
    elif hasattr(model, "require_backward_grad_sync"):
        model.require_backward_grad_sync = last


def _load_initial(llama: Llama, spec: str, vocab_from: str = "") -> Llama:
    """`llama` with the weights of `spec`; with `vocab_from`, the weights of a smaller vocabulary
    grown to the configured one."""
    from engine.loading import load_tokenizer as engine_tokenizer
    from engine.loading import read_config, resolve, weight_reader
    from engine.model import load_hf_weights
    from engine.tokens import check_compatible

    from .vocab import grow_vocab

    folder = resolve(spec, allow_download=True)
    saved = expected = read_config(folder)
    if vocab_from:
        bigger = load_tokenizer(vocab_from)
        if bigger.vocab_size != llama.config.vocab_size:
            raise SpectabError(f"--vocab_from {vocab_from} has {bigger.vocab_size} tokens; set --model.vocab_size {bigger.vocab_size}")
        check_compatible(engine_tokenizer(str(folder)), bigger)  # the old ids mean the same in the new vocabulary
        expected = replace(saved, vocab_size=max(saved.vocab_size, bigger.vocab_size))
    if expected != llama.config:
        raise SpectabError(f"--init_from {spec} has another shape than the configured model ({saved} vs {llama.config})")
    if saved.vocab_size == llama.config.vocab_size:
        load_hf_weights(llama, weight_reader(folder))
        return llama
    small = Llama(saved)
    load_hf_weights(small, weight_reader(folder))
    return grow_vocab(small, llama.config.vocab_size)


def _teacher(cfg: TrainConfig, tok, world: World) -> Llama:
    from engine.loading import load_model
    from engine.tokens import check_compatible

    teacher = load_model(cfg.teacher, device=str(world.device), dtype="bfloat16" if world.device.type == "cuda" else "float32",
                         allow_download=True)
    check_compatible(tok, teacher.tokenizer)
    return teacher.model


def _restore(model, llama, optim, saved: dict, fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_state_dict(model, optim, model_state_dict={"llama." + k: v for k, v in saved["model"].items()},
                       optim_state_dict=saved["optimizer"], options=opts)
    else:
        llama.load_state_dict(saved["model"])
        optim.load_state_dict(saved["optimizer"])


def _save(out: Path, step: int, cfg: TrainConfig, model, llama, optim, fsdp: bool, world: World) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optim_state = get_optimizer_state_dict(model, optim, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        optim_state = optim.state_dict()
    weights = checkpoint.model_state(model, llama, fsdp)
    if world.main:
        path = checkpoint.save(out, step, cfg, weights, optim_state, cfg.keep_last)
        log.info("checkpoint %s", path)


def _print(e: StepLog, cfg: TrainConfig, started: float, done_steps: int) -> None:
    elapsed = time.perf_counter() - started
    eta = elapsed / done_steps * (cfg.steps - e.step - 1)
    parts = [f"step {e.step + 1}/{cfg.steps}", f"loss {e.loss:.4f}", f"lr {e.lr:.2e}", f"{e.tokens_per_s:,.0f} tok/s"]
    if e.mfu is not None:
        parts.append(f"MFU {e.mfu:.1%}")
    if e.val_loss is not None:
        parts.append(f"val {e.val_loss:.4f}")
    parts.append(f"eta {eta / 3600:.1f} h" if eta > 3600 else f"eta {eta:.0f} s")
    log.info(" | ".join(parts))
