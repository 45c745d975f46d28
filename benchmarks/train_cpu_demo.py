"""Training a small code draft on the CPU, for a bounded time, and measuring it as a draft.

Data: the Python standard library of the running interpreter (local Python sources, no download),
tokenized with SmolLM2-135M's tokenizer so the result drafts for the offline target. Two drafts of
the same shape train for the same wall time: one on the text alone (cross-entropy), one distilled
from SmolLM2-135M. Reported: steps and tokens seen, validation loss and perplexity, and the
acceptance against SmolLM2-135M on held-out code, measured with the engine (k = 4).

    python benchmarks/train_cpu_demo.py [--minutes 10] [--files 400]
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_results  # noqa: E402
from engine.config import ModelConfig  # noqa: E402
from engine.profiles import smollm2_gguf  # noqa: E402
from training.evaluate import run_eval  # noqa: E402
from training.prepare import prepare  # noqa: E402
from training.presets import preset  # noqa: E402
from training.trainer import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training time per draft")
    ap.add_argument("--files", type=int, default=400, help="standard-library files to train on")
    args = ap.parse_args()

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py"))[: args.files]
    target = str(smollm2_gguf())
    rows, data = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        src = tmp / "src"
        src.mkdir()
        for f in files:  # a flat copy: the selection is the corpus
            (src / f.name).write_text(f.read_text(encoding="utf-8", errors="replace"))
        manifest = prepare([str(src)], corpus, "smollm2-135m", workers=2, shard_tokens=50_000_000, val_every=20)
        model = ModelConfig(vocab_size=49152, hidden_size=192, num_layers=4, num_heads=3, num_kv_heads=3, head_dim=64,
                            intermediate_size=512, max_position_embeddings=512, tie_word_embeddings=True)
        base = replace(preset("tiny"), model=model, tokenizer="smollm2-135m", data=(str(corpus),), seq_len=256,
                       global_batch_tokens=8 * 256, micro_batch=8, max_tokens=100_000_000, lr=3e-3, min_lr=3e-4,
                       warmup_steps=50, eval_every=0, eval_batches=8, ckpt_every=0, log_every=50)
        for name, extra in (("text only (cross-entropy)", {}), ("distilled from SmolLM2-135M", {"teacher": target})):
            cfg = replace(base, out_dir=str(tmp / name.split()[0]), **extra)
            logs = run(cfg, time_limit_s=args.minutes * 60)
            result = run_eval(Path(cfg.out_dir), target=target, prompts=24, new_tokens=24, k=4)
            data[name] = {"steps": len(logs), "tokens": len(logs) * cfg.global_batch_tokens, **result}
            rows.append([name, len(logs), f"{len(logs) * cfg.global_batch_tokens:,}", f"{result['val_loss']:.3f}",
                         f"{result['perplexity']:.1f}", f"{result['acceptance']:.3f}", f"{result['alpha']:.3f}"])
            print(json.dumps(data[name]), flush=True)
    params = (model.vocab_size * model.hidden_size + model.num_layers * (4 * model.hidden_size ** 2 + 3 * model.hidden_size * model.intermediate_size)) / 1e6
    command = f"python benchmarks/train_cpu_demo.py --minutes {args.minutes:g} --files {args.files}"
    write_results("train_cpu_demo", command, {"corpus_tokens": manifest["tokens"], "drafts": data}, rows,
                  ["draft", "steps", "tokens seen", "val loss", "perplexity", "acceptance vs SmolLM2", "per-token alpha"],
                  f"{len(files)} files of Python {sys.version.split()[0]}'s standard library ({manifest['tokens']['train']:,} training "
                  f"tokens), SmolLM2's 49152-token vocabulary; a {params:.1f}M-parameter Llama (hidden 192, 4 layers, tied "
                  f"embeddings), sequences of 256, 2048 tokens a step, {args.minutes:g} minutes each on the CPU; acceptance "
                  "measured greedily with k = 4 on 24 held-out prefixes.")


if __name__ == "__main__":
    main()
