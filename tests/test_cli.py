"""`spectab` as users run it: a subprocess, real files, the real SmolLM2 model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def spectab(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spectab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"PYTHONPATH": str(ROOT)})


def test_smollm2_completes_add(smollm2):
    result = smollm2.complete("def add(a, b):\n    return", "", max_new_tokens=16)
    assert "a + b" in result.text


def test_complete_json_on_the_offline_profile(smollm2, tmp_path):
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return\n")
    r = spectab("complete", f"{src}:2:11", "--profile", "smollm2-135m", "--max-new-tokens", "12", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "a + b" in out["completion"] and out["draft"] == "ngram" and out["fim"] == "none"
    assert len(out["tokens"]) == out["stats"]["new_tokens"] > 0
    for key in ("new_tokens", "target_forwards", "draft_proposed", "draft_accepted", "prefill_ms", "decode_ms", "tokens_per_s"):
        assert key in out["stats"], key


def test_the_default_runs_quantized_and_quant_none_runs_float(smollm2, tmp_path):
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return\n")
    outputs = {}
    for quant in ("auto", "none"):
        args = ["--quant", quant] if quant != "auto" else []
        r = spectab("complete", f"{src}:2:11", "--max-new-tokens", "8", "--single-line", "--json", "--threads", "2", *args)
        assert r.returncode == 0, r.stderr
        outputs[quant] = json.loads(r.stdout)
    # SmolLM2's GGUF is Q4_1 with a Q8_0 embedding: int4 layers, an int8 output head
    assert outputs["auto"]["quant"] == "int4+int8" and outputs["none"]["quant"] == "none"
    assert outputs["auto"]["completion"] == outputs["none"]["completion"] == " a + b"


def test_default_output_stops_at_the_block_end_and_raw_does_not(smollm2, tmp_path):
    """The quickstart's cursor: the model goes on past `return a + b` (a blank line, a comment);
    the default output is the suggestion the server would show, --raw is the model's text."""
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return\n")
    shown = spectab("complete", f"{src}:2:11", "--max-new-tokens", "20", "--draft", "none")
    raw = spectab("complete", f"{src}:2:11", "--max-new-tokens", "20", "--draft", "none", "--raw")
    as_json = spectab("complete", f"{src}:2:11", "--max-new-tokens", "20", "--draft", "none", "--json")
    for r in (shown, raw, as_json):
        assert r.returncode == 0, r.stderr
    assert shown.stdout == " a + b\n" and "block end" in shown.stderr
    assert raw.stdout.startswith(" a + b\n") and len(raw.stdout.strip().split("\n")) > 1
    out = json.loads(as_json.stdout)
    assert out["completion"] == " a + b" and out["stats"]["stop_reason"] == "block end"
    assert out["raw_completion"].startswith(" a + b\n") and len(out["raw_completion"]) > len(out["completion"])
    assert len(out["tokens"]) == out["stats"]["new_tokens"]
    assert 0 < out["confidence"] <= 1


def test_plain_output_streams_the_completion(smollm2, tmp_path):
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return\n")
    r = spectab("complete", f"{src}:2:11", "--max-new-tokens", "8", "--single-line", "--draft", "none")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(" a + b") and "tok/s" in r.stderr


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spectab: error: "), r.stderr
    return lines[0]


def bad_files(tmp: Path) -> dict[str, Path]:
    files = {"ok": "def f():\n    pass\n", "empty": "", "latin1": "caf\xe9 = 1\n".encode("latin-1"), "binary": b"\x00\x01\x02"}
    out = {}
    for name, content in files.items():
        path = tmp / f"{name}.py"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out[name] = path
    return out


@pytest.mark.parametrize("where,message", [
    ("ok:9:1", "has 3 lines; line 9 is past its end"),
    ("ok:1:99", "ok.py:1 has 8 characters; column must be 1..9"),
    ("ok:0:1", "LINE and COL start at 1"),
    ("ok:1", "is not FILE:LINE:COL"),
    ("empty:1:1", "is empty"),
    ("latin1:1:1", r"is not UTF-8 text \(byte 0xe9 at offset 3\)"),
    ("binary:1:1", "looks binary"),
    ("missing:1:1", "no such file"),
])
def test_bad_positions_and_files(tmp_path, where, message):
    import re

    files = bad_files(tmp_path)
    name, _, rest = where.partition(":")
    path = files.get(name, tmp_path / f"{name}.py")
    line = one_error_line(spectab("complete", f"{path}:{rest}" if rest else f"{path}"))
    assert re.search(message, line), line


@pytest.mark.parametrize("args,message", [
    (["--target", "no/such/model.gguf"], "does not exist"),
    (["--target", "not-a-model"], "unknown model 'not-a-model'"),
    (["--target", "someone/not-cached"], "cannot download someone/not-cached"),
    (["--profile", "gpt-17"], "unknown profile 'gpt-17'"),
    (["--dtype", "int3"], "unknown dtype 'int3'"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--quant", "int3"], "unknown --quant 'int3'; use auto, none, int8, int4"),
    (["--threads", "-2"], "--threads must be 0 (the physical cores) or a positive count"),
])
def test_bad_models_and_options(tmp_path, smollm2, args, message):
    src = bad_files(tmp_path)["ok"]
    line = one_error_line(spectab("complete", f"{src}:2:9", *args))
    assert message in line


def test_incompatible_draft_is_refused(tmp_path, smollm2, smollm2_gguf, tiny_models):
    src = bad_files(tmp_path)["ok"]
    line = one_error_line(spectab("complete", f"{src}:2:9", "--target", str(smollm2_gguf), "--draft", str(tiny_models["draft"])))
    assert "tokenizers differ at id 0" in line and "--draft ngram" in line


def test_serve_and_train_refuse_bad_arguments_in_one_line(tmp_path, llama_tokenizer_dir):
    assert "port 1..65535" in one_error_line(spectab("serve", "--tcp", "localhost:99999"))
    assert "set --tokenizer" in one_error_line(spectab("train", "run", "--preset", "tiny"))
    line = one_error_line(spectab("train", "prepare", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"),
                                  "--tokenizer", str(llama_tokenizer_dir)))
    assert "nothing does not exist" in line
    assert "unknown preset 'huge'" in one_error_line(spectab("train", "run", "--preset", "huge"))
    assert "not a valid float" in one_error_line(spectab("train", "run", "--lr", "fast"))


def test_models_list_and_offline_pull(smollm2_gguf):
    r = spectab("models", "list")
    assert r.returncode == 0 and "smollm2-135m" in r.stdout and "[installed]" in r.stdout
    line = one_error_line(spectab("models", "pull", "codellama-7b"))
    assert "HF_HUB_OFFLINE" in line
