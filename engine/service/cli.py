"""`spectab engine`, `spectab engine status`, `spectab engine stop`."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from ..errors import SpectabError
from .wire import Address, Channel, addresses, connect, engine_key, runtime_dir


def add_commands(sub) -> None:
    from ..cli import add_model_options

    p = sub.add_parser(
        "engine",
        help="run the shared engine that holds the models for all your editors",
        description="Run the engine: one process per user and model settings that every `spectab serve` "
        "(one per editor window) sends its generations to. The editors start it themselves when it is "
        "not running; `status` and `stop` inspect and end it.",
    )
    add_model_options(p, context_tokens=1024)
    p.add_argument("--kv-lanes", type=int, default=0, metavar="N",
                   help="KV caches kept, one per document (default 0: as many as fit in half the free memory, 1..16)")
    p.add_argument("--idle-minutes", type=float, default=30, metavar="M",
                   help="exit after M minutes with no editor connected (default 30; 0 = never)")
    p.add_argument("--listen", metavar="HOST:PORT", default=None,
                   help="also listen on TCP HOST:PORT (beyond loopback); needs --token-file")
    p.add_argument("--token-file", type=Path, default=None, help="file with the token TCP clients must present (mode 0600)")
    p.add_argument("--log-file", default=None, help="log file (default: the user log dir's spectab/engine.log)")
    p.set_defaults(run=run_engine)
    actions = p.add_subparsers(dest="engine_command", metavar="ACTION")
    st = actions.add_parser("status", help="show the running engines: pid, editors, models, KV lanes, memory")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(run=run_status)
    stop = actions.add_parser("stop", help="stop every engine of this user")
    stop.set_defaults(run=run_stop)


def settings_from_args(args) -> dict:
    return {"profile": args.profile, "target": args.target, "draft": args.draft, "device": args.device,
            "dtype": args.dtype, "fim": args.fim or "auto", "contextTokens": args.context_tokens, "quant": args.quant}


def parse_listen(value: str, token_file: Path | None) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpectabError(f"--listen takes HOST:PORT with a port 1..65535, not '{value}'")
    if token_file is None:
        raise SpectabError("--listen needs --token-file: an engine reachable from other hosts must ask for a token")
    try:
        st = token_file.stat()
        token = token_file.read_text().strip()
    except OSError as err:
        raise SpectabError(f"cannot read the token file {token_file}: {err.strerror}") from None
    if hasattr(os, "getuid") and st.st_mode & 0o077:
        raise SpectabError(f"the token file {token_file} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    if len(token) < 16:
        raise SpectabError(f"the token in {token_file} is too short: use at least 16 random characters")
    return host.strip("[]"), int(port)


def run_engine(args) -> int:
    from ..cli import check_model_options
    from .process import EngineProcess

    check_model_options(args)
    if args.kv_lanes < 0 or args.kv_lanes > 256:
        raise SpectabError(f"--kv-lanes must be 0 (automatic) or 1..256, not {args.kv_lanes}")
    if args.idle_minutes < 0:
        raise SpectabError(f"--idle-minutes must be 0 (never) or more, not {args.idle_minutes}")
    listen = parse_listen(args.listen, args.token_file) if args.listen else None
    _log_to_file(args.log_file)
    settings = settings_from_args(args)
    address = Address(runtime_dir(), engine_key(settings))
    return EngineProcess(address, settings, args.kv_lanes, args.idle_minutes, args.threads, listen, args.token_file).run()


def _log_to_file(override: str | None) -> None:
    if override:
        path = Path(override)
    elif os.environ.get("SPECTAB_LOG_DIR"):
        path = Path(os.environ["SPECTAB_LOG_DIR"]) / "engine.log"
    else:
        from platformdirs import user_log_path

        path = user_log_path("spectab") / "engine.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("spectab").addHandler(handler)
    logging.getLogger("spectab").setLevel(logging.INFO)


def ask(address: Address, op: str, timeout: float = 10.0) -> dict | None:
    """Send one control message to the engine at `address`; its answer, or None when none runs."""
    try:
        sock, token = connect(address, timeout)
    except (ConnectionRefusedError, OSError):
        return None
    channel = Channel(sock)
    try:
        channel.send({"op": "hello", "role": "control", "token": token})
        hello = channel.recv()
        if not hello or hello.get("event") != "hello":
            return None
        channel.send({"op": op})
        return channel.recv()
    except OSError:
        return None
    finally:
        channel.close()


def engine_statuses() -> list[dict]:
    out = []
    for address in addresses():
        answer = ask(address, "status")
        if answer is not None:
            answer.pop("event", None)
            out.append(answer)
    return out


def run_status(args) -> int:
    engines = engine_statuses()
    if args.json:
        print(json.dumps({"running": bool(engines), "engines": engines}, indent=1))
        return 0
    if not engines:
        print("no spectab engine is running")
        return 0
    for e in engines:
        m = e.get("models") or {}
        print(f"engine {e['key']}: running, pid {e['pid']}, {e['state']}"
              + (f" ({e['error']})" if e.get("error") else ""))
        print(f"  editors connected: {e['clients']}, requests served: {e['served']}, resident memory: {e['rssMB']} MB")
        if m:
            print(f"  models: {m['target']} (draft {m['draft']}) on {m['device']}, {m['quant']}")
        print(f"  KV lanes ({len(e['lanes'])} of {e['laneLimit']}):")
        for lane in e["lanes"]:
            print(f"    {lane['document'] or '(no document)'}: {lane['tokens']} tokens")
    return 0


def run_stop(args) -> int:
    stopped = 0
    for address in addresses():
        answer = ask(address, "stop")
        if answer is not None and answer.get("event") == "stopping":
            print(f"stopping engine {address.key} (pid {answer['pid']})")
            stopped += 1
    if not stopped:
        print("no spectab engine is running")
    return 0
