#!/usr/bin/env bash
# Rebuilds the prebuilt JupyterLab extension (labextension/) from lib/index.js, and the list
# of its files the gateway embeds (gateway/src/backends/labextension.rs). Needs node and npm;
# the JupyterLab it builds against is the one scripts/jupyter-requirements.txt names.
# Run it after changing lib/ or package.json, and commit both outputs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../../scripts/lib.sh"
VENV=$(jupyter_venv)
CORE=$(ls -d "$VENV"/lib/python3*/site-packages/jupyterlab/staging)
cd "$HERE"
npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent
rm -rf labextension
node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "$CORE" .
OUT="$ROOT/gateway/src/backends/labextension.rs"
{
  echo "//! The prebuilt auto-stop JupyterLab extension (notebook-runtime/jupyterlab-extension),"
  echo "//! embedded so the gateway can install it into every notebook's JupyterLab. Generated"
  echo "//! by notebook-runtime/jupyterlab-extension/build.sh; do not edit."
  echo
  echo "/// Its name, the directory under \`labextensions/\` it is installed in."
  echo "pub const NAME: &str = \"@atelier/auto-stop\";"
  echo
  echo "/// (path inside the extension's directory, contents)"
  echo "pub const FILES: &[(&str, &[u8])] = &["
  (cd labextension && find . -type f | sed 's|^\./||' | LC_ALL=C sort) | while read -r f; do
    echo "    ("
    echo "        \"$f\","
    echo "        include_bytes!(\"../../../notebook-runtime/jupyterlab-extension/labextension/$f\"),"
    echo "    ),"
  done
  echo "];"
} > "$OUT"
echo "built labextension/ and $OUT"
