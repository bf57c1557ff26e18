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
--rpc SERVERS                           comma separated list of RPC servers (host:port)
-ts,   --tensor-split N0,N1,N2,...      fraction of the model to offload to each GPU, comma-separated list of
                                        proportions, e.g. 3,1
"""
VALUED = {"-m", "-c", "--ctx-size", "-np", "--parallel", "-ngl", "-fa", "--flash-attn", "-lm", "-ub", "-b", "-lv",
          "--alias", "--host", "--port", "--api-key-file", "-t", "-ctk", "-ctv", "--ctx-checkpoints", "--cache-ram",
          "--rpc", "-ts"}
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
    for endpoint in filter(None, opts.get("--rpc", "").split(",")):
        # llama.cpp connects to every RPC server before it loads anything (and aborts when one is missing);
        # the embedded engine then serves the whole model here: the split itself is proven on GPUs.
        import socket
        host, port = endpoint.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError:
            print(f"Failed to connect to {endpoint}", file=sys.stderr)
            print(f"llama_model_load_from_file_impl: failed to add RPC server {endpoint}", file=sys.stderr)
            return 1
        print(f"RPC server {endpoint}: connected", flush=True)
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


def rpc(argv: list[str]) -> int:
    """rpc-server's command line (-H, -p, -c, -t, -d): listens, prints its banner in the shape b11549 prints it
    (records/pair/cpu-tiny-b11549/logs), holds each connection until the client leaves, exits 0 on SIGTERM."""
    import socket
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        if argv[i] in ("-H", "--host", "-p", "--port", "-t", "--threads", "-d", "--device"):
            opts[argv[i]] = argv[i + 1]
            i += 2
        elif argv[i] in ("-c", "--cache"):
            opts["-c"] = "1"
            i += 1
        else:
            print(f"error: unknown argument: {argv[i]}", file=sys.stderr)
            return 1
    host, port = opts.get("-H", opts.get("--host", "127.0.0.1")), int(opts.get("-p", opts.get("--port", 50052)))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((host, port))
    except OSError as e:
        print(f"Failed to create server socket: {e}", file=sys.stderr)
        return 1
    srv.listen(4)
    print("Starting RPC server v8.0.0\n"          # records/pair/cpu-tiny-b11549/logs/rpc-server-*.log
          f"  endpoint       : {host}:{port}\n"
          f"  local cache    : {'~/.cache/llama.cpp/rpc/' if '-c' in opts else 'n/a'}\n"
          "Devices:\n  CPU: stand-in CPU (fakes.py)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    def hold(conn):
        with conn:
            while conn.recv(65536):
                pass
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=hold, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit({"server": server, "bench": bench, "rpc": rpc}[sys.argv[1]](sys.argv[2:]))
