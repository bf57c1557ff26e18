"""Ollama on the Spark: the owner's systemd service; sparkkit never starts or stops it.

- 04 checks that `ollama` is installed and its service answers (else: the install command and the unit).
- 03 pulls the library tag (`gpt-oss:120b`, 65 GB) through the service's /api/pull, with progress.
- 05 creates a variant of it with 02's context (`PARAMETER num_ctx`, via /api/create) — Ollama's own
  default is 4096 (≤ 0.15.4) or a VRAM tier, either far below what Claude Code needs — loads it and
  keeps it loaded (`keep_alive: -1`), then checks with /api/show and /api/ps that the context took.
- stop unloads that variant (`keep_alive: 0`); the service and the owner's other models are left alone.
Slots, KV type and flash attention are the service's environment (OLLAMA_NUM_PARALLEL,
OLLAMA_KV_CACHE_TYPE, OLLAMA_FLASH_ATTENTION): 05 says how to set them when the plan asks for them.
Facts: research/engines.md §2.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..errors import ParameterError, ServeError
from . import EngineSpec

INSTALL = "curl -fsSL https://ollama.com/install.sh | sh"
UNIT = "/etc/systemd/system/ollama.service"
SPEC = EngineSpec(
    name="ollama", label="Ollama", runs_as="service", weights="ollama",
    weights_home="/usr/share/ollama/.ollama/models", kv_types=("f16", "q8_0", "q4_0"), default_port=11434,
    health="/api/version", served_name="a sparkkit variant of the library tag, with 02's num_ctx",
    install=INSTALL, messages=None)
MEM_FRACTION = None
MESSAGES_SINCE = (0, 14, 0)     # /v1/messages (ollama PR #13600, v0.14.0)
LAUNCH_SINCE = (0, 15, 0)       # `ollama launch claude` (docs/integrations/claude-code.mdx)
DEFAULT_CONTEXT_BEFORE_TIERS = 4096


def base_url() -> str:
    """Where the service listens: OLLAMA_HOST as the ollama CLI reads it, else 127.0.0.1:11434."""
    raw = os.environ.get("OLLAMA_HOST", "").strip() or "127.0.0.1:11434"
    if "://" not in raw:
        raw = "http://" + raw
    scheme, rest = raw.split("://", 1)
    hostport = rest.split("/", 1)[0]
    if ":" not in hostport.rsplit("]", 1)[-1]:
        hostport += ":11434"
    host = hostport.rsplit(":", 1)[0]
    if host in ("0.0.0.0", "", "[::]"):
        hostport = "127.0.0.1:" + hostport.rsplit(":", 1)[1]
    return f"{scheme}://{hostport}"


def _client(timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=base_url(), timeout=timeout)


def version_tuple(text: str) -> tuple[int, ...]:
    import re
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else ()


def service_version() -> str:
    """The running service's version; ServeError with the fix when it does not answer."""
    try:
        with _client(10.0) as c:
            r = c.get("/api/version")
            r.raise_for_status()
            return r.json().get("version", "")
    except (httpx.HTTPError, ValueError) as e:
        raise ServeError(f"the Ollama service does not answer at {base_url()} ({type(e).__name__}): start it with "
                         f"sudo systemctl enable --now ollama (unit {UNIT}); if it is not installed: {INSTALL}") from None


def tag_for(model: str) -> str:
    from ..model import WEIGHTS_SOURCES
    tag = WEIGHTS_SOURCES.get(model, {}).get("ollama")
    if not tag:
        raise ParameterError("model", model, f"a model Ollama's library has ({', '.join(m for m, w in WEIGHTS_SOURCES.items() if w.get('ollama'))})")
    return tag


def served_name(model: dict[str, Any]) -> str:
    return f"{model.get('alias') or model['model']}-sparkkit"


# ----------------------------------------------------------------------------- 04
@dataclass
class Ready:
    engine: str
    cli: str
    cli_version: str
    service_version: str
    base_url: str
    messages: bool
    launch_claude: bool
    warnings: list[str] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    build_failure: dict[str, Any] | None = None

    def record(self) -> tuple[str, str, dict[str, Any]]:
        head = (f"Ollama {self.service_version} answers at {self.base_url} (CLI {self.cli}); /v1/messages: "
                f"{'yes' if self.messages else 'no (older than 0.14.0)'}; `ollama launch claude`: "
                f"{'yes' if self.launch_claude else 'no'}")
        return ("warn" if self.warnings else "pass"), head + ("; " + "; ".join(self.warnings) if self.warnings
                                                             else ""), asdict(self)


def prepare(**_: Any) -> Ready:
    from .. import records
    cli = shutil.which("ollama")
    if not cli:
        raise ServeError(f"Ollama is not installed: {INSTALL} (it installs the systemd unit {UNIT} and starts it)")
    try:
        out = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=30)
        cli_version = (out.stdout + out.stderr).strip().splitlines()[-1] if (out.stdout + out.stderr).strip() else ""
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServeError(f"{cli} --version failed ({e}); reinstall: {INSTALL}") from None
    version = service_version()
    v = version_tuple(version)
    warnings = []
    messages = bool(v) and v >= MESSAGES_SINCE
    if not messages:
        warnings.append(f"Ollama {version} has no /v1/messages (added in 0.14.0): upgrade with {INSTALL}, or 07 "
                        "puts the LiteLLM bridge in front")
    ready = Ready("ollama", cli, cli_version, version, base_url(), messages, bool(v) and v >= LAUNCH_SINCE, warnings,
                  runtime={"kind": "service", "base_url": base_url(), "version": version})
    records.update_state("engine", {"engine": "ollama", "runtime": ready.runtime, "messages": messages,
                                    "launch_claude": ready.launch_claude})
    return ready


# ----------------------------------------------------------------------------- 03
def place(model: str, model_dir: str = "", hf_endpoint: str = "", revision: str = "main", out=print, **_: Any):
    """Pull the library tag through the service, with progress lines; Ollama keeps it in its own store."""
    from ..download import Placed
    if model_dir:
        out(f"note: Ollama keeps models where its service says (OLLAMA_MODELS in {UNIT}), not in {model_dir}",
            flush=True)
    tag = tag_for(model)
    service_version()
    t0 = time.monotonic()
    total = done = 0
    last = 0.0
    status = ""
    with _client(None) as c:   # a 65 GB pull takes as long as it takes
        with c.stream("POST", "/api/pull", json={"model": tag, "stream": True}) as r:
            if r.status_code != 200:
                raise ServeError(f"ollama pull {tag} failed: HTTP {r.status_code} {r.read()[:200]!r}")
            for line in r.iter_lines():
                if not line.strip():
                    continue
                ev = json.loads(line)
                if "error" in ev:
                    raise ServeError(f"ollama pull {tag} failed: {ev['error']}")
                status = ev.get("status", status)
                if ev.get("total"):
                    total, done = ev["total"], ev.get("completed", 0)
                now = time.monotonic()
                if now - last > 2 or status == "success":
                    pct = f" {100 * done / total:5.1f} % of {total / 1e9:.1f} GB" if total else ""
                    out(f"ollama pull {tag}: {status}{pct}", flush=True)
                    last = now
    if status != "success":
        raise ServeError(f"ollama pull {tag} ended without success (last status: {status!r}); run it again")
    size = _model_size(tag)
    return Placed(model, tag, size, f"ollama pull {tag}", time.monotonic() - t0, repo=tag, verified=True,
                  notes=["Ollama checked each layer's sha256 digest (`verifying sha256 digest`)"])


def _model_size(name: str) -> int:
    with _client() as c:
        for m in c.get("/api/tags").json().get("models", []):
            if m.get("name") in (name, f"{name}:latest") or m.get("model") == name:
                return int(m.get("size", 0))
    return 0


# ----------------------------------------------------------------------------- 05
def _loaded(name: str) -> dict[str, Any] | None:
    with _client() as c:
        for m in c.get("/api/ps").json().get("models", []):
            if m.get("name") in (name, f"{name}:latest") or m.get("model") in (name, f"{name}:latest"):
                return m
    return None


def _num_ctx(show: dict[str, Any]) -> int | None:
    for line in (show.get("parameters") or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "num_ctx":
            return int(parts[1])
    return None


def launch(serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None):
    from .. import records, serve
    url = base_url()
    if port and port != int(url.rsplit(":", 1)[1]):
        raise ParameterError("port", port, f"0 or {url.rsplit(':', 1)[1]}: Ollama listens where its service says "
                                           f"({url}); change OLLAMA_HOST in {UNIT} to move it")
    if key_file:
        raise ParameterError("api_key_file", key_file, "empty with Ollama: it has no API key; keep it on loopback "
                                                       "(OLLAMA_HOST=127.0.0.1) or put an authenticating proxy in front")
    service_version()
    tag, name = model["path"], served_name(model)
    notes = []
    t0 = time.monotonic()
    with _client(None) as c:
        r = c.post("/api/create", json={"model": name, "from": tag, "parameters": {"num_ctx": serving.context},
                                        "stream": False})
        if r.status_code != 200:
            raise ServeError(f"Ollama could not create {name} from {tag}: HTTP {r.status_code} {r.text[:200]} — "
                             "re-run 03-place-model (ollama pull)")
        r = c.post("/api/generate", json={"model": name, "keep_alive": -1, "stream": False})
        if r.status_code != 200:
            raise ServeError(f"Ollama could not load {name}: HTTP {r.status_code} {r.text[:300]} — journalctl -u "
                             "ollama --no-pager | tail -50 says why (memory: lower the context in 02)")
        show = c.post("/api/show", json={"model": name}).json()
    ps = _loaded(name)
    got = (ps or {}).get("context_length")
    asked = _num_ctx(show)
    if ps is None:
        raise ServeError(f"Ollama does not list {name} as loaded (/api/ps) after loading it; journalctl -u ollama says why")
    if got != serving.context:
        notes.append(f"warning: Ollama runs {name} with context {got}, not the {serving.context} 02 planned "
                     f"(num_ctx {asked} in /api/show) — Claude Code's first request alone is ~37k tokens; upgrade "
                     f"Ollama ({INSTALL}) or set Environment=\"OLLAMA_CONTEXT_LENGTH={serving.context}\" with "
                     f"sudo systemctl edit ollama, then re-run 05")
    if serving.slots > 1:
        notes.append(f"slots: Ollama serves {serving.slots} at once only with Environment=\"OLLAMA_NUM_PARALLEL="
                     f"{serving.slots}\" (sudo systemctl edit ollama && sudo systemctl restart ollama)")
    if serving.kv_type != "f16":
        notes.append(f"KV type: Environment=\"OLLAMA_KV_CACHE_TYPE={serving.kv_type}\" and "
                     "\"OLLAMA_FLASH_ATTENTION=1\" in the unit (sudo systemctl edit ollama), then restart it")
    server = {"engine": "ollama", "kind": "ollama-model", "pid": 0, "model": name, "from": tag, "base_url": url,
              "served_model": name, "context_length": got, "argv": ["ollama", "run", name],
              "launch": {**serving.to_dict(), "host": url.split("://")[1].rsplit(":", 1)[0],
                         "port": int(url.rsplit(":", 1)[1]), "alias": name, "api_key_file": None},
              "log": "journalctl -u ollama", "notes": notes, "load_seconds": round(time.monotonic() - t0, 3),
              "started_at": records.now()}
    serve._write_record(server)
    records.update_state("server", server)
    return serve.Started(0, url, time.monotonic() - t0, server["argv"], Path(os.devnull), None, engine="ollama",
                         notes=notes)


def is_running(server: dict[str, Any]) -> bool:
    try:
        return _loaded(server["model"]) is not None
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def stop(server: dict[str, Any], timeout: float = 15.0, remove: bool = True) -> bool:
    """Unload sparkkit's variant (keep_alive 0); the service and other models are the owner's."""
    with _client(timeout + 30) as c:
        c.post("/api/generate", json={"model": server["model"], "keep_alive": 0, "stream": False})
    return False


def command(serving: Any, model: dict[str, Any], host: str, port: int) -> list[str]:
    """What 05 does, as the owner would type it (a Modelfile variant, then a preload that stays loaded)."""
    name, tag = served_name(model), model.get("path") or tag_for(model.get("model", "gpt-oss-120b"))
    return ["sh", "-c", f"printf 'FROM {tag}\\nPARAMETER num_ctx {serving.context}\\n' > Modelfile && "
                        f"ollama create {name} -f Modelfile && "
                        f"curl -s {base_url()}/api/generate -d '{{\"model\": \"{name}\", \"keep_alive\": -1}}'"]
