"""`spectab train prepare | run | distill | export | eval` (and `python -m training ...`, the same
commands, for torchrun)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.errors import SpectabError

from .config import TrainConfig, add_override_flags, apply_overrides


def add_commands(sub) -> None:
    train = sub.add_parser("train", help="prepare data, train, distill, export and evaluate draft models",
                           description="Reproduce AMD-Llama-135m(-code) and train drafts for other targets.")
    add_subcommands(train.add_subparsers(dest="train_command", metavar="ACTION", required=True))


def add_subcommands(tsub) -> None:
    p = tsub.add_parser("prepare", help="tokenize documents into checked token shards",
                        description="Tokenize local files/folders (text, code, .jsonl, .parquet) or Hugging Face datasets "
                        "(hf:NAME; cerebras/SlimPajama-627B, manu/project_gutenberg and bigcode/starcoderdata use AMD's "
                        "filters) into token shards; rerun the same command to resume.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="file, folder or hf:DATASET")
    p.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder, hub id or .gguf file")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="tokenizer processes")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per train shard (default 100M)")
    p.add_argument("--val-every", type=int, default=1000, help="every N-th document goes to validation (0: none)")
    p.add_argument("--text-field", default="text", help="the text field of .jsonl/.parquet rows (default: text)")
    p.add_argument("--limit-docs", type=int, default=0, help="stop after this many documents (resumable)")
    p.set_defaults(run=run_prepare)

    for name, about in (("run", "train a model (pretrain or fine-tune)"),
                        ("distill", "train a draft on a target model's distribution (--teacher)")):
        p = tsub.add_parser(name, help=about, description=f"{about[0].upper()}{about[1:]}. The same command runs on one CPU, "
                            "one GPU, or under torchrun on many GPUs and nodes.")
        p.add_argument("--preset", default=None, help="amd-llama-135m, amd-llama-135m-code, amd-llama-135m-code-fim or tiny")
        p.add_argument("--config", default=None, help="a config.json saved by an earlier run")
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
        p.add_argument("--stop-after", type=int, default=0, metavar="STEPS", help="stop (with a checkpoint) after this many steps")
        p.add_argument("--time-limit", type=float, default=0, metavar="MINUTES", help="stop (with a checkpoint) after this long")
        add_override_flags(p)
        p.set_defaults(run=run_train, distill=name == "distill")

    p = tsub.add_parser("export", help="write a Hugging Face folder that spectab complete --draft loads")
    p.add_argument("checkpoint", help="a ckpt-*.pt file or a run folder (its newest checkpoint)")
    p.add_argument("out", help="the folder to write")
    p.add_argument("--tokenizer", default=None, help="override the run's tokenizer")
    p.set_defaults(run=run_export)

    p = tsub.add_parser("eval", help="validation loss, and acceptance against a target",
                        description="Validation loss and perplexity; with --target, the draft's acceptance rate against "
                        "that target on held-out text, measured with the engine, and the speedup it implies: at "
                        "left-to-right cursors (nothing after them) and, for an infilling target, at infilling "
                        "cursors (code after them), the draft reading the kind of prompt it was trained on.")
    p.add_argument("checkpoint", help="a ckpt-*.pt file or a run folder")
    p.add_argument("--data", nargs="+", default=(), help="prepared datasets (default: the run's)")
    p.add_argument("--target", default="", help="the target model to draft for")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--k", type=int, default=4, help="tokens drafted per round")
    p.set_defaults(run=run_eval)


def resolve_config(args) -> TrainConfig:
    if args.config:
        try:
            cfg = TrainConfig.from_json(json.loads(Path(args.config).read_text()))
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise SpectabError(f"cannot read config {args.config}: {err}") from None
    else:
        from .presets import preset

        cfg = preset(args.preset or "tiny")
    return apply_overrides(cfg, args)


def run_prepare(args) -> int:
    from .prepare import prepare

    m = prepare(args.sources, Path(args.out), args.tokenizer, args.workers, args.shard_tokens, args.val_every,
                args.text_field, limit_docs=args.limit_docs)
    state = "done" if m["done"] else f"stopped after {m['docs_done']} documents (rerun to continue)"
    print(f"{args.out}: {m['tokens']['train']:,} train and {m['tokens']['val']:,} validation tokens "
          f"in {len(m['shards']['train'])} + {len(m['shards']['val'])} shards; {state}")
    return 0


def run_train(args) -> int:
    from .trainer import run

    cfg = resolve_config(args)
    if args.distill and not cfg.teacher:
        raise SpectabError("distill needs --teacher MODEL (the target whose distribution the draft learns)")
    if not cfg.tokenizer:
        raise SpectabError("set --tokenizer (the one the data was prepared with)")
    if not cfg.data:
        raise SpectabError("set --data (folders from `spectab train prepare`)")
    logs = run(cfg, resume=args.resume, stop_after=args.stop_after, time_limit_s=args.time_limit * 60)
    if logs and int(os.environ.get("RANK", 0)) == 0:
        last = logs[-1]
        val = f", validation loss {last.val_loss:.4f}" if last.val_loss is not None else ""
        print(f"step {last.step + 1}: loss {last.loss:.4f}{val}; checkpoints in {cfg.out_dir}")
    return 0


def run_export(args) -> int:
    from .export import export

    out = export(Path(args.checkpoint), Path(args.out), args.tokenizer)
    print(f"exported to {out}")
    return 0


def run_eval(args) -> int:
    from .evaluate import run_eval

    result = run_eval(Path(args.checkpoint), tuple(args.data), args.target, args.prompts, args.new_tokens, args.k)
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m training ACTION ...`: the train commands on their own, as torchrun starts them."""
    from engine.errors import first_line
    from engine.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m training", description="spectab training (see spectab train --help)")
    add_subcommands(parser.add_subparsers(dest="train_command", metavar="ACTION", required=True))
    args = parser.parse_args(argv)
    setup_logging(verbose=False, quiet=int(os.environ.get("RANK", 0)) != 0)  # one rank talks
    try:
        return args.run(args) or 0
    except SpectabError as err:
        print(f"spectab: error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:
        if os.environ.get("SPECTAB_DEBUG") == "1":
            raise
        print(f"spectab: internal error: {type(err).__name__}: {first_line(err)} (set SPECTAB_DEBUG=1 for the traceback)",
              file=sys.stderr, flush=True)
        return 1
