#!/usr/bin/env bash
# Emacs 28+ and eglot for the Emacs client's tests (tests/editors/test_emacs.py).
# Non-interactive, quiet, idempotent: does nothing when both are already there.
set -euo pipefail

have_eglot() {
    command -v emacs >/dev/null 2>&1 &&
        emacs --batch --eval '(kill-emacs (if (and (>= emacs-major-version 28) (locate-library "eglot")) 0 1))' >/dev/null 2>&1
}

if have_eglot; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends emacs-nox elpa-eglot >/dev/null

if ! have_eglot; then
    echo "ci-install.sh: emacs 28+ with eglot is still missing after apt-get install" >&2
    exit 1
fi
