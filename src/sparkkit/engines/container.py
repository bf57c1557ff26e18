"""Engines that run as a Docker container on the Spark (SGLang, vLLM): the shared half.

04 checks Docker (daemon reachable, the owner allowed to use it, the NVIDIA container runtime) and
pulls the engine's GB10 image — its size shown first, pinned by digest. 05 runs the container
detached with 02's serving settings, published on 127.0.0.1 unless the owner asks for the LAN (with a
key), labelled with sparkkit's launch digest; stop stops that container only (its id and label must
still match), never another one. A container that exits before it is healthy is diagnosed from its
log tail (out of memory, an unknown flag, the port taken).

Each engine module supplies: SPEC, IMAGE {ref, digest, size_bytes, source}, MEM_FRACTION,
engine_args(serving, model, port) and its health path; everything else is here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from ..errors import ParameterError, ServeError, SparkkitError

LABEL = "sparkkit.launch"          # the launch digest: stop() needs the id and this label to match
CONTAINER_PORT = {"sglang": 30000, "vllm": 8000}
INSTALL_DOCKER = "sudo apt install docker.io && sudo usermod -aG docker $USER (then log in again)"
INSTALL_TOOLKIT = ("sudo apt install nvidia-container-toolkit && sudo nvidia-ctk runtime configure --runtime=docker "
                   "&& sudo systemctl restart docker")
READY_TIMEOUT = 1800.0             # gpt-oss-120b: weights, CUDA graphs, compile — allow 30 min (engines.md §4)


def docker(*args: str, timeout: float = 120.0, check: bool = False) -> subprocess.CompletedProcess:
    """Run the docker CLI; one sentence when it is not installed."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ServeError(f"docker is not installed: {INSTALL_DOCKER}") from None
    except subprocess.TimeoutExpired:
        raise ServeError(f"`docker {' '.join(args[:2])}` did not answer in {timeout:.0f} s; "
                         "check the daemon: sudo systemctl status docker") from None
    if check and done.returncode != 0:
        raise ServeError(f"`docker {' '.join(args[:2])}` failed: {_first_error(done)}")
    return done


def _first_error(done: subprocess.CompletedProcess) -> str:
    text = (done.stderr or done.stdout or "").strip()
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), f"exit {done.returncode}")


# ----------------------------------------------------------------------------- 04: Docker and the image
def check_docker() -> dict[str, Any]:
    """Docker's facts for 04; ServeError with the fix when the daemon, the permission or the NVIDIA
    runtime is missing."""
    info = docker("info", "--format", "{{json .}}", timeout=60)
    text = (info.stderr + info.stdout).lower()
    if info.returncode != 0:
        if "permission denied" in text:
            raise ServeError("docker: permission denied on the Docker socket — add yourself to the docker group: "
                             "sudo usermod -aG docker $USER, then log in again")
        if "cannot connect" in text or "is the docker daemon running" in text:
            raise ServeError("docker: the daemon is not running — sudo systemctl enable --now docker")
        raise ServeError(f"docker info failed: {_first_error(info)}")
    try:
        facts = json.loads(info.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ServeError("docker info gave no JSON; is this Docker (not podman's shim)?") from None
    runtimes = sorted((facts.get("Runtimes") or {}).keys())
    if "nvidia" not in runtimes:
        raise ServeError(f"docker has no NVIDIA runtime (runtimes: {', '.join(runtimes) or 'none'}), so "
                         f"--gpus all cannot work — install the NVIDIA container toolkit: {INSTALL_TOOLKIT}")
    return {"server_version": facts.get("ServerVersion"), "runtimes": runtimes,
            "default_runtime": facts.get("DefaultRuntime"), "architecture": facts.get("Architecture"),
            "os": facts.get("OperatingSystem")}


def pinned_ref(image: dict[str, Any]) -> str:
    """`repo@sha256:…` where the digest is known, else the tag (and 04 records the digest it pulled)."""
    repo = image["ref"].rsplit(":", 1)[0] if ":" in image["ref"].rsplit("/", 1)[-1] else image["ref"]
    return f"{repo}@{image['digest']}" if image.get("digest") else image["ref"]


def _ready_here(eng: ModuleType, state: dict[str, Any], model: dict[str, Any]) -> tuple[str, dict[str, Any], Path]:
    """(04's pinned image, its `docker image inspect`, the weights folder) on this box, or the sentence that
    says which is missing and what to run."""
    from .. import records
    ref = records.section(state, "engine", "image")["image"]["pinned_ref"]
    present = image_present(ref)
    if present is None:
        size = eng.IMAGE.get("size_bytes")
        raise ServeError(f"the {eng.SPEC.label} image is not pulled: run 04-engine (docker pull {ref}"
                         + (f", {size / 1e9:.1f} GB)" if size else ")"))
    weights = Path(model["path"]).expanduser()
    if not (weights / "config.json").is_file() or not any(weights.glob("*.safetensors")):
        raise ServeError(f"the weights at {weights} are not whole (config.json and *.safetensors): re-run "
                         "03-place-model")
    return ref, present, weights


def _inspected(*args: str, run=None) -> dict[str, Any] | None:
    """The first object `docker <args>` prints as a JSON list, or None (no such image/container). `run`: how
    docker is reached (this box's by default; a pair's peer through `peer_docker`)."""
    done = (run or docker)(*args, timeout=60)
    if done.returncode != 0:
        return None
    try:
        found = json.loads(done.stdout)
    except ValueError:
        return None
    return found[0] if found else None


def image_present(ref: str) -> dict[str, Any] | None:
    return _inspected("image", "inspect", ref)


def pull(image: dict[str, Any], out=print) -> dict[str, Any]:
    """`docker pull` the pinned image (size said first), streaming its progress; the digest it got."""
    ref = pinned_ref(image)
    size = image.get("size_bytes")
    out(f"pulling {ref}" + (f" ({size / 1e9:.1f} GB compressed, {image.get('size_source', 'registry')})" if size
                            else ""), flush=True)
    try:
        proc = subprocess.Popen(["docker", "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
    except FileNotFoundError:
        raise ServeError(f"docker is not installed: {INSTALL_DOCKER}") from None
    lines: list[str] = []
    last = 0.0
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        lines.append(line)
        if time.monotonic() - last > 5 or "Digest:" in line or "Status:" in line:
            out(f"  {line}", flush=True)
            last = time.monotonic()
    if proc.wait() != 0:
        raise ServeError(f"docker pull {ref} failed: {lines[-1] if lines else 'no output'}")
    digest = next((ln.split("Digest:", 1)[1].strip() for ln in lines if "Digest:" in ln), image.get("digest", ""))
    if image.get("digest") and digest and digest != image["digest"]:
        raise ServeError(f"docker pull {ref} gave digest {digest}, not the pinned {image['digest']}")
    return {"ref": ref, "digest": digest, "lines": lines[-5:]}


@dataclass
class Ready:
    """04's result for a container engine (the same face as llama.cpp's EngineReady)."""
    engine: str
    runtime: dict[str, Any]
    docker: dict[str, Any]
    image: dict[str, Any]
    pulled: bool
    build: dict[str, Any] = field(default_factory=dict)
    build_failure: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def record(self) -> tuple[str, str, dict[str, Any]]:
        from . import label
        size = self.image.get("size_bytes_local")
        head = (f"{label(self.engine)}: image {self.image['pinned_ref']} "
                f"{'pulled' if self.pulled else 'already present'}"
                + (f" ({size / 1e9:.1f} GB on disk)" if size else "")
                + f"; Docker {self.docker.get('server_version')} with the NVIDIA runtime")
        if not self.image.get("digest"):
            self.warnings.append("no digest is pinned for this image in sparkkit; 04 recorded the one it pulled ("
                                 + ", ".join(self.image.get("repo_digests") or ["none"]) + ")")
        return ("warn" if self.warnings else "pass"), head + ("; " + "; ".join(self.warnings) if self.warnings
                                                             else ""), asdict(self)


def prepare(eng: ModuleType, pull_image: bool = True, out=print) -> Ready:
    """04 for a container engine: Docker with the NVIDIA runtime, and the pinned image present."""
    from .. import records
    facts = check_docker()
    image = dict(eng.IMAGE)
    ref = pinned_ref(image)
    present = image_present(ref)
    pulled = None
    if present is None:
        if not pull_image:
            raise ServeError(f"the {eng.SPEC.label} image is not pulled: docker pull {ref}"
                             + (f" ({image['size_bytes'] / 1e9:.1f} GB)" if image.get("size_bytes") else ""))
        pulled = pull(image, out)
        present = image_present(ref)
        if present is None:
            raise ServeError(f"docker pull {ref} finished but the image is not there; run it by hand to see why")
    digests = present.get("RepoDigests") or []
    if not image.get("digest") and digests:     # a moving tag: from now on, exactly the image 04 pulled
        ref = digests[0]
    info = {**image, "pinned_ref": ref, "id": present.get("Id"), "repo_digests": digests,
            "size_bytes_local": present.get("Size"), "architecture": present.get("Architecture")}
    runtime = {"kind": "container", "image": ref, "docker": facts.get("server_version")}
    records.update_state("engine", {"engine": eng.SPEC.name, "runtime": runtime, "image": info})
    return Ready(eng.SPEC.name, runtime, facts, info, pulled is not None)


# ----------------------------------------------------------------------------- 05: run, watch, stop
def launch_digest(argv: list[str]) -> str:
    return hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]


def publish(host: str, port: int, container_port: int) -> str:
    """-p value: loopback unless the owner asked for the LAN. (Docker's bare -p 30000:30000, as the
    playbooks write it, publishes on every interface.)"""
    return f"[{host}]:{port}:{container_port}" if ":" in host else f"{host}:{port}:{container_port}"


def docker_argv(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int,
                key_file: str | None, ref: str) -> list[str]:
    """The `docker run -d …` that serves `model` with `serving` (the key is never on it)."""
    cport = CONTAINER_PORT[eng.SPEC.name]
    weights = str(Path(model["path"]).expanduser())
    args = ["run", "-d", "--gpus", "all", "--ipc=host", "--shm-size", "32g",
            "-p", publish(host, port, cport), "-v", f"{weights}:/model:ro"]
    if key_file:
        args += ["--env-file", str(key_file)]
    return args + ["--label", "sparkkit=1", ref, *eng.engine_args(serving, model, cport, bool(key_file))]


def container_name(engine: str, port: int, digest: str) -> str:
    return f"sparkkit-{engine}-{port}-{digest[:8]}"


def inspect(ref: str) -> dict[str, Any] | None:
    return _inspected("inspect", ref)


def _ours(c: dict[str, Any] | None, server: dict[str, Any]) -> bool:
    """Is container `c` the one `server` records (its id, and sparkkit's launch label)?"""
    return bool(c and server.get("container") and c.get("Id", "").startswith(server["container"])
                and (c.get("Config", {}).get("Labels") or {}).get(LABEL) == server.get("digest"))


def is_running(server: dict[str, Any]) -> bool:
    """The recorded container is still the one sparkkit started (id and launch label) and runs."""
    try:
        c = inspect(server.get("container", "") or "-")
    except ServeError:
        return False
    return _ours(c, server) and bool(c.get("State", {}).get("Running"))


def log_tail(ref: str, lines: int = 30) -> str:
    try:
        done = docker("logs", "--tail", str(lines), ref, timeout=60)
    except ServeError as e:
        return str(e)
    return (done.stdout + done.stderr).strip() or "(no log)"


def diagnose(tail: str, state: dict[str, Any] | None = None) -> str:
    """One sentence: what a container's exit most likely means, from its log and state."""
    low = tail.lower()
    m = re.search(r"free memory on device \(([\d.]+)/([\d.]+) gib\).*less than desired gpu memory utilization "
                  r"\(([\d.]+), ([\d.]+) gib\)", low)
    if m:   # vLLM's own start-up check (the Spark's unified memory: the page cache and the desktop count as used)
        return (f"out of memory at start: the memory fraction {m.group(3)} asks for {m.group(4)} GiB but only "
                f"{m.group(1)} GiB is free — drop the page cache (01's fix), or lower -p mem_fraction in 02, then "
                "re-run 05")
    if (state or {}).get("OOMKilled") or "out of memory" in low or "not enough memory" in low \
            or "cuda error: out of memory" in low or "outofmemoryerror" in low:
        return ("out of memory: lower the context or the memory fraction in 02 (or enable the swap 01 asks for), "
                "then re-run 05")
    m = re.search(r"unrecognized arguments?: (.+)", tail)
    if m:
        return f"this image does not know the flag(s) {m.group(1).strip()}: pull the image 04 pins, or drop the flag"
    if "address already in use" in low or "port is already allocated" in low:
        return "the port is taken: stop what uses it, or -p port <another>"
    return "read the log tail above"


def _wait_ready(eng: ModuleType, cid: str, base_url: str, timeout: float, out=print, also=None,
                model_name: str = "", key: str = "") -> float:
    """Until the container answers its health path (and, with `model_name`, lists that model); `also()`:
    one sentence when something else the launch needs (a pair's worker) has gone, else None."""
    t0 = time.monotonic()
    last_note = last_also = t0
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=base_url, timeout=5.0, headers=headers) as client:
        while True:
            c = inspect(cid)
            if not c or not c.get("State", {}).get("Running"):
                tail = log_tail(cid)
                state = (c or {}).get("State", {})
                raise ServeError(f"the {eng.SPEC.label} container exited (code {state.get('ExitCode', '?')}) before "
                                 f"it was ready: {diagnose(tail, state)}. Last lines of docker logs {cid[:12]}:\n{tail}")
            if also and time.monotonic() - last_also > 2:
                gone = also()
                if gone:
                    raise ServeError(gone)
                last_also = time.monotonic()
            try:
                if client.get(eng.SPEC.health).status_code == 200 and (not model_name or _lists(client, model_name)):
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            now = time.monotonic()
            if now - t0 > timeout:
                raise ServeError(f"the {eng.SPEC.label} container was not ready after {timeout:.0f} s; last lines of "
                                 f"docker logs {cid[:12]}:\n{log_tail(cid)}")
            if now - last_note > 15:
                last = log_tail(cid, 1).splitlines()[-1:] or [""]
                out(f"  waiting for {eng.SPEC.label} ({now - t0:.0f} s): {last[0][:160]}", flush=True)
                last_note = now
            time.sleep(0.5)


def _lists(client: httpx.Client, model_name: str) -> bool:
    """Does the server's /v1/models report `model_name`?"""
    try:
        r = client.get("/v1/models")
        return r.status_code == 200 and any(m.get("id") == model_name for m in r.json().get("data") or [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def _remove(cid: str) -> None:
    docker("rm", "-f", cid, timeout=120)


def launch(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None,
           timeout: float = READY_TIMEOUT, out=print):
    """05 for a container engine. Never leaves the owner with less: a sparkkit container already serving
    this launch is kept; one on another port keeps serving until the new one is healthy; one on the same
    port is stopped (not removed) first and started again if the new one fails."""
    from .. import records, serve
    state = records.load_state()
    pair = pair_of(state)
    if pair:
        return launch_pair(eng, serving, model, host, port, key_file, pair, timeout, out)
    ref, _present, weights = _ready_here(eng, state, model)
    args = docker_argv(eng, serving, model, host, port, key_file, ref)
    digest = launch_digest(args)
    name = container_name(eng.SPEC.name, port, digest)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    previous = state.get("server")
    previous = previous if previous and serve._alive(previous) else None
    if previous and previous.get("digest") == digest and serve.healthy(previous["base_url"], eng.SPEC.health):
        return serve.Started(0, previous["base_url"], 0.0, previous["argv"], Path(previous.get("log", "")),
                             f"kept the running sparkkit container {previous['name']}: it already serves this launch",
                             kept=True, engine=eng.SPEC.name, container=previous["container"])
    same_port = bool(previous) and previous.get("port") == port
    if serve.port_in_use(host, port) and not same_port:
        raise ServeError(f"port {port} on {host} is already in use by something sparkkit did not start; stop it or "
                         f"choose another port (-p port {port + 1})")
    argv = ["docker", *args[:1], "--name", name, "--label", f"{LABEL}={digest}", *args[1:]]
    if previous and same_port:
        serve.stop_any(previous, remove=False)
    t0 = time.monotonic()
    done = docker(*argv[1:], timeout=600)
    cid = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
    log = records.home() / "server" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not cid:
            raise ServeError(f"docker run failed: {_first_error(done)} — {diagnose(done.stderr or '')}")
        out(f"started {eng.SPEC.label} container {name} ({cid[:12]}); waiting for {eng.SPEC.health}", flush=True)
        load = _wait_ready(eng, cid, base_url, timeout, out)
    except ServeError as e:
        if cid:
            log.write_text(log_tail(cid, 200) + "\n", encoding="utf-8")
            _remove(cid)
        _restore(eng, previous, same_port, e)
    server = {"engine": eng.SPEC.name, "kind": "container", "container": cid, "name": name, "digest": digest,
              "image": ref, "pid": 0, "port": port, "base_url": base_url, "argv": argv, "log": str(log),
              "served_model": eng.served_name(model), "launch": {**serving.to_dict(), "host": host, "port": port,
                                                                 "weights": str(weights),
                                                                 "alias": eng.served_name(model),
                                                                 "api_key_file": key_file},
              "load_seconds": round(time.monotonic() - t0, 3), "started_at": records.now()}
    replaced = _take_over(server, previous)
    return serve.Started(0, base_url, load, argv, log, replaced, engine=eng.SPEC.name, container=cid)


def _take_over(server: dict[str, Any], previous: dict[str, Any] | None) -> str | None:
    """A healthy new server becomes 05's: recorded, then the previous sparkkit server (if any) stopped."""
    from .. import records, serve
    serve._write_record(server)
    replaced = None
    if previous:
        serve.stop_any(previous, remove=True)
        replaced = f"replaced the sparkkit server at {previous['base_url']} once this one was healthy"
    records.update_state("server", server)
    return replaced


def _restore(eng: ModuleType, previous: dict[str, Any] | None, same_port: bool, e: ServeError) -> None:
    """After a failed start: the previous sparkkit server stopped for it is started again (each of its
    containers), one left running is said to be; raises `e` with that said."""
    from .. import serve
    if previous and same_port:
        docker("start", previous["container"], timeout=120)
        if previous.get("pair"):                 # a pair's worker first joins again
            try:
                peer_docker(previous["pair"], "start", previous["pair"]["worker"]["container"], timeout=120)
            except ServeError:
                pass
        back = (f"The previous sparkkit container {previous['name']} was started again."
                if serve.healthy(previous["base_url"], eng.SPEC.health, timeout=30) or is_running(previous)
                else f"The previous container {previous['name']} could not be started again: docker start it.")
        raise ServeError(f"{e}\n{back}") from None
    if previous:
        raise ServeError(f"{e}\nThe running sparkkit server ({previous['base_url']}) was left running.") from None
    raise e


def stop(server: dict[str, Any], timeout: float = 15.0, remove: bool = True) -> bool:
    """Stop (and, with `remove`, remove) the container sparkkit started — only while its id and label
    match; its log is kept beside the other server logs."""
    cid = server.get("container") or "-"
    c = inspect(cid)
    if not _ours(c, server):
        return False
    if c.get("State", {}).get("Running"):
        if server.get("log"):
            Path(server["log"]).parent.mkdir(parents=True, exist_ok=True)
            Path(server["log"]).write_text(log_tail(cid, 500) + "\n", encoding="utf-8")
        docker("stop", "-t", str(int(timeout)), cid, timeout=timeout + 60)
    if remove:
        docker("rm", cid, timeout=120)
    if server.get("pair"):
        _stop_worker(server, timeout, remove)
    return False


def command(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int) -> list[str]:
    ref = pinned_ref(eng.IMAGE)
    pair = _state_pair()
    if pair:      # exactly the image 05 runs: the one 04 recorded (a moving tag resolved to what it pulled)
        from .. import records
        image = (records.load_state().get("engine") or {}).get("image") or {}
        return pair_command(eng, serving, model, host, port, image.get("pinned_ref") or ref, pair)
    args = docker_argv(eng, serving, model, host, port, None, ref)
    return ["docker", *args[:1], "--name", f"sparkkit-{eng.SPEC.name}", *args[1:]]


def check_key_env(key_file: str | None) -> None:
    if key_file and oct(os.stat(key_file).st_mode & 0o777) != oct(0o600):
        raise ParameterError("api_key_file", key_file, "a file of mode 0600")


__all__ = ["check_docker", "prepare", "launch", "stop", "is_running", "command", "diagnose", "SparkkitError"]


def protocol(eng: ModuleType) -> tuple:
    """The engine protocol's functions for a container engine module (place, prepare, launch, is_running,
    stop, command): SGLang and vLLM differ only in their SPEC, IMAGE, MEM_FRACTION and engine_args."""
    from . import _safetensors

    def place(model: str, model_dir: str, hf_endpoint: str = "", revision: str = "main", **kw: Any):
        return _safetensors.place(eng.SPEC.name, model, model_dir, hf_endpoint, revision, **kw)

    def prepare_(**params: Any) -> Ready:
        return prepare(eng, params.get("pull", True))

    def launch_(serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None):
        return launch(eng, serving, model, host, port, key_file)

    def command_(serving: Any, model: dict[str, Any], host: str, port: int) -> list[str]:
        return command(eng, serving, model, host, port)

    return place, prepare_, launch_, is_running, stop, command_


# ----------------------------------------------------------------------------- two Sparks: one launch on both
# The state's "pair" (01) names the peer and the link; 05 then starts the engine's worker container on the peer
# (through ssh) and the head container here, as NVIDIA's two-Spark recipe does by hand, and serves only from the
# head. Both sides use the host network (NCCL, Gloo and Ray talk over the link addresses); the API still binds
# where check_bind allows (127.0.0.1 unless the owner asked for the LAN). Transport "loopback" runs both
# sides on this box: the stand-in the tests use.
PAIR_KEYS = ("head_addr", "peer_addr", "iface", "peer_iface")


def _ssh_argv(host: str, *argv: str) -> list[str]:
    """`ssh … HOST 'argv'`, as 01 reaches the peer (sparkkit.pair.ssh_argv: BatchMode, a 5 s timeout, each
    word quoted once for the remote shell)."""
    from ..pair import ssh_argv
    return ssh_argv(host, *argv)


def pair_of(state: dict[str, Any]) -> dict[str, Any] | None:
    """The state's "pair" when 05 can launch on it; None when there is none (one Spark, as before)."""
    pair = state.get("pair")
    if not pair:
        return None
    from ..pair import refuse_unready
    refuse_unready(pair)                 # a snapshot, or 01's pair checks failed: nothing starts
    transport = pair.get("transport")
    if transport not in ("ssh", "loopback"):
        raise ServeError(f"the state's pair has transport {transport!r}, which 05 cannot launch on: re-run "
                         "01-preflight with -p peer user@host")
    missing = [k for k in PAIR_KEYS if not pair.get(k)] + (["host"] if transport == "ssh" and not pair.get("host")
                                                           else [])
    if missing:
        raise ServeError(f"the state's pair lacks {', '.join(missing)} (the link 01 measures): re-run 01-preflight "
                         f"with -p peer {pair.get('peer') or 'user@host'}")
    return pair


def _state_pair() -> dict[str, Any] | None:
    from .. import records
    try:
        state = records.load_state()
    except SparkkitError:
        return None
    return pair_of(state)


def peer_name(pair: dict[str, Any]) -> str:
    return pair["host"] if pair["transport"] == "ssh" else "(loopback: this box)"


def link_env(pair: dict[str, Any], role: str) -> tuple[str, str, dict[str, str]]:
    """(the head's link address, this side's, the environment NVIDIA's two-Spark recipe gives each container):
    NCCL, Gloo, UCX, the TP sockets and Open MPI on the side's ConnectX-7 interface, and the head as master."""
    head, me = pair["head_addr"], pair["head_addr"] if role == "head" else pair["peer_addr"]
    iface = pair["iface"] if role == "head" else pair["peer_iface"]
    return head, me, {"UCX_NET_DEVICES": iface, "NCCL_SOCKET_IFNAME": iface, "OMPI_MCA_btl_tcp_if_include": iface,
                      "GLOO_SOCKET_IFNAME": iface, "TP_SOCKET_IFNAME": iface, "MASTER_ADDR": head}


def peer_argv(pair: dict[str, Any], *argv: str) -> list[str]:
    """`argv` as run on the peer: through ssh, or as is for the loopback stand-in."""
    return list(argv) if pair["transport"] == "loopback" else _ssh_argv(pair["host"], *argv)


def peer_run(pair: dict[str, Any], *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run `argv` on the peer; one sentence with the fix when the peer cannot be reached."""
    full = peer_argv(pair, *argv)
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ServeError(f"{full[0]} is not installed: " + ("sudo apt install openssh-client" if full[0] == "ssh"
                                                             else INSTALL_DOCKER)) from None
    except subprocess.TimeoutExpired:
        raise ServeError(f"the peer {peer_name(pair)} did not answer `{' '.join(argv[:2])}` in {timeout:.0f} s: check "
                         "the link, then re-run 05") from None
    if pair["transport"] == "ssh" and done.returncode == 255:       # ssh's own failure, not the command's
        raise ServeError(f"the peer {pair['host']} is unreachable over ssh ({_first_error(done)}): check the link and "
                         f"that `ssh {pair['host']}` logs in without a password (01-preflight -p peer sets that up), "
                         "then re-run 05")
    return done


def peer_docker(pair: dict[str, Any], *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return peer_run(pair, "docker", *args, timeout=timeout)


def check_peer(pair: dict[str, Any], ref: str, image_id: str, weights: Path) -> None:
    """Before anything starts: the peer answers, holds the very image the head runs, and the same weights
    at the same path (vLLM and SGLang load them on every node)."""
    name = peer_name(pair)
    peer_run(pair, "true", timeout=30)
    done = peer_docker(pair, "image", "inspect", "--format", "{{.Id}}", ref, timeout=60)
    if done.returncode != 0:
        if "no such image" in (done.stderr + done.stdout).lower():
            raise ServeError(f"the pinned image {ref} is not on the peer {name}: pull it there "
                             f"({shlex.join(peer_argv(pair, 'docker', 'pull', ref))}), then re-run 05")
        raise ServeError(f"docker on the peer {name} failed ({_first_error(done)}): make Docker with the NVIDIA "
                         "runtime ready there as 04-engine does here, then re-run 05")
    lines = done.stdout.strip().splitlines()
    peer_id = lines[-1].strip() if lines else ""
    if image_id and peer_id != image_id:
        raise ServeError(f"the peer {name} holds another build of {ref} (image {peer_id[:19]}, here {image_id[:19]}): "
                         f"docker pull {ref} on both Sparks so they run the same one, then re-run 05")
    files = [weights / "config.json", *sorted(weights.glob("*.safetensors"))]
    here = {f"{f.stat().st_size} {f.name}" for f in files}
    listing = peer_run(pair, "sh", "-c", f"cd {shlex.quote(str(weights))} && stat -c '%s %n' config.json "
                                         "*.safetensors", timeout=60)
    there = {ln.strip() for ln in listing.stdout.splitlines() if ln.strip()}
    lacking = sorted(here - there)
    if lacking:
        what = ("nothing is there" if not there else
                f"{len(lacking)} of {len(here)} files missing or of another size there, e.g. {lacking[0].split(' ', 1)[1]}")
        target = f"{pair['host']}:{weights}/" if pair["transport"] == "ssh" else f"{weights}/"
        raise ServeError(f"the weights at {weights} are not on the peer {name} at the same path ({what}): vLLM and "
                         f"SGLang load them on both Sparks, so copy them: rsync -a {weights}/ {target}, then re-run 05")


def pair_docker_args(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int,
                     key_file: str | None, ref: str, pair: dict[str, Any], role: str) -> list[str]:
    """The `docker run -d …` of one side (head | worker) of a two-Spark launch (the key only on the head)."""
    weights = str(Path(model["path"]).expanduser())
    env, cmd = eng.pair_args(serving, model, port, bool(key_file), pair, role, host)
    args = ["run", "-d", "--network", "host", "--gpus", "all", "--ipc=host", "--shm-size", "32g",
            "-v", f"{weights}:/model:ro"]
    if key_file and role == "head":
        args += ["--env-file", str(key_file)]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    return args + ["--label", "sparkkit=1", "--label", f"sparkkit.role={role}", ref, *cmd]


class PairCommand(list):
    """Both sides of a two-Spark launch as one line the owner can type on the head — each side's docker run
    in the order 05 runs them, the worker's through ssh — with each side's argv in `.sides`."""

    def __init__(self, sides: list[tuple[str, list[str]]]):
        self.sides = dict(sides)
        super().__init__(["sh", "-c", " && ".join(shlex.join(argv) for _, argv in sides)])

    @property
    def head(self) -> list[str]:
        return self.sides["head"]

    @property
    def worker(self) -> list[str]:
        return self.sides["worker"]


def _named(args: list[str], name: str, digest: str | None) -> list[str]:
    return ["docker", args[0], "--name", name, *(["--label", f"{LABEL}={digest}"] if digest else []), *args[1:]]


def pair_command(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int, ref: str,
                 pair: dict[str, Any]) -> PairCommand:
    sides = []
    for role in eng.PAIR_ORDER:
        argv = _named(pair_docker_args(eng, serving, model, host, port, None, ref, pair, role),
                      f"sparkkit-{eng.SPEC.name}-{role}", None)
        sides.append((role, argv if role == "head" else peer_argv(pair, *argv)))
    return PairCommand(sides)


def _peer_inspect(pair: dict[str, Any], cid: str) -> dict[str, Any] | None:
    return _inspected("inspect", cid, run=lambda *a, **kw: peer_docker(pair, *a, **kw))


def _peer_log_tail(pair: dict[str, Any], cid: str, lines: int = 30) -> str:
    try:
        done = peer_docker(pair, "logs", "--tail", str(lines), cid, timeout=60)
    except ServeError as e:
        return str(e)
    return (done.stdout + done.stderr).strip() or "(no log)"


def _worker_gone(eng: ModuleType, pair: dict[str, Any], wid: str) -> str | None:
    """One sentence when the worker on the peer is no longer running, else None."""
    c = _peer_inspect(pair, wid)
    if c and c.get("State", {}).get("Running"):
        return None
    tail = _peer_log_tail(pair, wid)
    state = (c or {}).get("State", {})
    return (f"the {eng.SPEC.label} worker on the peer {peer_name(pair)} exited (code {state.get('ExitCode', '?')}) "
            f"before the head was ready: {diagnose(tail, state)}. Last lines of its docker logs {wid[:12]}:\n{tail}")


def _key_of(key_file: str | None) -> str:
    if not key_file:
        return ""
    for ln in Path(key_file).read_text(encoding="utf-8").splitlines():
        if ln.startswith("SPARKKIT_API_KEY="):
            return ln.split("=", 1)[1].strip()
    return ""


def launch_pair(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None,
                pair: dict[str, Any], timeout: float = READY_TIMEOUT, out=print):
    """05 on two Sparks: the worker container on the peer and the head container here, one launch. Everything
    the peer must hold is checked before anything starts; the launch is healthy only when the head answers its
    health path and lists the model; a failure removes whatever side started and keeps the previous server as
    `launch` does on one Spark."""
    from .. import records, serve
    state = records.load_state()
    ref, present, weights = _ready_here(eng, state, model)
    check_peer(pair, ref, present.get("Id", ""), weights)
    args = {role: pair_docker_args(eng, serving, model, host, port, key_file, ref, pair, role)
            for role in ("head", "worker")}
    digest = launch_digest(args["head"] + ["--worker--"] + args["worker"])
    name = container_name(eng.SPEC.name, port, digest)
    wname = f"{name}-worker"
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    previous = state.get("server")
    previous = previous if previous and serve._alive(previous) else None
    if previous and previous.get("digest") == digest and serve.healthy(previous["base_url"], eng.SPEC.health):
        return serve.Started(0, previous["base_url"], 0.0, previous["argv"], Path(previous.get("log", "")),
                             f"kept the running sparkkit containers {previous['name']} (head) and its worker: they "
                             "already serve this launch", kept=True, engine=eng.SPEC.name,
                             container=previous["container"])
    # the inter-node ports (Ray's, SGLang's rendezvous) are fixed: a running pair is stopped first, like a same port
    same_port = bool(previous) and (previous.get("port") == port or bool(previous.get("pair")))
    if serve.port_in_use(host, port) and not same_port:
        raise ServeError(f"port {port} on {host} is already in use by something sparkkit did not start; stop it or "
                         f"choose another port (-p port {port + 1})")
    head_argv = _named(args["head"], name, digest)
    worker_plain = _named(args["worker"], wname, digest)
    argv = {"head": head_argv, "worker": peer_argv(pair, *worker_plain)}
    if previous and same_port:
        serve.stop_any(previous, remove=False)
    t0 = time.monotonic()
    logs = {"head": records.home() / "server" / f"{name}.log", "worker": records.home() / "server" / f"{wname}.log"}
    logs["head"].parent.mkdir(parents=True, exist_ok=True)
    started: dict[str, str] = {}
    try:
        for role in eng.PAIR_ORDER:
            done = docker(*head_argv[1:], timeout=600) if role == "head" else peer_run(pair, *worker_plain,
                                                                                       timeout=600)
            cid = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
            if not cid:
                where = "here" if role == "head" else f"on the peer {peer_name(pair)}"
                raise ServeError(f"docker run of the {role} {where} failed: {_first_error(done)} — "
                                 f"{diagnose(done.stderr or '')}")
            started[role] = cid
            out(f"started the {eng.SPEC.label} {role} container "
                f"{name if role == 'head' else wname} ({cid[:12]})" + ("" if role == "head" else
                                                                      f" on {peer_name(pair)}"), flush=True)
        out(f"waiting for {eng.SPEC.health} and {eng.served_name(model)} in /v1/models (tensor parallel 2 across "
            f"{pair['head_addr']} and {pair['peer_addr']})", flush=True)
        load = _wait_ready(eng, started["head"], base_url, timeout, out,
                           also=lambda: _worker_gone(eng, pair, started["worker"]),
                           model_name=eng.served_name(model), key=_key_of(key_file))
    except ServeError as e:
        if "head" in started:
            logs["head"].write_text(log_tail(started["head"], 200) + "\n", encoding="utf-8")
            _remove(started["head"])
        if "worker" in started:
            logs["worker"].write_text(_peer_log_tail(pair, started["worker"], 200) + "\n", encoding="utf-8")
            try:
                peer_docker(pair, "rm", "-f", started["worker"], timeout=120)
            except ServeError as gone:
                e = ServeError(f"{e}\nThe worker {wname} could not be removed ({gone}): "
                               f"{shlex.join(peer_argv(pair, 'docker', 'rm', '-f', wname))}")
        _restore(eng, previous, same_port, e)
    kept = {k: pair.get(k) for k in ("peer", "transport", "host", "head_addr", "peer_addr", "iface", "peer_iface",
                                     "link_mbps")}
    server = {"engine": eng.SPEC.name, "kind": "container", "container": started["head"], "name": name,
              "digest": digest, "image": ref, "pid": 0, "port": port, "base_url": base_url, "argv": head_argv,
              "log": str(logs["head"]), "served_model": eng.served_name(model), "tensor_parallel": 2,
              "pair": {**kept, "worker": {"container": started["worker"], "name": wname, "argv": argv["worker"],
                                          "log": str(logs["worker"])}},
              "launch": {**serving.to_dict(), "host": host, "port": port, "weights": str(weights),
                         "alias": eng.served_name(model), "api_key_file": key_file},
              "load_seconds": round(time.monotonic() - t0, 3), "started_at": records.now()}
    replaced = _take_over(server, previous)
    started_ = serve.Started(0, base_url, load, head_argv, logs["head"], replaced, engine=eng.SPEC.name,
                             container=started["head"])
    started_.notes.append(f"tensor parallel 2 across this Spark and {peer_name(pair)}: worker {wname} "
                          f"({started['worker'][:12]})")
    return started_


def _stop_worker(server: dict[str, Any], timeout: float, remove: bool) -> None:
    """Stop (and remove) a pair's worker on the peer — only while its id and launch label match."""
    pair, worker = server["pair"], server["pair"]["worker"]
    try:
        c = _peer_inspect(pair, worker["container"])
        if not _ours(c, {"container": worker["container"], "digest": server.get("digest")}):
            return
        if c.get("State", {}).get("Running"):
            if worker.get("log"):
                Path(worker["log"]).parent.mkdir(parents=True, exist_ok=True)
                Path(worker["log"]).write_text(_peer_log_tail(pair, worker["container"], 500) + "\n", encoding="utf-8")
            peer_docker(pair, "stop", "-t", str(int(timeout)), worker["container"], timeout=timeout + 60)
        if remove:
            peer_docker(pair, "rm", worker["container"], timeout=120)
    except ServeError as e:
        print(f"warning: the worker {worker.get('name')} on the peer was not stopped ({e}); once the peer answers: "
              f"{shlex.join(peer_argv(pair, 'docker', 'rm', '-f', worker.get('name', '')))}", flush=True)
