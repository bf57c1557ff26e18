#!/bin/bash
# The GPU stand-in run, device side: install the carried wheels, run standin.py, hand back $OUT.
# usage (repo root, on a bare GPU machine; carry .devcarry and .whl):
#   BUDGET=570 bash tools/gpu_standin/run.sh [standin.py options]
# .devcarry/llama.cpp: the llama.cpp tree vendored in the xllamacpp sdist we pin (b11549, the build the
# embedded engine and 02's compute-buffer model follow), trimmed; .whl: papermill, ipykernel, gguf … for
# the device's Python. Both are made here by tools/gpu_standin/make_carry.sh.
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-570}
RES=${RES:-/tmp/standin}
OUT=${OUT:-/tmp/standin-out}
mkdir -p "$RES" "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
# .lbbin: an earlier call's PACK_BIN parts — its CUDA build, back in /tmp/lb (run standin.py with --binary).
if ls .lbbin/lb-bin.tar.xz.* >/dev/null 2>&1; then
  cat .lbbin/lb-bin.tar.xz.* | xz -d | tar x -C / && echo "unpacked the carried build: $(ls /tmp/lb/bin | wc -l) files"
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$RES/pip.log" 2>&1 || { echo "wheel install failed"; tail -20 "$RES/pip.log"; }
fi
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export SPARKKIT_HOME=${SPARKKIT_HOME:-/tmp/sk} SPARKKIT_RUNS=$RES/runs
echo "setup: $(( $(date +%s) - T0 )) s"
RESERVE=15; [ -n "${PACK_BIN:-}" ] && RESERVE=45
python3 tools/gpu_standin/standin.py --res "$RES" --budget $(( BUDGET - ($(date +%s) - T0) - RESERVE )) "$@"
rc=$?
# PACK_BIN=1: the CUDA build's binaries (and the DEBUG_TIMINGS server) come back in ≤15 MiB parts, so a
# later call can carry them (cat parts | tar xJ -C /) and skip the 5-minute build for experiments.
if [ -n "${PACK_BIN:-}" ] && [ -x /tmp/lb/bin/llama-server ]; then
  rm -rf /tmp/pack && mkdir -p /tmp/pack/tmp/lb/bin /tmp/pack/tmp/lb-debug-timings
  cp -a /tmp/lb/bin/. /tmp/pack/tmp/lb/bin/
  cp -a /tmp/lb-debug-timings/llama-server /tmp/lb-debug-timings/libllama-server-impl.so \
    /tmp/pack/tmp/lb-debug-timings/ 2>/dev/null
  strip --strip-unneeded /tmp/pack/tmp/lb/bin/* /tmp/pack/tmp/lb-debug-timings/* 2>/dev/null
  tar cf - -C /tmp/pack tmp | xz -T0 -4 | split -b 15m - "$OUT/lb-bin.tar.xz."
  echo "packed: $(du -sh /tmp/pack | cut -f1) → $(cat "$OUT"/lb-bin.tar.xz.* | wc -c) bytes in $(( $(date +%s) - T0 )) s"
fi
# Full server logs stay behind (the -lv 4 ones are large); their excerpts travel.
tar czf "$OUT/standin.tgz" -C "$(dirname "$RES")" --exclude='*.log' "$(basename "$RES")"
cp "$RES/summary.txt" "$RES/results.json" "$OUT/" 2>/dev/null
ls -la "$OUT"
exit $rc
