"""`spectab serve`: the language server on stdio (what editors start) or TCP."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engine.cli import add_model_options, check_model_options
from engine.errors import SpectabError

from .settings import Settings


def add_commands(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the language server (LSP over stdio, or TCP)",
        description="Serve inline completions over LSP. Editors start it and talk over stdio; "
        "settings sent by the client (initializationOptions, didChangeConfiguration) override these flags.",
    )
    p.add_argument("--stdio", action="store_true", help="speak LSP over stdin/stdout (the default)")
    p.add_argument("--tcp", metavar="[HOST:]PORT", help="listen on TCP instead (HOST defaults to 127.0.0.1)")
    add_model_options(p, context_tokens=Settings.contextTokens)
    p.add_argument("--engine", default=Settings.engine, metavar="shared|inprocess|URL",
                   help="shared (default): one engine process for all your editors, started when absent; "
                        "inprocess: load the models in this server; an http(s) URL: a remote server")
    p.add_argument("--engine-api", default=Settings.engineApi, choices=("openai", "infill"),
                   help="for a URL engine: openai (/v1/completions, the default) or infill (llama.cpp /infill)")
    p.add_argument("--kv-lanes", type=int, default=0, metavar="N",
                   help="KV caches kept, one per document (default 0: as many as fit in half the free memory)")
    p.add_argument("--idle-minutes", type=float, default=Settings.idleMinutes, metavar="M",
                   help="a shared engine started from here exits after M minutes with no editor (default 30)")
    p.add_argument("--log-file", default=None, help="log file (default: the user log dir's spectab/server.log)")
    p.set_defaults(run=run_serve)


def parse_tcp(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SpectabError(f"--tcp takes [HOST:]PORT with a port 1..65535, not '{value}'")
    return host or "127.0.0.1", int(port)


def log_path(override: str | None) -> Path:
    if override:
        return Path(override)
    folder = os.environ.get("SPECTAB_LOG_DIR")
    if folder:
        return Path(folder) / "server.log"
    from platformdirs import user_log_path

    return user_log_path("spectab") / "server.log"


def run_serve(args) -> int:
    from .backends.choose import check_engine
    from .server import build

    # every option is checked before anything starts: a bad one is the only line printed
    tcp = parse_tcp(args.tcp) if args.tcp else None
    check_model_options(args)
    if not 0 <= args.kv_lanes <= 256:
        raise SpectabError(f"--kv-lanes must be 0 (automatic) or 1..256, not {args.kv_lanes}")
    if args.idle_minutes < 0:
        raise SpectabError(f"--idle-minutes must be 0 (never) or more, not {args.idle_minutes}")
    defaults = Settings(profile=args.profile, target=args.target, draft=args.draft, device=args.device, dtype=args.dtype,
                        contextTokens=args.context_tokens,
                        fim=args.fim or "auto", quant=args.quant, threads=args.threads,
                        engine=check_engine(args.engine), engineApi=args.engine_api,
                        kvLanes=args.kv_lanes, idleMinutes=args.idle_minutes)

    path = log_path(args.log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("spectab", "pygls"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("spectab").setLevel(logging.INFO)
    logging.getLogger("pygls").setLevel(logging.WARNING)
    logging.getLogger("spectab").info("spectab serve starting (log: %s)", path)

    server = build(defaults)
    if tcp:
        server.start_tcp(*tcp)
    else:
        server.start_io()
    return 0
