#!/usr/bin/env bash
# The one prepared GPU check (issue 6): greedy-equality tests on CUDA, then benchmarks/gpu_speed.py
# on the GPU in bf16, then on the same machine's CPU with 16 threads. It runs on the device image's
# own python3 and its CUDA PyTorch (no venv), with what benchmarks/gpu_prepare.sh put in .device/
# here and the two device calls that script prints carried there: the wheels of .device/whl are
# installed into /tmp/site, and the SmolLM2-135M GGUF is joined from .device/model-a/*.part-a and
# .device/model-b/*.part-b and checked against .device/model-b/*.sha256. Without the model (call 2
# on a fresh machine, say) the GPU step measures the CodeLlama shapes only, and steps.txt says so.
# Each step has its own time limit, so one that hangs cannot eat the others' time; worst case about
# 9.7 minutes in all (the limits, 40 + 100 + 240 + 150 s, plus 10 s each to kill, plus the checks),
# within a call's 600 s. $OUT gets at most 8 files (what a device call brings back): steps.txt,
# device.txt, logs.txt (every step's whole output, one after another) and gpu_speed_*.json/.md.
#
#   run on the device from the repository root:  bash benchmarks/gpu_run.sh   (with OUT set)
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu_run}
SITE=/tmp/site
MODEL_DIR=/tmp/smollm2
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD  # the repository (engine, benchmarks, tests) first; /tmp/site after it, below

note() { echo "$*" | tee -a "$OUT/steps.txt"; }
: >"$OUT/steps.txt"; : >"$OUT/logs.txt"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to logs.txt, record the exit code
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc after $((SECONDS - t0)) s"
  tail -n 25 "$OUT/$name.log"
  { echo "===== $name: exit $rc ====="; cat "$OUT/$name.log"; } >>"$OUT/logs.txt" && rm -f "$OUT/$name.log"
  return "$rc"
}

python3 -c "import torch; assert torch.cuda.is_available(), 'python3 has torch ' + torch.__version__ + ' without CUDA'" \
  || { note "no CUDA torch in the image's python3: nothing to measure"; exit 1; }

# 0a. the carried wheels (gpu_prepare.sh: transformers, tokenizers, gguf, ... at .venv's versions)
if compgen -G ".device/whl/*.whl" >/dev/null; then
  if step install 40 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
       --target "$SITE" .device/whl/*.whl; then
    export PYTHONPATH=$PWD:$SITE
  else
    note "the wheels did not install: going on with the image's packages"
  fi
else
  note "no .device/whl: the image's own packages (its transformers; no gguf, so no GGUF tokenizer)"
fi

# 0b. the offline model, joined from its two parts
shapes=both
parts_a=(.device/model-a/*.part-a) parts_b=(.device/model-b/*.part-b) sums=(.device/model-b/*.sha256)
if [ -f "${parts_a[0]}" ] && [ -f "${parts_b[0]}" ] && [ -f "${sums[0]}" ]; then
  gguf_name=$(basename "${parts_a[0]}" .part-a)
  mkdir -p "$MODEL_DIR"
  cat "${parts_a[0]}" "${parts_b[0]}" >"$MODEL_DIR/$gguf_name"
  if (cd "$MODEL_DIR" && sha256sum --quiet -c -) <"${sums[0]}" >>"$OUT/steps.txt" 2>&1; then
    export SPECTAB_SMOLLM2_GGUF=$MODEL_DIR/$gguf_name
    note "model: $SPECTAB_SMOLLM2_GGUF joined from its two parts, sha256 checked"
  else
    rm -f "$MODEL_DIR/$gguf_name"
    shapes=codellama
    note "model: the parts do not join to the file of ${sums[0]} (sha256 differs): CodeLlama shapes only"
  fi
else
  shapes=codellama
  note "model: .device/model-a and .device/model-b not both here (a fresh machine for call 2?): CodeLlama shapes only"
fi

{
  nvidia-smi
  python3 -c "import sys, importlib, importlib.metadata as md, torch
print('python', sys.version.split()[0], sys.executable)
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())
for name in ('transformers', 'tokenizers', 'huggingface_hub', 'safetensors', 'gguf', 'platformdirs', 'pytest'):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, '__version__', None) or md.version(name), m.__file__)
    except Exception as e:
        print(name, 'NOT IMPORTABLE:', type(e).__name__, e)"
} >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# 1. the CUDA-only tests (captured graphs = eager logits in fp32, speculative = plain greedy in fp32,
#    bf16 flips counted, no GPU sync inside a round) and the CPU static-path tests beside them;
#    the image's pytest without its plugins (they are not needed, and none can get in the way)
step tests 100 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -m pytest -q -rs -s tests/test_gpu_path.py

# 2. GPU, bf16: both shape sets (the CodeLlama ones alone without the model), full size
#    (1536-token prompt, 64 new tokens)
step gpu_bf16 240 python3 benchmarks/gpu_speed.py --device cuda --dtype bf16 --shapes "$shapes" --out "$OUT"

# 3. the same machine's CPU, 16 threads: the exact CodeLlama/AMD shapes in fp32, cut to fit the time
#    (512-token prompt, 32 new tokens, one repeat, alpha 0.85 only, no transformers run)
step cpu_fp32 150 python3 benchmarks/gpu_speed.py --device cpu --dtype fp32 --threads 16 --shapes codellama \
  --prompt-tokens 512 --new-tokens 32 --repeats 1 --alphas 0.85 --no-hf --out "$OUT"

ls -l "$OUT"
