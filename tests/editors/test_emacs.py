"""The Emacs client (editor-clients/emacs/spectab.el) in a real Emacs 28 with eglot, batch mode.

Emacs starts `spectab serve` on the offline profile through eglot, as a user's setup does
(`spectab-eglot-setup`, then `M-x eglot`); keys are typed through Emacs's command loop. The checks
are exact: each test fails when the server answers anything but ` a + b` after `    return` in
`def add(a, b):` — the `..._check_fails_when_the_server_answers_otherwise` tests run both
scenarios against a server told (through spectab.el's defcustoms) to answer one token, and expect
the checks to fail. Needs `emacs-nox` and `elpa-eglot` (editor-clients/emacs/ci-install.sh); skipped without
Emacs, except with SPECTAB_REQUIRE_EDITORS=1 (as CI sets it), where a missing Emacs is an error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from .emacs_harness import CLIENT_DIR, emacs_binary, run_driver

SOURCE_INLINE = "def add(a, b):\n    retur\n"  # the test types the last 'n'
SOURCE_CAPF = "def add(a, b):\n    return\n"
WANT = " a + b"
TYPED = " a"  # typed over the ghost text before TAB
# no answer cut short by the deadline on a busy machine: the text must be the model's whole answer
SETTINGS = {"spectab-deadline-ms": 30000,
            # one suggestion per explicit request (test_cycle_through_the_candidates asks for more):
            # each candidate is generated, and eglot's synchronous C-M-i gives up after a few
            # seconds on a busy CPU
            "spectab-candidates": 1}
TIMEOUT = 115  # seconds for one Emacs run, server start and model load included


@pytest.fixture(scope="module")
def emacs():
    exe = emacs_binary()
    if exe is None:
        if os.environ.get("SPECTAB_REQUIRE_EDITORS") == "1":
            pytest.fail("emacs is not installed: run editor-clients/emacs/ci-install.sh")
        pytest.skip("emacs is not installed (editor-clients/emacs/ci-install.sh installs it)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    major = int(re.search(r"GNU Emacs (\d+)", version).group(1))
    assert major >= 28, f"spectab.el needs Emacs 28+, not {version.splitlines()[0]}"
    return exe


def inline(tmp_path, **settings) -> tuple[dict, str]:
    src = tmp_path / "add.py"
    src.write_text(SOURCE_INLINE)
    result = run_driver("inline", src, tmp_path, settings=SETTINGS | settings, after="retur", last_key="n",
                        type_ahead=TYPED, timeout=TIMEOUT)
    return result, src.read_text()


def capf(tmp_path, **settings) -> tuple[dict, str]:
    src = tmp_path / "add.py"
    src.write_text(SOURCE_CAPF)
    result = run_driver("capf", src, tmp_path, settings=SETTINGS | settings, after="return", timeout=TIMEOUT)
    return result, src.read_text()


def check_inline(result: dict, disk: str) -> None:
    assert result["returncode"] == 0 and "error" not in result, result
    assert result["spectab_mode"], "spectab-mode did not turn on in the eglot-managed buffer"
    # TAB is ours only while a suggestion is shown
    assert result["tab_without_suggestion"] == "indent-for-tab-command"
    # a request whose answer comes after the cursor moved is never shown
    assert result["request_sent"] and result["stale_overlay"] is None
    assert result["last_error"] == ""  # the cancelled request's reply is not shown as an error
    # the command asks explicitly; other input (C-b) dismisses
    assert result["explicit_overlay"] == WANT
    assert result["overlay_after_other_input"] is None
    # typing: the idle timer asks, the ghost text shows, TAB takes it
    assert result["overlay"] == WANT
    assert result["tab_with_suggestion"] == "spectab-accept"
    # typing what it suggests keeps the rest shown, with no new request
    assert result["overlay_after_typing"] == WANT[len(TYPED):] and not result["requests_after_typing"]
    assert result["overlay_after_accept"] is None
    assert result["line"] == "    return" + WANT and result["point_at_line_end"]
    assert disk == "def add(a, b):\n    return" + WANT + "\n"
    # spectab.accepted ran with the item's arguments
    assert result["accepted_after"] == result["accepted_before"] + 1


def check_capf(result: dict, disk: str) -> None:
    assert result["returncode"] == 0 and "error" not in result, result
    assert result["capf_key"] == "completion-at-point"
    assert result["line_plain"] == "    return" + WANT  # eglot alone, spectab-mode off
    assert result["line"] == "    return" + WANT  # with spectab-mode
    assert disk == "def add(a, b):\n    return" + WANT + "\n"
    assert result["accepted_after"] == result["accepted_before"] + 1


def test_spectab_el_byte_compiles_cleanly(emacs, tmp_path):
    target = tmp_path / "spectab.el"
    target.write_text((CLIENT_DIR / "spectab.el").read_text())
    r = subprocess.run([emacs, "--batch", "--eval", "(setq byte-compile-error-on-warn t)",
                        "-f", "batch-byte-compile", str(target)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and (tmp_path / "spectab.elc").exists(), r.stderr


def test_inline_ghost_text_accepted_with_tab(emacs, smollm2_gguf, smollm2, tmp_path):
    # `smollm2` converts the GGUF file into this run's cache first, so the server only loads it
    result, disk = inline(tmp_path)
    check_inline(result, disk)


def test_completion_at_point(emacs, smollm2_gguf, smollm2, tmp_path):
    result, disk = capf(tmp_path)
    check_capf(result, disk)


# spectab-max-new-tokens 1 (sent as initializationOptions): the server answers ` a`; the checks
# above must reject that (and the answer shows that the defcustom reached the server)


def test_inline_check_fails_when_the_server_answers_otherwise(emacs, smollm2_gguf, smollm2, tmp_path):
    result, disk = inline(tmp_path, **{"spectab-max-new-tokens": 1})
    assert result["overlay"] == " a", result
    with pytest.raises(AssertionError):
        check_inline(result, disk)


def test_capf_check_fails_when_the_server_answers_otherwise(emacs, smollm2_gguf, smollm2, tmp_path):
    result, disk = capf(tmp_path, **{"spectab-max-new-tokens": 1})
    assert result["line"] == "    return a", result
    with pytest.raises(AssertionError):
        check_capf(result, disk)


# at the end of `    ` in load() the offline model suggests `with open(path, 'r') as f:` and another
# line (the server heals the indentation before the cursor)
PARTIAL_SOURCE = "import json\n\n\ndef load(path):\n    \n"
PARTIAL_AFTER = "def load(path):\n"  # then the end of that next line
# the pieces as spectab.el's docstrings define them (ASCII here)
WORD = re.compile(r"[ \t\n\r\f\v]*(?:[A-Za-z0-9_]+|[^A-Za-z0-9_ \t\n\r\f\v]+)?")


def partial(tmp_path: Path, word_key: str, line_key: str) -> tuple[dict, str]:
    src = tmp_path / "load.py"
    src.write_text(PARTIAL_SOURCE)
    # minConfidence 0: the test is about taking pieces, so the confidence cut (whose threshold the
    # server may retune) must not shorten this suggestion to one line
    settings = SETTINGS | {"spectab-max-new-tokens": 48, "spectab-min-confidence": 0}
    result = run_driver("partial", src, tmp_path, settings=settings, after=PARTIAL_AFTER, word_key=word_key,
                        line_key=line_key, timeout=TIMEOUT)
    return result, src.read_text()


@pytest.mark.parametrize("word_key,line_key", [("M-f", "C-e"), ("M-<right>", "M-<down>")])
def test_partial_accept_word_line_rest(emacs, smollm2_gguf, smollm2, tmp_path, word_key, line_key):
    result, disk = partial(tmp_path, word_key, line_key)
    assert result["returncode"] == 0 and "error" not in result, result
    # the keys are ours only while a suggestion is shown
    assert result["word_binding_without_suggestion"] == ("forward-word" if word_key == "M-f" else "right-word")
    # without a suggestion shown the keys below are Emacs's own: say that, not which keys they run
    assert result["suggestion"], f"no suggestion was shown (the answer was empty, lost or too late): {result}"
    assert (result["word_binding"], result["line_binding"]) == ("spectab-accept-word", "spectab-accept-line")
    suggestion = result["suggestion"]
    first, _, after = suggestion.partition("\n")
    assert after and len(first.split()) >= 2, f"the model must suggest several words, then more lines: {suggestion!r}"
    word = WORD.match(suggestion).group(0)
    pieces = [("word", word), ("line", first[len(word):] + "\n"), ("rest", after)]
    at = PARTIAL_SOURCE.index(PARTIAL_AFTER) + len(PARTIAL_AFTER) + len("    ")
    taken = ""
    assert [p["name"] for p in result["pieces"]] == ["word", "line", "rest"], result
    for (name, piece), step in zip(pieces, result["pieces"]):
        taken += piece
        assert step["buffer"] == PARTIAL_SOURCE[:at] + taken + PARTIAL_SOURCE[at:], (name, step, suggestion)
        # the rest stays shown, from what the client has: no new request
        assert step["ghost"] == (suggestion[len(taken):] or None), (name, step, suggestion)
        assert step["requests"] == 0, (name, step)
    assert disk == PARTIAL_SOURCE[:at] + suggestion + PARTIAL_SOURCE[at:]
    # two partial accepts, one whole; spectab-status shows both
    assert result["accepted_after"] == result["accepted_before"] + 1, result
    assert result["partial_accepts"] == 2, result
    assert f"{result['accepted_after']} accepted (+2 partial)" in result["status_line"], result["status_line"]


def test_cycle_through_the_candidates(emacs, smollm2_gguf, smollm2, tmp_path):
    """An explicit request gets several suggestions; M-n / M-p show them in turn; TAB takes the one
    shown."""
    src = tmp_path / "load.py"
    src.write_text(PARTIAL_SOURCE)
    # short suggestions: the server generates each candidate, which takes long on a busy CPU
    settings = SETTINGS | {"spectab-max-new-tokens": 12, "spectab-candidates": 3}
    result = run_driver("cycle", src, tmp_path, settings=settings, after=PARTIAL_AFTER,
                        cycle_keys=["M-n", "M-n", "M-p"], timeout=TIMEOUT)
    assert result["returncode"] == 0 and "error" not in result, result
    items = result["items"]
    assert 2 <= len(items) <= 3 and len(set(items)) == len(items), f"the server should answer 2..3 distinct candidates: {items}"
    n = len(items)
    assert result["shown"] == [items[0], items[1], items[2 % n], items[1]], result
    assert result["next_binding"] == "spectab-next"
    at = PARTIAL_SOURCE.index(PARTIAL_AFTER) + len(PARTIAL_AFTER) + len("    ")
    assert src.read_text() == PARTIAL_SOURCE[:at] + items[1] + PARTIAL_SOURCE[at:]


def test_defcustoms_become_the_servers_settings(emacs):
    """Every server setting has its defcustom; the JSON sent is what the server's parser takes."""
    from dataclasses import fields

    from lsp_server.settings import Settings, apply

    r = subprocess.run([emacs, "--batch", "-L", str(CLIENT_DIR), "--eval",
                        "(progn (require 'spectab) (princ (json-encode (mapcar (lambda (kv) (substring (symbol-name (car kv)) 1))"
                        " spectab--setting-variables))))"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)) == sorted(f.name for f in fields(Settings)), "spectab--setting-variables vs Settings"

    values = {"spectab-profile": "smollm2-135m", "spectab-target": "/models/t.gguf", "spectab-draft": "ngram",
              "spectab-device": "cpu", "spectab-max-new-tokens": 16, "spectab-temperature": 0.2,
              "spectab-debounce-ms": 0, "spectab-deadline-ms": 900, "spectab-multiline": "never",
              "spectab-context-tokens": 512, "spectab-languages": ["python", "c"],
              "spectab-engine": "http://127.0.0.1:8000", "spectab-engine-api": "infill",
              "spectab-engine-model": "codellama", "spectab-engine-api-key-env": "SPECTAB_KEY",
              "spectab-kv-lanes": 4, "spectab-idle-minutes": 0.5, "spectab-extra-context-tokens": 0,
              "spectab-min-confidence": 0.25, "spectab-candidates": 2, "spectab-draft-fim": "none"}
    def elisp(v):
        return "'(" + " ".join(map(elisp, v)) + ")" if isinstance(v, list) else json.dumps(v)

    sets = " ".join(f"(setq {k} {elisp(v)})" for k, v in values.items())
    code = f"(progn (require 'spectab) {sets} (princ (json-encode (spectab-settings))))"
    r = subprocess.run([emacs, "--batch", "-L", str(CLIENT_DIR), "--eval", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert sent == {"profile": "smollm2-135m", "target": "/models/t.gguf", "draft": "ngram", "device": "cpu",
                    "maxNewTokens": 16, "temperature": 0.2, "debounceMs": 0, "deadlineMs": 900, "multiline": "never",
                    "contextTokens": 512, "languages": ["python", "c"],
                    "engine": "http://127.0.0.1:8000", "engineApi": "infill", "engineModel": "codellama",
                    "engineApiKeyEnv": "SPECTAB_KEY", "kvLanes": 4, "idleMinutes": 0.5, "extraContextTokens": 0,
                    "minConfidence": 0.25, "candidates": 2, "draftFim": "none"}
    settings, problems = apply(Settings(), sent)
    assert problems == [] and settings.maxNewTokens == 16 and settings.languages == ("python", "c")
    assert settings.engine == "http://127.0.0.1:8000" and settings.kvLanes == 4 and settings.idleMinutes == 0.5
    assert settings.extraContextTokens == 0 and settings.minConfidence == 0.25 and settings.candidates == 2
    # left at nil, nothing is sent: the server keeps its defaults
    r = subprocess.run([emacs, "--batch", "-L", str(CLIENT_DIR), "--eval",
                        "(progn (require 'spectab) (princ (json-encode (spectab--initialization-options))))"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == {}, r.stderr
