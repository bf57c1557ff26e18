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


def _inspected(*args: str) -> dict[str, Any] | None:
    """The first object `docker <args>` prints as a JSON list, or None (no such image/container)."""
    done = docker(*args, timeout=60)
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


def _wait_ready(eng: ModuleType, cid: str, base_url: str, timeout: float, out=print) -> float:
    t0 = time.monotonic()
    last_note = t0
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        while True:
            c = inspect(cid)
            if not c or not c.get("State", {}).get("Running"):
                tail = log_tail(cid)
                state = (c or {}).get("State", {})
                raise ServeError(f"the {eng.SPEC.label} container exited (code {state.get('ExitCode', '?')}) before "
                                 f"it was ready: {diagnose(tail, state)}. Last lines of docker logs {cid[:12]}:\n{tail}")
            try:
                if client.get(eng.SPEC.health).status_code == 200:
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


def _remove(cid: str) -> None:
    docker("rm", "-f", cid, timeout=120)


def launch(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None,
           timeout: float = READY_TIMEOUT, out=print):
    """05 for a container engine. Never leaves the owner with less: a sparkkit container already serving
    this launch is kept; one on another port keeps serving until the new one is healthy; one on the same
    port is stopped (not removed) first and started again if the new one fails."""
    from .. import records, serve
    state = records.load_state()
    engine_state = records.section(state, "engine", "image")
    ref = engine_state["image"]["pinned_ref"]
    if image_present(ref) is None:
        size = eng.IMAGE.get("size_bytes")
        raise ServeError(f"the {eng.SPEC.label} image is not pulled: run 04-engine (docker pull {ref}"
                         + (f", {size / 1e9:.1f} GB)" if size else ")"))
    weights = Path(model["path"]).expanduser()
    if not (weights / "config.json").is_file() or not any(weights.glob("*.safetensors")):
        raise ServeError(f"the weights at {weights} are not whole (config.json and *.safetensors): re-run "
                         "03-place-model")
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
        if previous and same_port:
            docker("start", previous["container"], timeout=120)
            back = (f"The previous sparkkit container {previous['name']} was started again."
                    if serve.healthy(previous["base_url"], eng.SPEC.health, timeout=30) or is_running(previous)
                    else f"The previous container {previous['name']} could not be started again: docker start it.")
            raise ServeError(f"{e}\n{back}") from None
        if previous:
            raise ServeError(f"{e}\nThe running sparkkit server ({previous['base_url']}) was left running.") from None
        raise
    server = {"engine": eng.SPEC.name, "kind": "container", "container": cid, "name": name, "digest": digest,
              "image": ref, "pid": 0, "port": port, "base_url": base_url, "argv": argv, "log": str(log),
              "served_model": eng.served_name(model), "launch": {**serving.to_dict(), "host": host, "port": port,
                                                                 "weights": str(weights),
                                                                 "alias": eng.served_name(model),
                                                                 "api_key_file": key_file},
              "load_seconds": round(time.monotonic() - t0, 3), "started_at": records.now()}
    serve._write_record(server)
    replaced = None
    if previous:
        serve.stop_any(previous, remove=True)
        replaced = f"replaced the sparkkit server at {previous['base_url']} once this one was healthy"
    records.update_state("server", server)
    return serve.Started(0, base_url, load, argv, log, replaced, engine=eng.SPEC.name, container=cid)


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
    return False


def command(eng: ModuleType, serving: Any, model: dict[str, Any], host: str, port: int) -> list[str]:
    ref = pinned_ref(eng.IMAGE)
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
