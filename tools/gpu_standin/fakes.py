"""Stand-in binaries for a dry run of standin.py on a machine without a GPU (tests, CI).

    python fakes.py server -m MODEL --port P [-c N] [-ub N] [-b N] [-np N] [-lv N] [-lm MODE] …
    python fakes.py bench -m MODEL -p 2048 -n 32 -d 0,8192 -o json …

`server` is llama.cpp's own server from the xllamacpp wheel (the embedded engine) behind a
llama-server-like command line: its --help lists -lm/--load-mode and no --no-mmap (like the pinned
build), unknown flags exit 1, and at -lv 4 llama.cpp itself logs the CPU buffer sizes. `bench`
prints llama-bench-shaped JSON with made-up speeds. Wrap each in a one-line shell script named
llama-server / llama-bench (see tests/test_gpu_standin.py).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading

HELP = """----- common params -----
-h,    --help, --usage                  print usage and exit
-c,    --ctx-size N                     size of the prompt context
-np,   --parallel N                     number of server slots
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
-lm,   --load-mode {auto,none,mmap,mlock,mmap+mlock,dio}
-ub,   --ubatch-size N                  physical maximum batch size
-b,    --batch-size N                   logical maximum batch size
-lv,   --verbosity, --log-verbosity N   set the verbosity threshold
--kv-unified                            use a single unified KV buffer
--jinja                                 use jinja template for chat
--alias STRING                          model alias
--host HOST                             ip address to listen
--port PORT                             port to listen (default: 8080)
--metrics                               enable prometheus compatible metrics endpoint
--api-key-file FNAME                    path to file containing API keys
-ctxcp, --ctx-checkpoints, --swa-checkpoints N
                                        max number of context checkpoints to create per slot
-bs,   --backend-sampling               enable backend sampling (experimental)
-cram, --cache-ram N                    set the maximum cache size in MiB (default: 8192, -1 - no limit, 0 - disable)
"""
VALUED = {"-m", "-c", "--ctx-size", "-np", "--parallel", "-ngl", "-fa", "--flash-attn", "-lm", "-ub", "-b", "-lv",
          "--alias", "--host", "--port", "--api-key-file", "-t", "-ctk", "-ctv", "--ctx-checkpoints", "--cache-ram"}
FLAGS = {"--kv-unified", "--jinja", "--metrics", "--backend-sampling"}


def server(argv: list[str]) -> int:
    if "--help" in argv or "-h" in argv:
        print(HELP)
        return 0
    if "--version" in argv:
        print("version: 0 (fake)\nbuilt with fakes.py")
        return 0
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in VALUED:
            opts[a] = argv[i + 1]
            i += 2
        elif a in FLAGS:
            opts[a] = "1"
            i += 1
        else:
            print(f"error: invalid argument: {a}", file=sys.stderr)
            return 1
    import xllamacpp as xlc
    p = xlc.CommonParams()
    p.model.path = opts["-m"]
    p.hostnames = [opts.get("--host", "127.0.0.1")]
    p.port = int(opts.get("--port", 8080))
    p.n_ctx = int(opts.get("-c", opts.get("--ctx-size", 4096)))
    p.n_parallel = int(opts.get("-np", 1))
    p.n_ubatch = int(opts.get("-ub", 512))
    p.n_batch = int(opts.get("-b", 2048))
    p.model_alias = {opts.get("--alias", os.path.basename(opts["-m"]))}
    p.verbosity = int(opts.get("-lv", 3))
    if "--cache-ram" in opts:
        p.cache_ram_mib = int(opts["--cache-ram"])
    if "--ctx-checkpoints" in opts:
        p.n_ctx_checkpoints = int(opts["--ctx-checkpoints"])
    p.sampling.backend_sampling = "--backend-sampling" in opts
    p.fit_params = False
    p.warmup = False
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    srv = xlc.Server(p)  # noqa: F841 (destroying it right away deadlocks; keep it until SIGTERM)
    stop.wait()
    os._exit(0)


def bench(argv: list[str]) -> int:
    opts = dict(zip(argv[::2], argv[1::2]))
    rows = []
    for d in (int(x) for x in opts.get("-d", "0").split(",")):
        rows.append({"n_prompt": int(opts.get("-p", 512)), "n_gen": 0, "n_depth": d, "avg_ts": 100.0 - d / 1000,
                     "stddev_ts": 1.0, "build_commit": "fake", "build_number": 0})
        for n in (int(x) for x in opts.get("-n", "32").split(",")):
            rows.append({"n_prompt": 0, "n_gen": n, "n_depth": d, "avg_ts": 10.0 - d / 10000,
                         "stddev_ts": 0.1, "build_commit": "fake", "build_number": 0})
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit({"server": server, "bench": bench}[sys.argv[1]](sys.argv[2:]))
