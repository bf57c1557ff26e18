"""Start, watch and stop the model server — and never touch a process sparkkit did not start.

This module is engine-neutral: `run` (05) reads the placed model and 02's serving settings and hands
them to the engine's module (sparkkit.engines); `stop`/`status` ask the engine that started a server
whether it is still its own (`is_running`) before touching it. The process machinery below is what
llama.cpp (a process sparkkit starts) uses; containers and Ollama's models have theirs in their modules.

The server runs detached (its own session), so it outlives the notebook kernel that started
it. What we started is written to the state file as pid + the kernel's start time for that pid
+ its command line; `stop()` signals a process only when all three still match, so a reused
pid or somebody else's server is left alone.

Stop it from a shell with ``sparkkit stop`` (or ``python -m sparkkit stop``).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import records
from .engines.launch import Launch, ServerFlags, command_line, to_argv
from .errors import ServeError

RUNTIMES = ("embedded", "binary")


# ----------------------------------------------------------------------------- processes
def _proc_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def is_ours(server: dict[str, Any]) -> bool:
    """True while the process recorded in `server` is still the one sparkkit started."""
    pid = server.get("pid")
    return (isinstance(pid, int) and _proc_start_ticks(pid) == server.get("start_ticks")
            and _proc_cmdline(pid) == server.get("argv"))


def port_in_use(host: str, port: int) -> bool:
    """Is something listening there? (SO_REUSEADDR as servers use it, so TIME_WAIT leftovers don't count.)"""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------- commands
def server_argv(launch: Launch, runtime: dict[str, Any]) -> list[str]:
    """The command that serves `launch` on `runtime` ({"kind": "embedded"} or {"kind": "binary", "path": ...})."""
    kind = runtime.get("kind")
    if kind == "embedded":
        text = json.dumps(launch.to_dict(), indent=2)
        # one spec per launch (named by its content): a replaced server's own command line still
        # names its own spec, so it can be started again exactly as it was
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        spec = records.home() / "server" / f"launch-{launch.port}-{digest}.json"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(text, encoding="utf-8")
        return [sys.executable, "-m", "sparkkit.engines.embedded", str(spec)]
    if kind == "binary":
        binary = runtime["path"]
        try:
            help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ServeError(f"cannot run {binary} --help ({e}); re-run 04-engine") from e
        return to_argv(launch, binary, ServerFlags.from_help(help_text))
    raise ServeError(f"unknown engine runtime {runtime!r}; re-run 04-engine")


@dataclass
class Started:
    pid: int
    base_url: str
    load_seconds: float
    argv: list[str]
    log: Path
    replaced: str | None      # what happened to a previous sparkkit server, if any
    replaced_pid: int | None = None   # the sparkkit server this one took over from
    kept: bool = False                # the running server already served this launch: nothing was started
    engine: str = "llamacpp"
    container: str = ""               # SGLang/vLLM: the container's id
    notes: list[str] = field(default_factory=list)   # what the engine could not apply, with the fix

    @property
    def what(self) -> str:
        if self.container:
            return f"container {self.container[:12]}"
        return f"pid {self.pid}" if self.pid else "model loaded"

    def record(self) -> tuple[str, str, dict[str, Any]]:
        from .engines import label
        if self.kept:
            head = f"{label(self.engine)} already serving this launch at {self.base_url} ({self.what}): kept, not restarted"
        else:
            head = f"{label(self.engine)} serving at {self.base_url} ({self.what}), ready in {self.load_seconds:.2f} s" + \
                (f"; replaced pid {self.replaced_pid}" if self.replaced_pid else "")
        warned = [n for n in self.notes if n.startswith("warning")]
        if warned:
            head += "; " + warned[0]
        return ("warn" if warned else "pass", head, {**self.as_row(), "argv": self.argv, "replaced": self.replaced,
                                                     "notes": self.notes})

    def spark_command(self) -> str:
        """The same launch as the owner would type it on a GB10 (llama-server, docker run, or Ollama's steps)."""
        from .engines import module
        from .engines.serving import Serving
        state = records.load_state()
        serving = Serving.from_dict(state["plan"]["serving"]) if (state.get("plan") or {}).get("serving") else None
        if self.engine == "llamacpp" or serving is None:
            launch = Launch.from_dict(state["server"]["launch"])
            from dataclasses import replace
            # a pair: each rpc-server first, on its own box, as 05 started it
            first = [f"# on {r.get('host') or 'this machine'}"
                     + (f" (CUDA_VISIBLE_DEVICES={r['gpu']})" if r.get("gpu") is not None else "") + ":\n"
                     + command_line(r["argv"]) for r in state["server"].get("rpc_servers") or []]
            head = command_line(to_argv(replace(launch, threads=None, cuda_devices=None)))
            return "\n".join(first + ([f"# then here:\n{head}"] if first else [head]))
        srv = state["server"]["launch"]
        return command_line(module(self.engine).command(serving, state["model"], srv["host"], srv["port"]))

    def as_row(self) -> dict[str, Any]:
        return {"engine": self.engine, "pid": self.pid, "container": self.container, "url": self.base_url,
                "load time (s)": round(self.load_seconds, 2), "log": str(self.log), "command": command_line(self.argv)}


def _records_dir() -> Path:
    """One record per server sparkkit started, beside the logs: `stop`/`status` find every one of them
    even when state.json is gone or unreadable (still checked by pid + start time + command line)."""
    return records.home() / "server" / "running"


def _record_id(server: dict[str, Any]) -> str:
    """A process by its pid, a container by its id, an Ollama model by its name."""
    return str(server.get("pid") or server.get("container", "")[:12] or server.get("model", "server")).replace("/", "_").replace(":", "_")


def _alive(server: dict[str, Any]) -> bool:
    """Is `server` still what sparkkit started? Its engine says (pid + start time + argv, container id +
    label, or the model loaded)."""
    from .engines import module
    try:
        return bool(module(server.get("engine", "llamacpp")).is_running(server))
    except Exception:      # an engine that cannot be asked (docker gone, service down): not ours to touch
        return False


def stop_any(server: dict[str, Any], timeout: float = 15.0, remove: bool = True) -> bool:
    """Stop `server` the way its engine stops it (only while `_alive`)."""
    from .engines import module
    forced = module(server.get("engine", "llamacpp")).stop(server, timeout, remove=remove)
    _drop_record(server)
    return forced


def _write_record(server: dict[str, Any]) -> Path:
    path = _records_dir() / f"{_record_id(server)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records._write_json(path, server, mode=0o600)
    return path


def _drop_record(server: dict[str, Any]) -> None:
    (_records_dir() / f"{_record_id(server)}.json").unlink(missing_ok=True)


def recorded_servers() -> list[dict[str, Any]]:
    """The servers sparkkit recorded that are still the processes it started; stale records are removed."""
    found = []
    for path in sorted(_records_dir().glob("*.json")):
        try:
            server = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(server, dict) and _alive(server):
            found.append(server)
        else:
            path.unlink(missing_ok=True)
    return found


def _state_server() -> tuple[dict[str, Any] | None, str]:
    """(the server state.json names, or None; why not, when it cannot be read)."""
    try:
        return records.load_state().get("server"), ""
    except records.SparkkitError as e:
        return None, str(e)


def healthy(base_url: str, path: str = "/health", timeout: float = 5.0) -> bool:
    """Does the server at `base_url` answer `path` (its engine's health check) with 200 (no key needed)?"""
    try:
        return httpx.get(f"{base_url.rstrip('/')}{path}", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def answers(base_url: str, timeout: float = 5.0) -> bool:
    """Does anything answer HTTP at `base_url` (any status)? For a URL whose engine is not known here — a
    settings file may point at llama.cpp, Ollama, a container or the LiteLLM bridge, each with its own health path."""
    try:
        httpx.get(f"{base_url.rstrip('/')}/", timeout=timeout)
        return True
    except (httpx.HTTPError, ValueError):
        return False


def _launch_proc(argv: list[str], launch: Launch, runtime: dict[str, Any]) -> tuple[subprocess.Popen, dict, Path]:
    """Start `argv` detached with a log of its own (a replaced server's log is never overwritten)."""
    log = records.home() / "server" / f"server-{launch.port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while log.exists():
        log, n = log.with_name(f"server-{launch.port}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.log"), n + 1
    env = None
    if launch.cuda_devices is not None:      # one machine's GPUs standing in for a pair's boxes
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": launch.cuda_devices}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    server = {"pid": proc.pid, "start_ticks": _proc_start_ticks(proc.pid), "argv": _proc_cmdline(proc.pid) or argv,
              "base_url": launch.base_url, "log": str(log), "launch": launch.to_dict(), "runtime": runtime,
              "started_at": records.now()}
    return proc, server, log


def end_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """A child that failed its start: SIGTERM, then SIGKILL after `grace` seconds; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bring_up(argv: list[str], launch: Launch, runtime: dict[str, Any], timeout: float,
              before=None) -> tuple[dict, Path, float]:
    """Start and wait until healthy; on failure the process is gone and ServeError says why. `before`: what
    must run first and is recorded with the server (a pair's rpc-servers), undone if the server fails."""
    from .engines import rpc
    t0 = time.monotonic()
    peers = before() if before else []
    try:
        proc, server, log = _launch_proc(argv, launch, runtime)
    except BaseException:
        rpc.stop_all(peers)
        raise
    if peers:
        server["rpc_servers"] = peers
    _write_record(server)
    try:
        wait_healthy(proc, launch.base_url, log, timeout, f" (model {launch.model})")
    except BaseException:
        end_process(proc)
        _drop_record(server)
        rpc.stop_all(peers)
        raise
    load = time.monotonic() - t0
    server["load_seconds"] = round(load, 3)
    _write_record(server)
    return server, log, load


def start(launch: Launch, runtime: dict[str, Any], timeout: float = 900.0, before=None) -> Started:
    """Start a server for `launch`, wait until /health says ok, and record it.

    Never leaves the owner with less than they had: a sparkkit server already serving this very
    launch is kept; one on another port keeps serving until the new one is healthy; one on the same
    port is stopped only after every check that can run first has passed, and started again from its
    own command line if the new launch fails."""
    previous = next((s for s in [_state_server()[0]] if s and _alive(s)), None)
    same_launch = json.loads(json.dumps(launch.to_dict(), default=str)) == previous.get("launch") if previous else False
    if previous and same_launch and previous.get("runtime") == json.loads(json.dumps(runtime, default=str)) \
            and healthy(previous["base_url"]):
        return Started(previous["pid"], previous["base_url"], 0.0, previous["argv"], Path(previous["log"]),
                       f"kept the running sparkkit server (pid {previous['pid']}): it already serves this launch",
                       kept=True)
    same_port = bool(previous) and (previous.get("launch") or {}).get("port") == launch.port
    if previous and set(launch.rpc) & {r.get("endpoint") for r in previous.get("rpc_servers") or []}:
        same_port = True      # the new pair needs the old one's rpc-server ports (and the peer's memory)
    if port_in_use(launch.host, launch.port) and not same_port:
        raise ServeError(f"port {launch.port} on {launch.host} is already in use by a process sparkkit did not "
                         f"start; stop that process or choose another port (-p port {launch.port + 1})")
    if not Path(launch.model).is_file():
        raise ServeError(f"the model file {launch.model} is not there: re-run 03-place-model"
                         + (f"; the running server (pid {previous['pid']}) was left alone" if previous else ""))
    argv = server_argv(launch, runtime)           # runs the binary's --help: a broken build fails here
    replaced = None
    if previous and same_port:
        stop()
        try:
            server, log, load = _bring_up(argv, launch, runtime, timeout, before)
        except ServeError as e:
            back = _restart(previous, timeout)
            raise ServeError(f"{e}\n{back}") from None
        replaced = (f"replaced the sparkkit server pid {previous['pid']} on port {launch.port} (stopped once this "
                    f"launch had passed its checks; its log is kept at {previous.get('log')})")
    else:
        try:
            server, log, load = _bring_up(argv, launch, runtime, timeout, before)
        except ServeError as e:
            if previous:
                raise ServeError(f"{e}\nThe running sparkkit server (pid {previous['pid']}, "
                                 f"{previous['base_url']}) was left running.") from None
            raise
        if previous:
            stop_any(previous)
            replaced = (f"replaced the sparkkit server pid {previous['pid']} at {previous['base_url']} (stopped after "
                        f"this one was healthy; its log is kept at {previous.get('log')})")
    records.update_state("server", server)
    return Started(server["pid"], launch.base_url, load, argv, log, replaced,
                   replaced_pid=previous["pid"] if previous else None)


def _restart(previous: dict[str, Any], timeout: float) -> str:
    """Start the replaced server again from its own command line (the new launch failed)."""
    if previous.get("kind") == "container":
        from .engines.container import docker
        docker("start", previous["container"], timeout=120)
        return f"The new launch failed, so the previous sparkkit container {previous.get('name')} was started again."
    from .engines import rpc
    peers = previous.get("rpc_servers") or []

    def again() -> list[dict[str, Any]]:       # a pair: its rpc-servers first, from their own command lines
        return [rpc.start(r["endpoint"], r["argv"][0], r["where"], r.get("host", ""), r.get("gpu")) for r in peers]
    try:
        launch = Launch.from_dict(previous["launch"])
        server, _log, _load = _bring_up(list(previous["argv"]), launch, previous.get("runtime", {}), timeout,
                                        again if peers else None)
        records.update_state("server", server)
        return (f"The new launch failed, so the previous sparkkit server was started again (pid {server['pid']}, "
                f"{server['base_url']}).")
    except (ServeError, OSError, KeyError, TypeError) as e:
        return f"The previous sparkkit server could not be started again ({e}); run 05-serve with its settings."


def wait_healthy(proc: subprocess.Popen, base_url: str, log: Path, timeout: float, detail: str = "") -> float:
    """Poll /health until 200; return the seconds it took. If `proc` exits first, or time runs
    out, raise ServeError with the log's last lines. Also used by tools/gpu_standin for the
    servers it starts itself."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        while True:
            if proc.poll() is not None:
                raise ServeError(f"the server exited with code {proc.returncode} before it was ready"
                                 f"{detail}. Last lines of {log}:\n{log_tail(log)}")
            try:
                if client.get("/health").status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass   # not listening yet
            if time.monotonic() > deadline:
                raise ServeError(f"the server was not ready after {timeout:.0f} s; last lines of {log}:\n"
                                 f"{log_tail(log)}")
            time.sleep(0.1)


def stop_server(server: dict[str, Any], timeout: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL, the process `server` records — only while it is still the one sparkkit
    started. Returns whether it had to be forced."""
    pid = server["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_ours(server) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    forced = False
    if is_ours(server):
        os.kill(pid, signal.SIGKILL)
        forced = True
    _reap(pid)
    _drop_record(server)
    return forced


def stop(timeout: float = 15.0) -> dict[str, Any]:
    """Stop the server sparkkit started (SIGTERM, then SIGKILL); leave anything else alone. With no
    readable server in state.json (moved aside, corrupt), every server sparkkit recorded starting and
    that is still that process is stopped."""
    server, unreadable = _state_server()
    if server:
        what = _what(server)
        if not _alive(server):
            records.update_state("server", None)
            _drop_record(server)
            return {"stopped": False, "message": f"{what} is no longer the server sparkkit started "
                                                f"(it exited); left alone, record cleared"}
        forced = stop_any(server, timeout)
        records.update_state("server", None)
        return {"stopped": True, "message": f"stopped the sparkkit server ({what}{', forced' if forced else ''})"}
    live = recorded_servers()
    if not live:
        return {"stopped": False, "message": "no sparkkit server is recorded; nothing to stop"
                + (f" ({unreadable.split(';')[0]})" if unreadable else "")}
    whats = [_what(s) for s in live]
    for s in live:
        stop_any(s, timeout)
    why = "state.json is not readable" if unreadable else "state.json names none"
    return {"stopped": True, "message": f"stopped the sparkkit server{'s' if len(whats) > 1 else ''} "
                                        f"({', '.join(whats)}), found by their records ({why})"}


def _what(server: dict[str, Any]) -> str:
    if server.get("kind") == "container":
        return f"{server.get('engine')} container {server.get('name') or str(server.get('container'))[:12]}"
    if server.get("kind") == "ollama-model":
        return f"Ollama model {server.get('model')} (the Ollama service itself is left running)"
    return f"pid {server.get('pid')}"


def _reap(pid: int) -> None:
    """Collect the exit status if the server is our child (same kernel), so it is not a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status() -> dict[str, Any]:
    server, unreadable = _state_server()
    if not server:
        live = recorded_servers()
        out: dict[str, Any] = {"running": bool(live)}
        if live:
            out.update(pid=live[0]["pid"], base_url=live[0].get("base_url"), log=live[0].get("log"),
                       started_at=live[0].get("started_at"), found_by="its record in " + str(_records_dir()))
        if unreadable:
            out["state"] = unreadable.split(";")[0]
        return out
    out = {"running": _alive(server), "engine": server.get("engine", "llamacpp"), "pid": server.get("pid"),
           "container": server.get("container"), "base_url": server.get("base_url"),
           "log": server.get("log"), "started_at": server.get("started_at")}
    if server.get("rpc_servers"):       # a pair: the other box's side too
        from .engines import rpc
        out["rpc_servers"] = [{"endpoint": r["endpoint"], "on": r.get("host") or "this machine", "pid": r["pid"],
                               "running": rpc.is_ours(r)} for r in server["rpc_servers"]]
    return out


def check_served_model(model: dict[str, Any]) -> None:
    """The file 05 would serve is the model 03 placed: whole (no cut copy) and of the architecture its
    name promises — a GGUF of another model must not be served under the gpt-oss alias."""
    from .model import CATALOGUE, EMBEDDED, from_gguf
    from .errors import ParameterError
    path = model["path"]
    if not str(path).endswith(".gguf"):
        return
    try:
        arch = from_gguf(path).arch
    except ParameterError as e:
        raise ServeError(f"05 will not serve {path}: it must be {e.accepted}") from None
    stands_for = EMBEDDED.get(model["model"], model["model"])          # an embedded model: what it stands in for
    want = CATALOGUE[stands_for].arch.arch if stands_for in CATALOGUE else "gpt-oss"
    if arch != want:
        raise ServeError(f"05 will not serve {path}: it is a {arch} model, but 03 placed {model['model']} "
                         f"({want}); the file was replaced since — re-run 03-place-model")


def read_key_file(path: str) -> str:
    """The API key held in `path` (the owner's 0600 file); one sentence when it cannot be used."""
    from .errors import ParameterError
    p = Path(path).expanduser()
    try:
        key = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ParameterError("api_key_file", path, f"a readable file that holds the key ({e.__class__.__name__})") from None
    if not key:
        raise ParameterError("api_key_file", path, "a file that holds the key (it is empty)")
    return key


def chosen_engine(engine: str, step: str) -> str:
    """The engine 01 chose; a different `engine` passed to a later step is refused (there is one engine
    per box setup, recorded by 01), with the command that changes it."""
    from .engines import check_engine
    from .errors import ParameterError
    state = records.load_state()
    chosen = (state.get("choice") or {}).get("engine") or "llamacpp"
    if engine:
        check_engine(engine)
        if engine != chosen:
            raise ParameterError("engine", engine, f"empty or {chosen} in {step}: 01 chose {chosen}; to serve with "
                                                   f"{engine}, run 01-preflight with -p engine {engine} first "
                                                   f"(sparkkit run --engine {engine} does all steps)")
    return chosen


def run(engine: str = "", host: str = "127.0.0.1", port: int = 0, api_key: str = "",
        force: bool = False, api_key_file: str = "") -> Started:
    """Runbook 05: serve the placed model with exactly 02's serving settings on 01's engine. The key comes
    from `api_key_file` (so it never becomes a papermill parameter) or, as before, `api_key`. `port` 0:
    the engine's default."""
    from . import plan as plans
    from .engines import module, spec
    from .engines.launch import check_bind
    from .engines.serving import Serving
    from .errors import ParameterError, StateError, check_int

    engine = chosen_engine(engine, "05-serve")
    if port != 0:
        check_int("port", port, 1, 65535)
    if spec(engine).runs_as != "service":       # a service (Ollama) listens where its own unit says
        port = port or spec(engine).default_port
    if api_key_file:
        api_key = read_key_file(api_key_file)
    check_bind(host, bool(api_key))
    state = records.load_state()
    model = records.needs(state, "05-serve", "model")["model"]
    if not model.get("path") or (spec(engine).weights != "ollama" and not Path(model["path"]).exists()):
        raise StateError("no model is placed yet: run 03-place-model first")
    records.section(state, "model", "model", "path", "alias")
    if model.get("engine", "llamacpp") != engine:
        raise StateError(f"03 placed {model['model']} for {model.get('engine', 'llamacpp')}, but 01 chose {engine}: "
                         "re-run 03-place-model")
    check_served_model(model)
    if state.get("plan", {}).get("for_model") != model["model"] or state.get("plan", {}).get("engine", "llamacpp") != engine:
        plans.run()                     # no plan for this model and engine yet: plan it with the defaults
    if (state.get("engine") or {}).get("engine", "llamacpp") != engine or "engine" not in state:
        if engine != "llamacpp":
            raise StateError(f"04-engine has not made {spec(engine).label} ready: run 04-engine")
        module(engine).prepare()
    state = records.load_state()
    plan = records.section(state, "plan", "context", "slots", "kv_type", "ubatch", "verdict")
    if plan["verdict"] == "does not fit" and not force:
        raise ParameterError("force", force, f"True to launch anyway — the plan from 02 does not fit "
                                             f"({plan['total_bytes'] / 2**30:.1f} GiB > "
                                             f"{plan['usable_bytes'] / 2**30:.1f} GiB usable); "
                                             "better: re-run 02 with a smaller context")
    serving = Serving.from_dict(plan["serving"]) if plan.get("serving") else \
        Serving(engine, plan["context"], plan["slots"], plan["kv_type"], plan["ubatch"],
                cache_ram_mib=plan.get("cache_ram_mib"))     # a plan written before serving settings existed
    key_file = None
    if api_key:
        key_file = records.home() / "server" / "api-key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(api_key if spec(engine).runs_as != "container" else
                    f"SPARKKIT_API_KEY={api_key}\nVLLM_API_KEY={api_key}\n")   # docker --env-file
    return module(engine).launch(serving, model, host, port, str(key_file) if key_file else None)


def connection(alternative: str = "") -> tuple[str, str | None, dict[str, Any]]:
    """(base_url, api key or None, launch) of the server 05 started; for 06 and 07. `alternative`: what
    else the calling step accepts (06: "or pass -p base_url"; 07 has no such parameter)."""
    from .errors import StateError

    server = records.load_state().get("server")
    if not server or not _alive(server):
        raise StateError("no sparkkit server is running: run 05-serve first" + (f" ({alternative})" if alternative
                                                                                 else ""))
    key_file = server["launch"].get("api_key_file")
    key = read_key_file(key_file) if key_file else None
    if key and key.startswith("SPARKKIT_API_KEY="):    # a container's --env-file
        key = key.splitlines()[0].split("=", 1)[1]
    return server["base_url"], key, server["launch"]
