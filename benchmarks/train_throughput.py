"""Training throughput of the exact AMD-Llama-135m config: tokens/s and MFU per device.

Random token ids stand in for data (throughput does not depend on their values), prepared as real
shards with the Llama-2 tokenizer from tests/fixtures, so the whole training path runs: loader,
bf16 autocast, optimiser, gradient clipping. Reported: the median over the steps after warm-up.
Run it on a GPU (under torchrun for several); on a CPU, shrink it with --seq-len/--micro-batch.

    python benchmarks/train_throughput.py [--steps 30] [--seq-len 2048] [--micro-batch 16] [--compile]
    torchrun --standalone --nproc-per-node=gpu benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from training.presets import preset  # noqa: E402
from training.shards import tokenizer_fingerprint, write_shard  # noqa: E402
from training.tokenizer import load_tokenizer  # noqa: E402
from training.trainer import run  # noqa: E402

TOKENIZER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ggml-vocab-llama-spm.gguf"


def fake_dataset(folder: Path, tokens: int, seed: int = 0) -> None:
    tok = load_tokenizer(str(TOKENIZER))
    fingerprint = tokenizer_fingerprint(tok.pieces())
    ids = np.random.default_rng(seed).integers(3, tok.vocab_size, size=tokens, dtype=np.uint32)
    folder.mkdir(parents=True, exist_ok=True)
    write_shard(folder / "train-00000.bin", ids, tok.vocab_size, fingerprint)
    manifest = {"version": 1, "tokenizer": str(TOKENIZER), "fingerprint": fingerprint.hex(), "vocab_size": tok.vocab_size,
                "eos_id": tok.eos_id, "sources": ["random"], "val_every": 0, "docs_done": 1, "done": True,
                "shards": {"train": [{"file": "train-00000.bin", "tokens": tokens}], "val": []}, "tokens": {"train": tokens, "val": 0}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--accumulation", type=int, default=1, help="micro-batches per step and rank")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--parallel", default="ddp")
    args = ap.parse_args()
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random"
        step_tokens = args.seq_len * args.micro_batch * args.accumulation * world
        if rank == 0:
            fake_dataset(data, step_tokens * 4 + 1)
        if world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            dist.barrier()  # the data exists before anyone reads it
        cfg = replace(preset("amd-llama-135m"), tokenizer=str(TOKENIZER), data=(str(data),), out_dir=str(Path(tmp) / "run"),
                      seq_len=args.seq_len, micro_batch=args.micro_batch, global_batch_tokens=step_tokens,
                      max_tokens=step_tokens * args.steps, warmup_steps=5, eval_every=0, ckpt_every=0, log_every=5,
                      compile=args.compile, parallel=args.parallel)
        logs = run(cfg)
    if rank != 0:
        return
    steady = logs[min(5, len(logs) - 1):]  # the first steps include warm-up (and compilation)
    tps = statistics.median(l.tokens_per_s for l in steady)
    mfu = [l.mfu for l in steady if l.mfu is not None]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    per_device = tps / world
    days = 670e9 / (per_device * 8) / 86400
    rows = [[device, world, args.seq_len, args.micro_batch * args.accumulation, f"{per_device:,.0f}",
             f"{statistics.median(mfu):.1%}" if mfu else "n/a", f"{days:.1f}"]]
    command = "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
    write_results("train_throughput", command, {"tokens_per_s": tps, "per_device": per_device, "mfu": mfu, "world": world}, rows,
                  ["device", "devices", "sequence", "sequences per device per step", "tokens/s per device", "MFU",
                   "days for 670B tokens on 8 such devices"],
                  "AMD-Llama-135m config (134M parameters), bf16 autocast on GPU, AdamW, random tokens; median after 5 steps. "
                  "AMD's own run: about 40k tokens/s per MI250 device (670B tokens, 6 days, 32 devices).")


if __name__ == "__main__":
    main()
