#!/usr/bin/env bash
# Set up a fresh machine for haq: a virtual environment in .venv with the CPU build of
# PyTorch (unless a torch is already importable there), haq in editable mode with its dev
# tools, and the Fashion-MNIST files (Debian package dataset-fashion-mnist) when missing.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # the CPU wheel; users with a GPU install their CUDA build of torch first
  .venv/bin/pip install -q "torch==2.13.0"
fi
if ! .venv/bin/pip install -q -e ".[dev,report,export,ray,tvm]" >.venv/pip.log 2>&1; then
  cat .venv/pip.log >&2
  exit 1
fi
.venv/bin/python -c "import haq, torch; print('haq', haq.__version__, 'torch', torch.__version__)"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${HAQ_DATA:-}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "note: could not install dataset-fashion-mnist; set HAQ_DATA to the IDX files" >&2
  else
    echo "note: Fashion-MNIST not found; install dataset-fashion-mnist or set HAQ_DATA" >&2
  fi
fi
