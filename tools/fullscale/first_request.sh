#!/bin/bash
# The first Claude Code request in a new project, at full scale, in one device call from a bare machine:
#   run(command="bash tools/fullscale/first_request.sh", carry=[".fullcarry"], timeout_s=600)
# (.fullcarry: tools/fullscale/make_carry.sh; only its xllamacpp sdist and gguf wheel are used.)
# What it does and writes to $OUT: tools/fullscale/first_request_device.py. The analysis here:
# tools/fullscale/first_request.py (bodies, tokens, local, spark); the record: records/fullscale/first-request/.
set -u
export OUT=${OUT:-/tmp/fr-out} NCCL_NVLS_ENABLE=0
mkdir -p "$OUT"
python3 tools/fullscale/first_request_device.py
echo "== results"; cat "$OUT/results.jsonl" 2>/dev/null | cut -c1-400
ls -la "$OUT"
