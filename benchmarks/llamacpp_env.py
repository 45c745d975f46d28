"""llama.cpp beside spectab: llama-cpp-python 0.3.36 in its own venv, and llama.cpp's `llama-server`.

The CPU benchmark runs llama.cpp through llama-cpp-python; the remote-engine tests talk to
llama-cpp-python's OpenAI-compatible server and to llama.cpp's own `llama-server` (the only one
of the two with `/infill`). Both are built from source once, into one venv that every later run
reuses. Building takes minutes, so its location must not follow SPECTAB_CACHE_DIR (the tests point
that at a fresh folder per run): it is `SPECTAB_LLAMA_CPP_VENV` when set, else
`<platformdirs user cache>/spectab/bench/llama-cpp-0.3.36-noamx` (built without AMX; see NO_AMX_FLAGS).

    python benchmarks/llamacpp_env.py [--server] [--llama-server]

prints the venv's python (with --llama-server, the llama-server binary's path instead); progress
goes to stderr, and a failed build prints the end of its log and names it. This module needs only
the standard library (and platformdirs where it is installed), so any interpreter runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VERSION = "0.3.36"
VENV_ENV = "SPECTAB_LLAMA_CPP_VENV"
# llama-server without the network: no web UI download, no HTTPS, one static binary that can be
# copied into the venv's bin/ and run from there
LLAMA_SERVER_CMAKE = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
]


# llama.cpp 0.3.36 built for the machine it runs on (-march=native) uses AMX where the CPU has it,
# and on a 2-core Xeon with AMX both servers crashed (a segmentation fault) on their first forward
# through the AMX buffers (with tiny test models and SmolLM2 alike); `--no-repack`, which turns the
# AMX buffers off, stopped it. Both builds leave AMX out: explicit -mno-* flags win over
# -march=native in GCC and Clang, and on CPUs without AMX they change nothing. CMake takes its
# first C and C++ flags from CFLAGS and CXXFLAGS, in both builds (pip's and llama-server's).
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
BUILD_TAG = "noamx"  # in the venv's name: a venv built before this rebuilds


def _no_amx_env() -> dict:
    return os.environ | {v: f"{os.environ.get(v, '')} {NO_AMX_FLAGS}".strip() for v in ("CFLAGS", "CXXFLAGS")}


class BuildError(Exception):
    """A step that failed: one line naming the log, which `log` holds."""

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


def log(msg: str) -> None:
    print(f"llamacpp_env: {msg}", file=sys.stderr, flush=True)


def venv_dir() -> Path:
    override = os.environ.get(VENV_ENV)
    if override:
        return Path(override).expanduser()
    try:
        from platformdirs import user_cache_path

        root = user_cache_path("spectab")
    except ImportError:  # a bare interpreter: the XDG layout, which is what platformdirs gives on Linux
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spectab"
    return root / "bench" / f"llama-cpp-{VERSION}-{BUILD_TAG}"


def _probe(python: Path, code: str) -> bool:
    if not python.is_file():
        return False
    run = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return run.returncode == 0 and run.stdout.strip() == VERSION


_HAS_LLAMA = "import llama_cpp; print(llama_cpp.__version__)"
# the server's app module imports every package of the [server] extra
_HAS_SERVER = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"


def _run_logged(cmd: list[str], build_log: Path, what: str, **kw) -> None:
    with open(build_log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kw).returncode
    if rc != 0:
        raise BuildError(f"{what} failed (exit {rc}); see {build_log}", build_log)


@contextlib.contextmanager
def _locked(venv: Path):
    # CI prepares the venv in the background while a developer's test run may want it too: one
    # builder at a time, the second finds the work done
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_python(server: bool = False) -> Path:
    """The venv's python with llama-cpp-python 0.3.36 (built from source, about 6 minutes on 2
    cores), and with `server` its [server] extra. Raises BuildError."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    want = _HAS_SERVER if server else _HAS_LLAMA
    if _probe(python, want):
        return python
    with _locked(venv):
        if _probe(python, want):
            return python
        build_log = venv.parent / f"{venv.name}-build.log"
        if not python.is_file():
            log(f"creating the venv {venv}")
            _run_logged([sys.executable, "-m", "venv", str(venv)], build_log, "creating the venv")
        if not _probe(python, _HAS_LLAMA):
            log(f"building llama-cpp-python {VERSION} from source into {venv} (about 6 minutes, once; "
                f"log: {build_log})")
            t0 = time.monotonic()
            # --no-cache-dir: a wheel pip built earlier, with other flags, must not stand in for this build
            _run_logged([str(python), "-m", "pip", "install", "--no-cache-dir", f"llama-cpp-python=={VERSION}"], build_log,
                        f"building llama-cpp-python {VERSION}", env=_no_amx_env())
            log(f"llama-cpp-python built in {time.monotonic() - t0:.0f} s")
        if server and not _probe(python, _HAS_SERVER):
            log(f"adding llama-cpp-python's [server] extra (fastapi, uvicorn, sse-starlette, ...; log: {build_log})")
            # llama-cpp-python itself is already satisfied, so pip only adds the extra's packages;
            # --only-binary makes sure nothing here can fall back to compiling llama.cpp again
            _run_logged([str(python), "-m", "pip", "install", "--only-binary", ":all:",
                         f"llama-cpp-python[server]=={VERSION}"], build_log, "installing the [server] extra")
        if not _probe(python, want):
            raise BuildError(f"llama-cpp-python {VERSION} still does not import in {venv} after installing; "
                             f"see {build_log}", build_log)
    return python


def llama_server_path() -> Path:
    return venv_dir() / "bin" / "llama-server"


def _server_works(binary: Path) -> bool:
    if not binary.is_file():
        return False
    return subprocess.run([str(binary), "--version"], capture_output=True).returncode == 0


def ensure_llama_server(jobs: int | None = None) -> Path:
    """llama.cpp's `llama-server`, built from the llama.cpp sources that llama-cpp-python 0.3.36's
    sdist vendors (the same llama.cpp as the Python package), into the venv's bin/. About 10
    minutes on 2 cores, once. Needs cmake and a C++17 compiler. Raises BuildError."""
    binary = llama_server_path()
    if _server_works(binary):
        return binary
    python = ensure_python()  # its pip fetches the sdist
    venv = venv_dir()
    with _locked(venv):
        if _server_works(binary):
            return binary
        if shutil.which("cmake") is None:
            raise BuildError("building llama-server needs cmake (apt-get install cmake, or pip install cmake)")
        build_log = venv.parent / f"{venv.name}-llama-server-build.log"
        build_log.write_text("")
        for stale in venv.parent.glob("llama-server-*"):  # a build that was killed (we hold the lock)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix="llama-server-", dir=venv.parent))
        try:
            log(f"building llama-server from llama-cpp-python {VERSION}'s sdist (about 10 minutes on 2 cores, "
                f"once; log: {build_log})")
            t0 = time.monotonic()
            _run_logged([str(python), "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                         f"llama-cpp-python=={VERSION}", "-d", str(work)], build_log, "downloading the sdist")
            sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
            with tarfile.open(sdist) as tar:
                tar.extractall(work, **safe)
            source = work / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
            build = work / "build"
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            _run_logged(["cmake", "-S", str(source), "-B", str(build), *generator, *LLAMA_SERVER_CMAKE], build_log,
                        "configuring llama.cpp", env=_no_amx_env())
            jobs = jobs or os.cpu_count() or 2
            _run_logged(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], build_log,
                        "compiling llama-server", env=_no_amx_env())
            built = build / "bin" / "llama-server"
            tmp = binary.with_suffix(".tmp")
            shutil.copy2(built, tmp)
            os.replace(tmp, binary)  # atomically: a half-copied binary never looks installed
            log(f"llama-server built in {time.monotonic() - t0:.0f} s: {binary}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not _server_works(binary):
            raise BuildError(f"{binary} was built but `--version` fails; see {build_log}", build_log)
    return binary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", action="store_true", help="also install llama-cpp-python's [server] extra")
    ap.add_argument("--llama-server", action="store_true", help="also build llama.cpp's llama-server; print its path")
    ap.add_argument("--jobs", type=int, default=None,
                    help="parallel compile jobs for llama-server (default: the cores)")
    args = ap.parse_args()
    try:
        python = ensure_python(server=args.server)
        print(ensure_llama_server(args.jobs) if args.llama_server else python)
    except BuildError as err:
        if err.log is not None and err.log.is_file():  # where it failed, for a CI log that has only this output
            print("\n".join(err.log.read_text(errors="replace").splitlines()[-25:]), file=sys.stderr)
        print(f"llamacpp_env: {err}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
