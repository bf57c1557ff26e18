"""llama.cpp over two boxes: the `rpc-server` each other box runs, started before the head's llama-server
and stopped with it (05, `sparkkit stop`).

A pair launch is 02's plan: `Serving.rpc` lists the rpc-server endpoints (the peer's link address and port,
and, where the head's accelerator is the CPU, its own loopback one) and `Serving.split` the layers each
device holds. Here each endpoint gets its rpc-server: on the peer through SSH (`pair.ssh_argv`), on this
machine as a detached process — with `CUDA_VISIBLE_DEVICES` when one machine's GPUs stand in for two boxes
(01's `loopback:N`). An rpc-server serves whoever connects and has no key: it binds to the link address
(a cable between the two boxes), or to loopback, never to every address.

Each rpc-server is recorded like the head (pid + start time + command line, read on its own box), so
`stop` only ever stops the process sparkkit started.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import ServeError

BINARY = "ggml-rpc-server"      # tools/rpc/CMakeLists.txt (b11549): set(TARGET ggml-rpc-server)


def ssh_argv(host: str, *argv: str) -> list[str]:
    """`argv` run on `host` over SSH, never prompting: the way 01 reaches the peer (sparkkit.pair.ssh_argv)."""
    from ..pair import ssh_argv as pair_ssh
    return pair_ssh(host, *argv)


def binary_for(runtime: dict[str, Any]) -> str:
    """llama.cpp's rpc-server (its binary and CMake target are `ggml-rpc-server`, tools/rpc) beside the head's
    llama-server: 04 builds both; on the peer, 04 built it at the same path."""
    path = runtime.get("path") or ""
    if not path:
        raise ServeError("a pair needs llama.cpp's own build (llama-server and rpc-server with RPC): the embedded "
                         "engine has no RPC backend — run 04-engine with -p build yes, or -p binary PATH")
    return str(Path(path).with_name(BINARY))


def argv_for(binary: str, endpoint: str, threads: int | None = None) -> list[str]:
    host, port = endpoint.rsplit(":", 1)
    # no -c (rpc-server's tensor cache): on the H200 pair a load with the cache warm took 139 s, one without
    # it 137 s, and the first load that fills it 172 s and ~31 GB of the peer's disk (records/pair). The model
    # file lives on this box only; the peer's share crosses the link as it loads.
    a = [binary, "-H", host, "-p", port]
    if threads:
        a += ["-t", str(threads)]
    return a


def listening(endpoint: str, timeout: float = 1.0) -> bool:
    host, port = endpoint.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _local_ticks(pid: int) -> int | None:
    from ..serve import _proc_start_ticks
    return _proc_start_ticks(pid)


def _remote(host: str, *argv: str, timeout: float = 20.0) -> tuple[int, str]:
    try:
        out = subprocess.run(ssh_argv(host, *argv), capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 255, str(e)
    return out.returncode, out.stdout


def _remote_identity(host: str, pid: int) -> tuple[int | None, list[str] | None]:
    rc, out = _remote(host, "sh", "-c", f"cat /proc/{int(pid)}/stat && echo && tr '\\0' '\\n' < /proc/{int(pid)}/cmdline")
    if rc != 0 or not out:
        return None, None
    stat, _, cmd = out.partition("\n")
    try:
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None, None
    return ticks, [ln for ln in cmd.splitlines() if ln]


def is_ours(rec: dict[str, Any]) -> bool:
    if rec.get("where") == "ssh":
        ticks, argv = _remote_identity(rec["host"], rec["pid"])
        return ticks is not None and ticks == rec.get("start_ticks") and argv == rec.get("argv")
    from ..serve import is_ours as local_ours
    return local_ours(rec)


def start(endpoint: str, binary: str, where: str, host: str = "", gpu: str | None = None,
          threads: int | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Start one rpc-server and wait until its endpoint accepts connections; its record."""
    from .. import records
    if listening(endpoint):
        raise ServeError(f"{endpoint} already answers: a process sparkkit did not start holds the rpc-server port "
                         f"(stop it, or free port {endpoint.rsplit(':', 1)[1]} on that box)")
    argv = argv_for(binary, endpoint, threads)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    proc: subprocess.Popen | None = None
    if where == "ssh":
        log = f"~/.sparkkit/server/rpc-server-{endpoint.rsplit(':', 1)[1]}-{stamp}.log"
        env = f"CUDA_VISIBLE_DEVICES={shlex.quote(gpu)} " if gpu is not None else ""
        script = (f"mkdir -p ~/.sparkkit/server && test -x {shlex.quote(binary)} || exit 17; "
                  f"{env}setsid {shlex.join(argv)} > {log} 2>&1 < /dev/null & echo $!")
        rc, out = _remote(host, "sh", "-c", script)
        if rc == 17:
            raise ServeError(f"{host} has no {binary}: run 04-engine on the peer too (the pair runs the same "
                             "llama.cpp build on both boxes), then 05 again")
        if rc != 0 or not out.strip().isdigit():
            raise ServeError(f"could not start rpc-server on {host} over SSH (exit {rc}): check `ssh {host} true` "
                             "works without a password (01 checks it)")
        pid = int(out.strip())
        ticks, seen = _remote_identity(host, pid)
        rec = {"endpoint": endpoint, "where": "ssh", "host": host, "pid": pid, "start_ticks": ticks,
               "argv": seen or argv, "log": log, "gpu": gpu}
    else:
        path = records.home() / "server" / f"rpc-server-{endpoint.rsplit(':', 1)[1]}-{stamp}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        with open(path, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env)
        rec = {"endpoint": endpoint, "where": "local", "host": "", "pid": proc.pid, "start_ticks": None,
               "argv": argv, "log": str(path), "gpu": gpu}
    deadline = time.monotonic() + timeout
    while not listening(endpoint):
        gone = proc.poll() is not None if proc is not None else not is_ours(rec)
        if gone:
            tail = _tail(rec)
            raise ServeError(f"rpc-server for {endpoint} exited before it listened; last lines of its log "
                             f"({rec['log']}):\n{tail}")
        if time.monotonic() > deadline:
            if proc is not None:
                _identify(rec)
            stop(rec)
            raise ServeError(f"rpc-server for {endpoint} did not listen within {timeout:.0f} s; stopped")
        time.sleep(0.2)
    if proc is not None:
        _identify(rec)
    return rec


def _identify(rec: dict[str, Any]) -> None:
    """Record the local rpc-server as the kernel shows it now that it runs (start time and command line: what
    `stop` checks), not as it looked at the instant of the spawn."""
    from ..serve import _proc_cmdline
    rec["start_ticks"] = _local_ticks(rec["pid"])
    rec["argv"] = _proc_cmdline(rec["pid"]) or rec["argv"]


def _tail(rec: dict[str, Any], lines: int = 15) -> str:
    if rec.get("where") == "ssh":
        return _remote(rec["host"], "sh", "-c", f"tail -n {lines} {rec['log']}")[1]
    from ..serve import log_tail
    return log_tail(Path(rec["log"]), lines)


def stop(rec: dict[str, Any], timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL, the rpc-server `rec` records — only while it is still the one sparkkit started.
    Returns whether it was ours (and is now stopped)."""
    if not is_ours(rec):
        return False
    if rec.get("where") == "ssh":
        pid = int(rec["pid"])
        _remote(rec["host"], "sh", "-c", f"kill {pid}; for i in $(seq {int(timeout * 10)}); do "
                                         f"kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; kill -9 {pid}")
        return True
    from ..serve import stop_server
    stop_server(rec, timeout)
    return True


def start_all(serving_rpc: tuple[str, ...], runtime: dict[str, Any], pair: dict[str, Any] | None,
              threads: int | None = None) -> list[dict[str, Any]]:
    """Every rpc-server of a pair launch, in order; if one fails, those already started are stopped."""
    binary = binary_for(runtime)
    pair = pair or {}
    started: list[dict[str, Any]] = []
    try:
        for i, endpoint in enumerate(serving_rpc):
            peer = i == 0
            if peer and pair.get("transport") == "ssh":
                started.append(start(endpoint, binary, "ssh", host=pair.get("host") or pair.get("peer", ""),
                                     threads=threads))
            else:
                gpu = pair.get("peer_gpu_index") if peer else None
                started.append(start(endpoint, binary, "local", gpu=None if gpu is None else str(gpu),
                                     threads=threads))
    except BaseException:
        for rec in started:
            stop(rec)
        raise
    return started


def stop_all(recs: list[dict[str, Any]]) -> list[str]:
    """Stop the recorded rpc-servers that are still ours; what was done, a line each."""
    done = []
    for rec in recs:
        ours = stop(rec)
        where = rec.get("host") or "this machine"
        done.append(f"rpc-server {rec['endpoint']} on {where}: " + ("stopped" if ours else
                                                                     "no longer the one sparkkit started; left alone"))
    return done
