"""`spectab`: the command line. Each subcommand lives with the package that does the work; this
module only builds the parser, sets up logging and turns failures into one line on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine import cli as engine_cli
from engine.errors import SpectabError, first_line
from lsp_server import cli as server_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectab",
        description="Local code completion: a speculative-decoding engine served over LSP.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details, library messages included, to stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    engine_cli.add_commands(sub)
    server_cli.add_commands(sub)
    for name, about, issue in (
        ("train", "train or reproduce draft models (not implemented yet)", "the training package"),
    ):
        p = sub.add_parser(name, help=about, description=f"{about}.")
        p.set_defaults(run=_not_implemented(name, issue))
    return parser


def _not_implemented(name: str, what: str):
    def run(args) -> int:
        raise SpectabError(f"`spectab {name}` is not implemented yet ({what} is still to be built)")

    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("SPECTAB_DEBUG") == "1"
    setup_logging(verbose=args.verbose or debug, quiet=args.quiet)
    try:
        return args.run(args) or 0
    except SpectabError as err:
        print(f"spectab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spectab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: still one line, with the way to see more
        if debug:
            raise
        print(f"spectab: internal error: {type(err).__name__}: {first_line(err)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def setup_logging(verbose: bool, quiet: bool) -> None:
    """spectab's own progress lines (loading, converting, downloading) at INFO on stderr; other
    libraries' chatter (transformers' GGUF notes, huggingface_hub's retries) only with --verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("spectab: %(message)s"))
    ours = logging.getLogger("spectab")
    ours.addHandler(handler)
    ours.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    ours.propagate = False
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # huggingface_hub resets its logger's level when imported; it reads this variable then
    os.environ.setdefault("HF_HUB_VERBOSITY", "info" if verbose else "error")
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore")
        for name in ("huggingface_hub", "transformers", "accelerate"):
            logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
