"""`spectab models`, and the model options and file reading that `spectab complete` (in
lsp_server/complete_cli.py, which post-processes like the server) shares with the other commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import SpectabError
from .choices import QUANT_MODES
from .prompts import FIM_MODES


def add_commands(sub) -> None:
    models = sub.add_parser("models", help="list profiles and download models", description="Profiles and model downloads.")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = msub.add_parser("list", help="show the profiles and whether their models are here")
    ls.set_defaults(run=run_models_list)
    pull = msub.add_parser("pull", help="download a profile's models or a hub model into the Hugging Face cache")
    pull.add_argument("name", help="a profile (codellama-7b) or a Hugging Face hub id (org/name)")
    pull.set_defaults(run=run_models_pull)


def add_model_options(p: argparse.ArgumentParser, context_tokens: int = 2048) -> None:
    p.add_argument("--profile", default=None, help="codellama-7b, smollm2-135m or auto (the default)")
    p.add_argument("--target", default=None, metavar="MODEL", help="hub id, Hugging Face folder or .gguf file")
    p.add_argument("--draft", default=None, metavar="MODEL|ngram|none", help="draft model, prompt lookup (ngram) or none")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--fim", default=None, choices=FIM_MODES, help="infilling prompt: auto, psm, spm, none")
    p.add_argument("--quant", default="auto", metavar="auto|none|int8|int4",
                   help="weights: auto (on the CPU a GGUF keeps its int4/int8 precision, the rest int8; "
                        "float on GPUs), none (float), int8, int4 (CPU only)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (default 0: the physical cores)")
    p.add_argument("--context-tokens", type=int, default=context_tokens, metavar="N",
                   help=f"prompt budget in tokens (default {context_tokens})")


def check_model_options(args) -> None:
    """The model options' values, checked before anything loads (one line each)."""
    if args.quant not in QUANT_MODES:
        raise SpectabError(f"unknown --quant '{args.quant}'; use {', '.join(QUANT_MODES)}")
    if args.threads < 0:
        raise SpectabError(f"--threads must be 0 (the physical cores) or a positive count, not {args.threads}")


def parse_location(location: str) -> tuple[Path, int, int]:
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise SpectabError(f"'{location}' is not FILE:LINE:COL (1-based numbers, e.g. main.py:12:5)")
    line, col = int(parts[1]), int(parts[2])
    if line < 1 or col < 1:
        raise SpectabError(f"'{location}': LINE and COL start at 1")
    return Path(parts[0]), line, col


def read_source(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpectabError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpectabError(f"{path} is a folder, not a file") from None
    except OSError as err:
        raise SpectabError(f"cannot read {path}: {err.strerror}") from None
    if not data:
        raise SpectabError(f"{path} is empty: there is nothing to complete from")
    if b"\x00" in data:
        raise SpectabError(f"{path} looks binary (it has NUL bytes), not source text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpectabError(f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from None


def split_at(text: str, line: int, col: int, name: str) -> tuple[str, str]:
    """(prefix, suffix) of `text` at 1-based LINE:COL, columns counted in characters."""
    lines = text.split("\n")
    if line > len(lines):
        raise SpectabError(f"{name} has {len(lines)} lines; line {line} is past its end")
    width = len(lines[line - 1].rstrip("\r"))
    if col > width + 1:
        raise SpectabError(f"{name}:{line} has {width} characters; column must be 1..{width + 1}")
    offset = sum(len(l) + 1 for l in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def run_models_list(args) -> int:
    from .loading import find_cached
    from .profiles import builtin_profiles

    for p in builtin_profiles().values():
        print(f"{p.name}: {p.about}")
        for role, spec in (("target", p.target), ("draft", p.draft)):
            if spec in ("ngram", "none"):
                state = "built in"
            elif Path(spec).exists():
                state = "installed"
            elif "/" in spec and not spec.startswith("<"):
                state = "cached" if find_cached(spec) else "not downloaded"
            else:
                state = "not installed"
            print(f"  {role:6} {spec}  [{state}]")
    return 0


def run_models_pull(args) -> int:
    from .loading import HUB_ID, download, find_cached
    from .profiles import builtin_profiles

    profiles = builtin_profiles()
    if args.name in profiles:
        specs = [s for s in (profiles[args.name].target, profiles[args.name].draft) if HUB_ID.match(s)]
        if not specs:
            print(f"{args.name} needs no download: {profiles[args.name].about}")
            return 0
    elif HUB_ID.match(args.name):
        specs = [args.name]
    else:
        raise SpectabError(f"'{args.name}' is neither a profile ({', '.join(profiles)}) nor a hub id (org/name)")
    for spec in specs:
        folder = find_cached(spec) or download(spec)
        print(f"{spec}: {folder}")
    return 0
