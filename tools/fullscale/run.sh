#!/bin/bash
# The owner's command at full scale, device side: `sparkkit run` itself on a bare GPU machine, with
# gpt-oss-120b (the scripted stand-in at its real shapes: 59 GiB in three shards) downloaded through
# huggingface_hub from a Hub-shaped server on loopback — the Hub is the only stand-in.
#
# Every call: start the phases (detached, so they outlive the call) unless they are already running,
# wait up to WAIT seconds for them, then pack what exists into $OUT. Call again to wait more; the
# machine must still be warm (a fresh one starts over).
#   run(command="WAIT=570 bash tools/fullscale/run.sh", carry=[".fullcarry"], timeout_s=600)
# .fullcarry is made here by tools/fullscale/make_carry.sh (wheels, the pinned sdist, the CLI in parts).
set -u
RES=${RES:-/tmp/fullscale}
WAIT=${WAIT:-570}
OUT=${OUT:-/tmp/fullscale-out}
T0=$(date +%s)
mkdir -p "$RES" "$OUT"
if [ ! -f "$RES/STARTED" ]; then
  date +%s > "$RES/STARTED"
  setsid nohup ${PYTHON:-python3} tools/fullscale/phases.py "$RES" > "$RES/phases.log" 2>&1 < /dev/null &
  echo "started the phases (pid $!)"
fi
while [ ! -f "$RES/DONE" ] && [ $(( $(date +%s) - T0 )) -lt "$WAIT" ]; do sleep 5; done
[ -f "$RES/DONE" ] && echo "phases done: $(cat "$RES/DONE")" || echo "phases still running after ${WAIT} s of this call"
tail -n 60 "$RES/phases.log"
# What comes back: the executed runbooks and records, the phase times, the notes' numbers, log excerpts.
tar czf "$OUT/fullscale.tgz" -C "$RES" --exclude='*.gguf' --exclude='*.part' --exclude='server' \
  --exclude='home/models' --exclude='home/build' phases.log phases.tsv facts.txt runs logs 2>/dev/null
ls -la "$OUT"
