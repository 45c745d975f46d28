"""Shared pieces of the benchmark scripts: prompts from this repository, timing, result tables."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def repo_edit_points(n: int, files: tuple[str, ...] = ("engine/speculative.py", "engine/loading.py", "engine/prompts.py",
                                                       "engine/model.py", "engine/completer.py", "engine/cli.py")) -> list[tuple[str, str, str]]:
    """Cursor positions in this repository's own source: (name, prefix, suffix). The cursor sits
    after the indentation of a line about two thirds into the file, where a programmer editing the
    file would be typing and the code around it is there to copy from."""
    points = []
    for i in range(n):
        path = ROOT / files[i % len(files)]
        lines = path.read_text().split("\n")
        # walk forward from a fixed fraction to a non-blank line, different per repeat of a file
        at = int(len(lines) * (0.55 + 0.1 * (i // len(files)))) % len(lines)
        while not lines[at].strip():
            at += 1
        indent = len(lines[at]) - len(lines[at].lstrip())
        prefix = "\n".join(lines[:at]) + "\n" + lines[at][:indent]
        suffix = lines[at][indent:] + "\n" + "\n".join(lines[at + 1:])
        points.append((f"{path.name}:{at + 1}", prefix, suffix))
    return points


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time (s) of `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def write_results(name: str, command: str, data: dict, table: list[list], header: list[str], notes: str = "") -> Path:
    """benchmarks/results/NAME.json and NAME.md (the markdown table the README quotes)."""
    RESULTS.mkdir(exist_ok=True)
    data = {"command": command, "machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2))
    m = data["machine"]
    lines = [
        f"`{command}`  ",
        f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}, commit {m['commit']}, {m['date']}",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table]
    if notes:
        lines += ["", notes]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path
