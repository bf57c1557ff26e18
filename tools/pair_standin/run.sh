#!/bin/bash
# The pair stand-in, device side (nvidia-h200-x2): install the carried wheels, run pair.py, hand back $OUT.
# usage (repo root; carry .devcarry and .whl, made by tools/gpu_standin/make_carry.sh):
#   BUDGET=570 bash tools/pair_standin/run.sh [pair.py options]
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-570}
RES=${RES:-/tmp/pair}
OUT=${OUT:-/tmp/pair-out}
mkdir -p "$RES" "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
# .lbbin: an earlier call's PACK_BIN parts (its CUDA build with RPC, back in /tmp/lb): run with --binary.
if ls .lbbin/lb-bin.tar.xz.* >/dev/null 2>&1; then
  cat .lbbin/lb-bin.tar.xz.* | xz -d | tar x -C / && echo "unpacked the carried build: $(ls /tmp/lb/bin | wc -l) files"
fi
WHL=${WHL:-.whl}   # a slimmer wheel folder when the carry is tight (WHL=.whlslim: no jedi, debugpy, widgetsnbextension)
if ls "$WHL"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
    > "$RES/pip.log" 2>&1 || { echo "wheel install failed"; tail -20 "$RES/pip.log"; }
fi
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export SPARKKIT_HOME=${SPARKKIT_HOME:-/tmp/sk} SPARKKIT_RUNS=$RES/runs
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv
echo "setup: $(( $(date +%s) - T0 )) s"
python3 tools/pair_standin/pair.py --res "$RES" --budget $(( BUDGET - ($(date +%s) - T0) - 20 )) "$@"
rc=$?
if [ -n "${PACK_BIN:-}" ] && [ -x /tmp/lb/bin/llama-server ]; then
  rm -rf /tmp/pack && mkdir -p /tmp/pack/tmp/lb/bin && cp -a /tmp/lb/bin/. /tmp/pack/tmp/lb/bin/
  strip --strip-unneeded /tmp/pack/tmp/lb/bin/* 2>/dev/null
  tar cf - -C /tmp/pack tmp | xz -T0 -4 | split -b 15m - "$OUT/lb-bin.tar.xz."
fi
cp "$SPARKKIT_HOME"/server/rpc-server-*.log "$RES/logs/" 2>/dev/null
tar czf "$OUT/pair.tgz" -C "$(dirname "$RES")" --exclude='*.gguf' "$(basename "$RES")"
cp "$RES/summary.txt" "$RES/results.json" "$OUT/" 2>/dev/null
ls -la "$OUT"
exit $rc
