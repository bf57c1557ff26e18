#!/bin/bash
# A second llama-server, beside a finished ninja build, with the server's own per-step timers on
# (server-context.cpp's DEBUG_TIMINGS: every 5 s it logs the average time of pre_decode, decode
# — synchronized, so the GPU's time — and post_decode, which holds sampling). Only that one file is
# recompiled (~25 s) and relinked into OUT_DIR; the build itself is left as it was.
#   bash tools/gpu_standin/debug_timings.sh BUILD_DIR OUT_DIR   → OUT_DIR/llama-server
set -euo pipefail
B=$(cd "$1" && pwd); O=$(mkdir -p "$2" && cd "$2" && pwd)
cd "$B"
obj=tools/server/CMakeFiles/server-context.dir/server-context.cpp.o
cc=$(ninja -t commands tools/server/libserver-context.a | grep -F -- "-o $obj " | tail -1)
[ -n "$cc" ] || { echo "no compile command for $obj in $B" >&2; exit 1; }
eval "${cc/ -o $obj / -DDEBUG_TIMINGS -o $O/server-context.cpp.o }"
cp tools/server/libserver-context.a "$O/"
(cd "$O" && ar r libserver-context.a server-context.cpp.o)
ld1=$(ninja -t commands bin/libllama-server-impl.so | tail -1)
ld1=${ld1//tools\/server\/libserver-context.a/$O/libserver-context.a}
eval "${ld1/-o bin\/libllama-server-impl.so/-o $O/libllama-server-impl.so}"
ld2=$(ninja -t commands bin/llama-server | tail -1)
ld2=${ld2//bin\/libllama-server-impl.so/$O/libllama-server-impl.so}
ld2=${ld2/-o bin\/llama-server/-o $O/llama-server}
eval "${ld2/-Wl,-rpath,/-Wl,-rpath,$O:}"
echo "$O/llama-server"
