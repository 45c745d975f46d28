"""`spectab complete FILE:LINE:COL`: one suggestion on the command line, as the server makes it.

By default the model's text goes through the server's post-processing (at the end of a line it may
span lines and stops with the cursor's block; it is trimmed of what the text after the cursor
already has), and `--context FILE` adds other files as workspace context. `--raw` prints the
model's text untouched, streamed as it is generated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli import add_model_options, check_model_options, parse_location, read_source, split_at
from engine.errors import SpectabError

from .context import cursor_at
from .postprocess import finish, shown_confidence
from .workspace import Workspace


def add_commands(sub) -> None:
    p = sub.add_parser(
        "complete",
        help="complete a file at a position and print the suggestion",
        description="Complete FILE at LINE:COL (1-based; COL counts characters, LINE:len+1 is the end of the line) "
        "and print the suggestion the server would show: at the end of a line, up to the end of the cursor's "
        "block; trimmed of what follows the cursor. --raw prints the model's text as generated.",
    )
    p.add_argument("location", metavar="FILE:LINE:COL")
    add_model_options(p)
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="most tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, the default")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)")
    p.add_argument("--single-line", action="store_true", help="stop at the end of the line")
    p.add_argument("--raw", action="store_true", help="print the model's text untouched (no block end, no trimming)")
    p.add_argument("--context", action="append", default=[], metavar="FILE",
                   help="another file to take workspace context from (repeatable), as if open in the editor")
    p.add_argument("--extra-context-tokens", type=int, default=256, metavar="N",
                   help="token budget of the --context files' chunks (default 256)")
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="cut before the first token the target gives less probability (default 0: off)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: completion, raw_completion, tokens (the raw ids), stats")
    p.set_defaults(run=run_complete)


def run_complete(args) -> int:
    path, line, col = parse_location(args.location)
    text = read_source(path)
    prefix, suffix = split_at(text, line, col, str(path))
    if args.max_new_tokens < 1:
        raise SpectabError("--max-new-tokens must be at least 1")
    if args.context_tokens < 64:
        raise SpectabError("--context-tokens must be at least 64")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise SpectabError(f"--min-confidence must be a probability 0..1, not {args.min_confidence}")
    if args.extra_context_tokens < 0:
        raise SpectabError("--extra-context-tokens must be 0 or more")
    check_model_options(args)
    context = gather_context(args.context, path, text, prefix, suffix, args.context_tokens)

    from engine.completer import Completer, EngineOptions
    from engine.devices import set_threads
    from engine.requests import token_marks
    from engine.sampling import SamplingParams

    set_threads(args.threads)
    # one completion: compiling the steps (engine/compiled_step.py) would cost more than it saves
    options = EngineOptions(context_tokens=args.context_tokens, max_new_tokens_limit=max(512, args.max_new_tokens), compile=False)
    completer = Completer.open(args.profile, args.target, args.draft, args.device, args.dtype, args.fim, options, args.quant)
    params = SamplingParams(args.temperature, args.top_p, args.top_k, args.seed)
    cur = cursor_at(prefix + suffix, len(prefix), args.context_tokens)
    multiline = not args.single_line and cur.at_line_end
    stream = _write_stdout if args.raw and not args.json else None
    result = completer.complete(prefix, suffix, args.max_new_tokens, params, tuple(args.stop),
                                single_line=args.single_line or (not args.raw and not multiline), on_text=stream,
                                block_of=cur.line_prefix if multiline and not args.raw else None,
                                context=context, context_tokens=args.extra_context_tokens if context else 0,
                                min_confidence=args.min_confidence)
    shown = result.text if args.raw else finish(result.text, cur, multiline)
    s = result.stats
    if args.json:
        marks = token_marks(completer.tokenizer, result)
        print(json.dumps({
            "completion": shown,
            "raw_completion": result.text,
            "tokens": result.tokens,
            "confidence": shown_confidence(len(shown), marks["probs"], marks["ends"]),
            "stats": s.as_dict(),
            "profile": completer.profile,
            "target": completer.target_info.name,
            "draft": completer.draft_name,
            "fim": completer.fim,
            "device": str(completer.device),
            "quant": completer.quant,
            "context_chunks": len(context),
        }, ensure_ascii=False))
    else:
        if not args.raw:
            sys.stdout.write(shown)
        sys.stdout.write("\n")
        what = "" if args.raw or shown == result.text else f" (post-processed from {len(result.text)} characters; --raw shows them)"
        print(
            f"spectab: {s.new_tokens} tokens in {(s.prefill_ms + s.decode_ms) / 1000:.2f} s "
            f"({s.tokens_per_s:.1f} tok/s), {completer.profile} on {completer.device} ({completer.quant}), draft {completer.draft_name} "
            f"accepted {s.draft_accepted}/{s.draft_proposed}, stop: {s.stop_reason}{what}",
            file=sys.stderr,
        )
    return 0


def gather_context(files: list[str], path: Path, text: str, prefix: str, suffix: str, context_tokens: int) -> tuple[str, ...]:
    """The ring's chunks for the cursor, with each --context file opened as an editor would."""
    if not files:
        return ()
    workspace = Workspace()
    workspace.root = str(Path.cwd().resolve())
    for name in files:
        other = Path(name)
        workspace.opened(other.resolve().as_uri(), read_source(other))
    uri = path.resolve().as_uri()
    workspace.opened(uri, text)  # its imports pick the other files' signatures
    cur = cursor_at(text, len(prefix), context_tokens)
    return workspace.context_for(uri, cur.prefix + cur.suffix)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
