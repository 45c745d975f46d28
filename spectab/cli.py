"""`spectab`: the command line. Each subcommand lives with the package that does the work; this
module only builds the parser, sets up logging and turns failures into one line on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine import cli as engine_cli
from engine.errors import SpectabError, first_line
from engine.logs import setup_logging
from engine.service import cli as engine_service_cli
from lsp_server import cli as server_cli
from lsp_server import complete_cli
from training import cli as training_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectab",
        description="Local code completion: a speculative-decoding engine served over LSP.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details, library messages included, to stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    complete_cli.add_commands(sub)
    engine_cli.add_commands(sub)
    engine_service_cli.add_commands(sub)
    server_cli.add_commands(sub)
    training_cli.add_commands(sub)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
