"""The bridge: LiteLLM's proxy in front of an engine that speaks only the OpenAI API, so Claude Code
(which speaks Anthropic's `/v1/messages`) can use it.

Old SGLang/vLLM images and TensorRT-LLM serve `/v1/chat/completions` but no `/v1/messages`. The bridge
is LiteLLM's proxy, pinned (`PINNED_LITELLM`), in a venv of its own (`$SPARKKIT_HOME/bridge/venv`, or
`SPARKKIT_BRIDGE_VENV`): its dependencies would fight sparkkit's pinned jupyterlab/httpx stack, so it
is never installed into sparkkit's environment. It answers both APIs and maps the served model under
its own name and under Claude names (`CLAUDE_ALIASES` plus the wildcard `claude-*`, so whatever dated
name Claude Code sends routes), each to `openai/<served model>` at the engine's `/v1`.

What LiteLLM 1.110.2 does that the config below turns off or around (read in its source):
- `/v1/messages` for an `openai/` model goes to the engine's *Responses* API (`/v1/responses`) unless
  `use_chat_completions_url_for_anthropic_messages` is set, and even then a request with
  `thinking: {type: enabled}` (every Claude Code request) does unless the model's info says
  `supports_reasoning: false` — an OpenAI-only engine has no /v1/responses, so the bridge sets both and
  every request reaches the engine as `/v1/chat/completions` (tests/test_bridge.py holds it to that);
- the proxy refuses to start without a master key: on loopback the key is `claude.LOCAL_TOKEN`, the
  placeholder Claude Code sends when sparkkit's server has no key (no secret, as with llama.cpp on
  loopback without `--api-key`); a LAN bind needs the owner's key file, which becomes the master key;
- network at start (model cost map, beta-header list, blog posts, telemetry): `LITELLM_OFFLINE_MODE`,
  `LITELLM_LOCAL_MODEL_COST_MAP`, `LITELLM_TELEMETRY_DISABLED`; no database (none configured, the
  process gets a clean environment so a stray `DATABASE_URL` cannot add one), no admin UI, no docs;
- a `.env` file in any folder above the venv (the owner's home, for the default venv) would be read
  into the proxy's environment: `LITELLM_MODE=PRODUCTION` turns that off (it changes nothing else);
- Claude Code's thinking budget does not reach the engine (LiteLLM drops `reasoning_effort` for a model
  without `supports_reasoning`): gpt-oss reasons at its chat template's default effort; its reasoning
  comes back as thinking blocks (unsigned), which Claude Code sends back and LiteLLM accepts;
- router cooldowns and retries (a single local engine has nowhere else to go): off.
- per-request overhead (records/bridge/BENCH.md, py-spy): ~1 ms of Python per streamed chunk plus
  ~60–80 ms per request (middleware stack, auth, router, translation, the stream re-assembled for
  logging); it already runs on uvloop with one worker and no DB or callbacks. Zero prices (below) cut
  ~10 % of it; the other documented switches (message logging, cache, callbacks, error logs) change
  nothing measurable, and `disable_token_counter` would break /v1/messages/count_tokens, so they stay.

The process runs detached, recorded in `$SPARKKIT_HOME/bridge/running.json` by pid + kernel start time
+ command line (serve.py's scheme), so `stop()` only ever signals the process sparkkit started.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx

from . import records, serve
from .claude import LOCAL_TOKEN
from .engines.launch import is_loopback
from .errors import ParameterError, ServeError

PINNED_LITELLM = "1.110.2"
DEFAULT_PORT = 4000                 # LiteLLM's own default
CLAUDE_ALIASES = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")
WILDCARD = "claude-*"               # PatternMatchRouter: any claude-… name (dated ones too) routes here
HEALTH_PATH = "/health/liveliness"  # unauthenticated liveness probe (also /health/liveness)
REQUEST_TIMEOUT_S = 1800            # as claude.settings_env's API_TIMEOUT_MS: long prefills on a local model
# `litellm[proxy]==1.110.2` cannot be installed from PyPI: its `proxy` extra pins these three at versions
# that were never published. The rest of the extra is installed as the extra lists it (install()).
UNPUBLISHED = ("litellm-proxy", "litellm-proxy-extras", "litellm-enterprise")
# The proxy's process environment: only these are passed through from ours, then LiteLLM's switches below.
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
_LITELLM_ENV = {
    "LITELLM_OFFLINE_MODE": "true",            # no catalog/beta-header/tokenizer fetches of its own
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",    # the bundled cost map, not GitHub's
    "LITELLM_TELEMETRY_DISABLED": "true",      # the telemetry veto
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
    "LITELLM_MODE": "PRODUCTION",              # no .env read from the folders above the venv
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    "PYTHONUNBUFFERED": "1",
}


def _say(line: str, out: Callable[[str], Any] | None = print) -> None:
    if out:
        out(f"  bridge │ {line}")


# ----------------------------------------------------------------------------- install
def bridge_dir() -> Path:
    return records.home() / "bridge"


def venv_dir(home: Path | None = None) -> Path:
    """The bridge's own venv: SPARKKIT_BRIDGE_VENV, else <home or $SPARKKIT_HOME>/bridge/venv."""
    if os.environ.get("SPARKKIT_BRIDGE_VENV") and home is None:
        return Path(os.environ["SPARKKIT_BRIDGE_VENV"]).expanduser()
    return (Path(home).expanduser() if home is not None else records.home()) / "bridge" / "venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


# Run with the venv's python: the installed litellm version and, for each requirement of its `proxy`
# extra (markers evaluated here, the unpublished three left out), the installed version or None.
_PROBE = r"""
import importlib.metadata as m, json, sys
skip = set(sys.argv[1].split(","))
try:
    version = m.version("litellm")
    from packaging.requirements import Requirement   # a dependency of litellm's
except (m.PackageNotFoundError, ImportError):
    print(json.dumps({"litellm": None})); raise SystemExit
reqs = {}
for text in m.requires("litellm") or []:
    r = Requirement(text)
    if r.name in skip or not r.marker or not r.marker.evaluate({"extra": "proxy"}) or r.marker.evaluate({"extra": ""}):
        continue
    try:
        have = m.version(r.name)
    except m.PackageNotFoundError:
        have = None
    reqs[str(r).split(";")[0].strip()] = have if have is not None and r.specifier.contains(have, prereleases=True) else None
print(json.dumps({"litellm": version, "proxy": reqs}))
"""


def _probe(venv: Path) -> dict[str, Any] | None:
    """What the venv holds, asked of its own python; None when that python does not run."""
    try:
        out = subprocess.run([str(_venv_python(venv)), "-c", _PROBE, ",".join(UNPUBLISHED)], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _ready(found: dict[str, Any] | None) -> bool:
    return bool(found) and found.get("litellm") == PINNED_LITELLM and bool(found.get("proxy")) \
        and all(v is not None for v in found["proxy"].values())


def _pip(venv: Path, args: list[str], out: Callable[[str], Any] | None) -> None:
    """`pip install ARGS` in the venv, its output streamed prefixed; ServeError with its last lines on failure."""
    argv = [str(_venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
            "--progress-bar", "off", *args]
    tail: deque[str] = deque(maxlen=15)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, bufsize=1)
    except OSError as e:
        raise ServeError(f"could not run pip in {venv} ({e}); remove that folder and try again") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if not line or "is ignored: it is neither a file nor a directory" in line:
            continue
        tail.append(line)
        _say(f"pip: {line}", out)
    if proc.wait():
        raise ServeError(f"installing LiteLLM {PINNED_LITELLM} into {venv} failed (pip exited with "
                         f"{proc.returncode}); pip's last lines:\n" + "\n".join(tail))


_lock = records.file_lock     # one installer of a venv at a time (two test sessions, or two shells, sharing one)


def install(home: Path | None = None, out: Callable[[str], Any] | None = print) -> Path:
    """The bridge's venv with LiteLLM's proxy at PINNED_LITELLM, installed on first use (progress lines
    through `out`), reused while its litellm is that version and its proxy requirements are all there.
    Returns the venv's path. Never touches sparkkit's own environment."""
    venv = venv_dir(home)
    if venv.resolve() == Path(sys.prefix).resolve():
        raise ParameterError("SPARKKIT_BRIDGE_VENV", str(venv), "a venv of the bridge's own, not sparkkit's "
                                                                "environment (LiteLLM's dependencies conflict with it)")
    with _lock(venv.parent / f".{venv.name}.lock"):
        found = _probe(venv) if _venv_python(venv).exists() else None
        if _ready(found):
            return venv
        t0 = time.monotonic()
        if found is None:                          # no venv, or one whose python no longer runs
            if venv.exists():
                _say(f"{venv} does not run; making it again", out)
                shutil.rmtree(venv)
            _say(f"creating {venv} (LiteLLM {PINNED_LITELLM} and its proxy; one time, ~800 MB, a few minutes)", out)
            base = getattr(sys, "_base_executable", None) or sys.executable
            made = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True)
            if made.returncode:
                raise ServeError(f"could not create the bridge's venv at {venv} (python -m venv exited with "
                                 f"{made.returncode}); its last lines:\n{made.stderr.strip()[-1500:]}")
        if not found or found.get("litellm") != PINNED_LITELLM:
            _pip(venv, [f"litellm=={PINNED_LITELLM}"], out)
            found = _probe(venv)
        if not found or found.get("litellm") != PINNED_LITELLM:
            raise ServeError(f"pip finished, but {venv} does not hold litellm {PINNED_LITELLM} "
                             f"(found {found and found.get('litellm')!r}); remove that folder and try again")
        missing = [req for req, have in (found.get("proxy") or {}).items() if have is None]
        if missing:
            # litellm[proxy] minus the unpublished pins (UNPUBLISHED); litellm held at its pin
            _pip(venv, [f"litellm=={PINNED_LITELLM}", *sorted(found["proxy"])], out)
            found = _probe(venv)
        if not _ready(found):
            raise ServeError(f"pip finished, but the proxy's requirements are still missing in {venv}: "
                             + ", ".join(r for r, v in (found or {}).get("proxy", {}).items() if v is None))
        _say(f"LiteLLM {PINNED_LITELLM} ready in {venv} ({time.monotonic() - t0:.0f} s)", out)
    return venv


# ----------------------------------------------------------------------------- config
def engine_root(engine_base_url: str) -> str:
    """`http://host:port` from what a user may pass: with or without a trailing `/` or `/v1`."""
    url = str(engine_base_url).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParameterError("engine_base_url", engine_base_url, "the engine's URL, e.g. http://127.0.0.1:8000 "
                                                                   "(its OpenAI API under /v1)")
    return url[:-3] if url.endswith("/v1") else url


def config(engine_base_url: str, served_model: str, api_key: str | None = None, *,
           master_key: str | None = None, aliases: tuple[str, ...] = CLAUDE_ALIASES) -> dict[str, Any]:
    """LiteLLM proxy config: the served model under its own name, the Claude aliases and `claude-*`, each
    `openai/<served_model>` at the engine's /v1. `api_key`: the key the engine wants (None: it wants
    none; LiteLLM's OpenAI client needs some value, so the placeholder goes). `master_key`: what clients
    must send to the bridge (None: LOCAL_TOKEN, what Claude Code sends to a keyless sparkkit server)."""
    if not isinstance(served_model, str) or not served_model.strip():
        raise ParameterError("served_model", served_model, "the model name the engine's /v1/models lists")
    params = {"model": f"openai/{served_model}", "api_base": engine_root(engine_base_url) + "/v1",
              "api_key": api_key or LOCAL_TOKEN, "timeout": REQUEST_TIMEOUT_S, "stream_timeout": REQUEST_TIMEOUT_S}
    names = list(dict.fromkeys([served_model, *aliases, WILDCARD]))
    # supports_reasoning False: else Claude Code's `thinking: {type: enabled}` sends the request to the
    # engine's /v1/responses whatever use_chat_completions_url_for_anthropic_messages says (LiteLLM's
    # openai_thinking_routes_to_responses); mode chat pins the deployment's chat requests to chat.
    # The engine's reasoning still comes back (llama.cpp's reasoning_content → thinking blocks).
    # Zero prices: a local engine costs nothing, said outright. Without them LiteLLM prices every request
    # from its cost map's `gpt-oss-120b` entry, gets $0 and then runs its zero-cost diagnostic (a pydantic
    # walk of that entry) after each stream, on the request's CPU; with them it reads these two numbers.
    # Measured (records/bridge/BENCH.md): ~10 % less proxy CPU a request (154 → 141 ms streaming 64 tokens
    # on the OpenAI route, 95 → 85 ms on /v1/messages, 2-core box); latency differences stayed in the noise.
    # Pricing feeds only spend tracking: nothing the model is sent changes.
    info = {"mode": "chat", "supports_reasoning": False, "input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
    return {
        "model_list": [{"model_name": name, "litellm_params": dict(params), "model_info": dict(info)}
                       for name in names],
        "litellm_settings": {
            "drop_params": True,                                        # Anthropic-only fields an engine rejects
            "use_chat_completions_url_for_anthropic_messages": True,    # not /v1/responses: the engine lacks it
            "request_timeout": REQUEST_TIMEOUT_S,
            "num_retries": 0,                                           # a failed request is reported, not re-sent
            "suppress_startup_output": True,
        },
        "router_settings": {"disable_cooldowns": True, "num_retries": 0},
        "general_settings": {"master_key": master_key or LOCAL_TOKEN, "disable_spend_logs": True,
                             "disable_reset_budget": True,
                             "trusted_proxy_ranges": []},               # clients connect directly
    }


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    """The config as YAML (JSON is YAML; LiteLLM reads it with yaml.safe_load), mode 0600: it holds keys."""
    records.write_atomic(Path(path), (json.dumps(cfg, indent=2) + "\n").encode("utf-8"), 0o600)
    return Path(path)


# ----------------------------------------------------------------------------- start / stop
def _record_path() -> Path:
    return bridge_dir() / "running.json"


def _read_record() -> dict[str, Any] | None:
    try:
        rec = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _url_host(host: str) -> str:
    """The address a client on this machine uses for a bind address."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def check_engine(engine_base_url: str, served_model: str, api_key: str | None = None,
                 timeout: float = 10.0) -> list[str]:
    """Refuse up front, in one sentence, an engine that does not answer /v1/models or does not serve
    `served_model`; returns the models it serves."""
    root = engine_root(engine_base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{root}/v1/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise ServeError(f"nothing answers at {root}/v1/models ({type(e).__name__}): start the engine first "
                         f"(05-serve), or pass the base URL it serves at") from None
    if r.status_code in (401, 403):
        raise ServeError(f"the engine at {root} wants an API key (HTTP {r.status_code} from /v1/models): pass "
                         f"engine_key_file, a 0600 file holding it")
    try:
        r.raise_for_status()
        served = [m["id"] for m in r.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        raise ServeError(f"{root}/v1/models did not answer with an OpenAI model list (HTTP {r.status_code}: "
                         f"{r.text[:120]!r}); is that an OpenAI-compatible engine?") from None
    if served_model not in served:
        raise ServeError(f"the engine at {root} does not serve {served_model!r} (it serves "
                         f"{', '.join(map(repr, served)) or 'nothing'}); pass one of those as served_model")
    return served


def _diagnosis(log_text: str, port: int) -> str:
    """A sentence for failures recognisable in the proxy's log."""
    patterns = [
        (r"address already in use|Errno 98", f"port {port} was taken while the bridge started; choose another port"),
        (r"UnsafeMasterKeyError|refused to start: no master key", "LiteLLM refused its master key"),
        (r"No module named '([^']+)'", "the bridge's venv lacks the module {0}: remove the venv "
                                       "({venv}) so the next start installs it again"),
        (r"(?i)prisma|DATABASE_URL", "LiteLLM tried to use a database; the bridge configures none"),
        (r"yaml\.\w*Error|ScannerError|ParserError", "LiteLLM could not read its config file"),
    ]
    for pattern, sentence in patterns:
        m = re.search(pattern, log_text)
        if m:
            return " " + sentence.format(*m.groups(), venv=venv_dir()) + "."
    return ""


def _launch(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                cwd=bridge_dir(), start_new_session=True, close_fds=True)


def _settled_cmdline(pid: int, argv: list[str], timeout: float = 5.0) -> list[str] | None:
    """The child's command line once it has exec'd (before that /proc shows ours)."""
    deadline = time.monotonic() + timeout
    cmd = serve._proc_cmdline(pid)
    while cmd != argv and time.monotonic() < deadline:
        time.sleep(0.01)
        cmd = serve._proc_cmdline(pid)
    return cmd


def _terminate(rec: dict[str, Any], timeout: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL, the recorded process while it is still ours; True if it had to be forced."""
    pid = rec["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while serve.is_ours(rec) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    forced = False
    if serve.is_ours(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        forced = True
    _reap(pid, wait=5.0)
    return forced


def _reap(pid: int, wait: float = 0.0) -> None:
    """Collect the exit status if the bridge is our child (started by this process), waiting up to `wait`
    seconds for it to finish exiting (its command line is gone a moment before it is a zombie)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return                      # not our child (init reaps it), or already collected
        if done or time.monotonic() >= deadline:
            return
        time.sleep(0.02)


def _wait_ready(proc: subprocess.Popen, base_url: str, log: Path, port: int, key: str, names: list[str],
                timeout: float) -> float:
    t0 = time.monotonic()
    deadline = t0 + timeout
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise ServeError(f"the bridge (LiteLLM) exited with code {proc.returncode} before it was ready."
                                 f"{_diagnosis(text, port)} Last lines of {log}:\n{serve.log_tail(log)}")
            try:
                if c.get(HEALTH_PATH).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServeError(f"the bridge was not ready after {timeout:.0f} s; last lines of {log}:\n"
                                 f"{serve.log_tail(log)}")
            time.sleep(0.2)
        try:
            listed = [m.get("id") for m in c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
                      .get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as e:
            raise ServeError(f"the bridge answers {HEALTH_PATH} but not /v1/models ({type(e).__name__}); "
                             f"see {log}") from None
    absent = [n for n in names if n != WILDCARD and n not in listed]
    if absent:
        raise ServeError(f"the bridge started but does not list {', '.join(absent)} (it lists "
                         f"{', '.join(map(str, listed)) or 'nothing'}); see {log}")
    return time.monotonic() - t0


def start(engine_base_url: str, served_model: str, host: str = "127.0.0.1", port: int | None = None,
          api_key_file: str | None = None, *, engine_key_file: str | None = None, timeout: float = 600.0,
          out: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Start the bridge in front of the OpenAI engine at `engine_base_url` serving `served_model`.

    Loopback by default; a LAN `host` needs `api_key_file` (a 0600 file; its key becomes LiteLLM's
    master key, which clients send as their token). `engine_key_file`: the key the engine itself wants.
    The engine is probed first (refused in one sentence when it does not answer or does not serve the
    model). A sparkkit bridge already serving the same thing is kept; another is stopped once every check
    has passed. Returns the record (pid, base_url, log, …; no key in it).

    The engine has to be up first: LiteLLM asks it for /v1/models as it starts."""
    port = DEFAULT_PORT if port is None else port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ParameterError("port", port, "an integer from 1 to 65535")
    key = serve.read_key_file(api_key_file) if api_key_file else None
    if not is_loopback(host) and not key:
        raise ParameterError("host", host, "127.0.0.1 (default), or a LAN address together with api_key_file (a "
                                           "0600 file holding the key) — an open bridge on the LAN runs anyone's "
                                           "prompts")
    engine_key = serve.read_key_file(engine_key_file) if engine_key_file else None
    root = engine_root(engine_base_url)
    base_url = f"http://{_url_host(host)}:{port}"
    cfg = config(root, served_model, engine_key, master_key=key)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]   # keys changed: restart
    want = {"engine_base_url": root, "served_model": served_model, "host": host, "port": port,
            "litellm": PINNED_LITELLM, "config_sha256": digest}

    previous = _read_record()
    ours = previous if previous and serve.is_ours(previous) else None
    if ours and all(ours.get(k) == v for k, v in want.items()) and _healthy(ours["base_url"]):
        return {**ours, "kept": True}
    if previous and not ours:
        _record_path().unlink(missing_ok=True)           # a stale record: its process is gone
    # every check before the running bridge (if any) is stopped: a bad input costs nothing that works
    if _port_taken(host, port) and not (ours and ours.get("port") == port):
        raise ServeError(_taken(port, host))
    check_engine(root, served_model, engine_key)
    venv = install(out=out)
    if ours:
        stop()
        _say(f"stopped the previous sparkkit bridge (pid {ours['pid']}, {ours.get('base_url')})", out)

    folder = bridge_dir()
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = write_config(cfg, folder / f"config-{port}.yaml")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = folder / f"bridge-{port}-{stamp}.log"
    n = 1
    while log.exists():
        log, n = folder / f"bridge-{port}-{stamp}-{n}.log", n + 1
    argv = [str(_venv_python(venv)), str(venv / "bin" / "litellm"), "--config", str(cfg_path), "--host", host,
            "--port", str(port)]
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ} | _LITELLM_ENV
    _say(f"starting LiteLLM {PINNED_LITELLM} at {base_url} in front of {root} ({served_model})", out)
    t0 = time.monotonic()
    proc = _launch(argv, env, log)
    rec = {"pid": proc.pid, "start_ticks": serve._proc_start_ticks(proc.pid),
           "argv": _settled_cmdline(proc.pid, argv) or argv, "base_url": base_url, "log": str(log),
           "config": str(cfg_path), "venv": str(venv), "aliases": [served_model, *CLAUDE_ALIASES, WILDCARD],
           "started_at": records.now(), **want}
    records._write_json(_record_path(), rec, mode=0o600)
    try:
        _wait_ready(proc, base_url, log, port, key or LOCAL_TOKEN, rec["aliases"], timeout)
    except BaseException:
        serve.end_process(proc)
        _record_path().unlink(missing_ok=True)
        raise
    rec["ready_seconds"] = round(time.monotonic() - t0, 2)
    rec["argv"] = serve._proc_cmdline(proc.pid) or rec["argv"]
    records._write_json(_record_path(), rec, mode=0o600)
    _say(f"ready in {rec['ready_seconds']:.1f} s (pid {proc.pid}, log {log})", out)
    return {**rec, "kept": False}


def _taken(port: int, host: str) -> str:
    return (f"port {port} on {host} is already in use by a process sparkkit did not start; stop that process or "
            f"start the bridge on another port (port={port + 1})")


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(base_url + HEALTH_PATH, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def stop(timeout: float = 15.0) -> dict[str, Any]:
    """Stop the bridge sparkkit started (SIGTERM, then SIGKILL); anything else is left alone."""
    rec = _read_record()
    if rec is None:
        return {"stopped": False, "message": "no sparkkit bridge is recorded; nothing to stop"}
    pid = rec.get("pid")
    if not serve.is_ours(rec):
        _record_path().unlink(missing_ok=True)
        return {"stopped": False, "message": f"pid {pid} is no longer the bridge sparkkit started (it exited); "
                                             "left alone, record cleared"}
    forced = _terminate(rec, timeout)
    _record_path().unlink(missing_ok=True)
    return {"stopped": True, "message": f"stopped the sparkkit bridge (pid {pid}{', forced' if forced else ''})"}


def status() -> dict[str, Any]:
    rec = _read_record()
    if rec is None:
        return {"running": False}
    running = serve.is_ours(rec)
    return {"running": running, "healthy": running and _healthy(rec["base_url"]), "pid": rec.get("pid"),
            "base_url": rec.get("base_url"), "engine_base_url": rec.get("engine_base_url"),
            "served_model": rec.get("served_model"), "aliases": rec.get("aliases"), "log": rec.get("log"),
            "started_at": rec.get("started_at")}


# ----------------------------------------------------------------------------- benchmark
BENCH_PROMPT = "Count from 1 to 500, separated by spaces."
ROUTES = ("openai", "anthropic")
LATENCY_GOAL_MS = 1.0
DECODE_GOAL = 0.99


def _request(route: str, model: str, max_tokens: int, prompt: str, stream: bool) -> tuple[str, dict[str, Any]]:
    """(path, body) of one request: greedy, fixed max_tokens. On the OpenAI route `ignore_eos` (llama.cpp)
    makes both sides decode exactly max_tokens; llama.cpp's own /v1/messages ignores it while LiteLLM would
    forward it, so the Anthropic route leaves it out (both sides then stop where the model stops)."""
    msgs = [{"role": "user", "content": prompt}]
    if route == "openai":
        body = {"model": model, "messages": msgs, "max_tokens": max_tokens, "temperature": 0, "top_k": 1, "seed": 0,
                "ignore_eos": True, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return "/v1/chat/completions", body
    return "/v1/messages", {"model": model, "messages": msgs, "max_tokens": max_tokens, "temperature": 0, "top_k": 1,
                            "stream": stream}


def _one(c: httpx.Client, route: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request, timed client-side: TTFT (first generated text), decode rate (deltas after the first)."""
    t0 = time.perf_counter()
    stamps: list[float] = []
    text: list[str] = []
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    if not body.get("stream"):
        r = c.post(path, json=body)
        t_end = time.perf_counter()
        if r.status_code != 200:
            raise ServeError(f"{c.base_url}{path} answered HTTP {r.status_code}: {r.text[:200]}")
        d = r.json()
        timings = d.get("timings") or {}
        usage = d.get("usage") or {}
        if route == "openai":
            msg = d["choices"][0]["message"]
            text = [msg.get("reasoning_content") or "", msg.get("content") or ""]
        else:
            text = [b.get("thinking") or b.get("text") or "" for b in d.get("content", [])]
        return {"ttft (ms)": None, "total (ms)": (t_end - t0) * 1e3, "deltas": None, "decode tok/s": None,
                "output tokens": usage.get("completion_tokens", usage.get("output_tokens")), "text": "".join(text),
                "server prompt (ms)": timings.get("prompt_ms"), "server decode (ms)": timings.get("predicted_ms"),
                "server tok/s": timings.get("predicted_per_second")}
    with c.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            r.read()
            raise ServeError(f"{c.base_url}{path} answered HTTP {r.status_code}: {r.text[:200]}")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                ev = json.loads(data)
            except ValueError:
                continue
            piece = ""
            if route == "openai":
                for ch in ev.get("choices") or []:
                    delta = ch.get("delta") or {}
                    piece += (delta.get("reasoning_content") or "") + (delta.get("content") or "")
                usage = ev.get("usage") or usage
                timings = ev.get("timings") or timings
            elif ev.get("type") == "content_block_delta":
                delta = ev.get("delta") or {}
                piece = delta.get("thinking") or delta.get("text") or delta.get("partial_json") or ""
            elif ev.get("type") == "message_delta":
                usage = ev.get("usage") or usage
            if piece:
                stamps.append(time.perf_counter())
                text.append(piece)
    t_end = time.perf_counter()
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    return {"ttft (ms)": (stamps[0] - t0) * 1e3 if stamps else None, "total (ms)": (t_end - t0) * 1e3,
            "deltas": len(stamps), "decode tok/s": (len(stamps) - 1) / span if span > 0 else None,
            "output tokens": usage.get("completion_tokens", usage.get("output_tokens")), "text": "".join(text),
            "server prompt (ms)": timings.get("prompt_ms"), "server decode (ms)": timings.get("predicted_ms"),
            "server tok/s": timings.get("predicted_per_second")}


def _client(base_url: str, key: str | None, anthropic: bool) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if anthropic:
        headers |= {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})}
    # no keep-alive, as verify.client: a fresh connection per request on both sides alike
    return httpx.Client(base_url=base_url, headers=headers, timeout=600.0,
                        limits=httpx.Limits(max_keepalive_connections=0))


def bench(direct_base_url: str, bridge_base_url: str, model: str, requests: int = 20, *, max_tokens: int = 64,
          alias: str = CLAUDE_ALIASES[0], routes: tuple[str, ...] = ROUTES, bridge_key: str | None = None,
          direct_key: str | None = None, warmup: int = 2, prompt: str = BENCH_PROMPT,
          progress: Callable[[str], Any] | None = None):
    """The same engine direct and through the bridge, interleaved: for each route, `requests` pairs of the
    same greedy, fixed-max_tokens request, streamed, the order within a pair alternating. Added latency is
    bridged − direct time to first token, pair by pair (p50 over pairs); decode is the client-side rate of
    streamed deltas after the first (median bridged / median direct). On the OpenAI route a non-streamed
    pair per round also reads llama.cpp's own `timings`, so `proxy overhead` = (wall − server time) bridged
    − the same direct, free of the server's own variation. The prompt is the same for every request, and
    each side is warmed first, so every timed request meets the same prompt cache.

    The Anthropic route compares llama.cpp's own /v1/messages with the bridge's (which reaches the engine
    as /v1/chat/completions), by the Claude alias, as Claude Code calls it. Returns (rows, summary)."""
    import pandas as pd

    for r in routes:
        if r not in ROUTES:
            raise ParameterError("routes", routes, ", ".join(ROUTES))
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise ParameterError("requests", requests, "an integer >= 1")
    bridge_key = bridge_key or LOCAL_TOKEN
    rows: list[dict[str, Any]] = []
    clients = {(side, route): _client(url, key, route == "anthropic")
               for side, url, key in (("direct", direct_base_url.rstrip("/"), direct_key),
                                      ("bridged", bridge_base_url.rstrip("/"), bridge_key)) for route in routes}
    plan = [(route, stream) for route in routes for stream in ((True, False) if route == "openai" else (True,))]
    try:
        for route, stream in plan:                      # warm both sides: cache, connections, lazy imports
            for side in ("direct", "bridged"):
                for _ in range(warmup):
                    _one(clients[side, route], route, *_request(route, model if side == "direct" or route == "openai"
                                                                else alias, max_tokens, prompt, stream))
        for i in range(requests):
            for route, stream in plan:
                order = ("direct", "bridged") if i % 2 == 0 else ("bridged", "direct")
                for pos, side in enumerate(order):
                    name = alias if route == "anthropic" and side == "bridged" else model
                    row = _one(clients[side, route], route, *_request(route, name, max_tokens, prompt, stream))
                    rows.append({"route": route, "stream": stream, "pair": i, "side": side, "first in pair": pos == 0,
                                 "model": name, **row})
            if progress:
                progress(f"[{i + 1}/{requests}] pairs done")
    finally:
        for c in clients.values():
            c.close()
    df = pd.DataFrame(rows)
    return df, summarize(df)


def _p50(values) -> float | None:
    vals = [float(v) for v in values if v is not None and v == v]
    return round(statistics.median(vals), 3) if vals else None


def summarize(df) -> dict[str, Any]:
    """Per route: p50 added latency (TTFT, bridged − direct per pair), p50 added total time, decode ratio
    (streamed deltas after the first), each goal met or not; the end-to-end rate ratio (output tokens over
    the whole request, prefill and proxy included: steadier when deltas arrive in bursts, as they do when a
    model decodes faster than the client reads — the tiny model's ~0.5 ms a token); on the OpenAI route also
    the overhead net of llama.cpp's own timings."""
    out: dict[str, Any] = {}
    for route in df["route"].unique():
        streamed = df[(df["route"] == route) & df["stream"]]
        pairs = streamed.pivot(index="pair", columns="side")
        added_ttft = pairs["ttft (ms)"]["bridged"] - pairs["ttft (ms)"]["direct"]
        added_total = pairs["total (ms)"]["bridged"] - pairs["total (ms)"]["direct"]
        d_rate = _p50(pairs["decode tok/s"]["direct"])
        b_rate = _p50(pairs["decode tok/s"]["bridged"])
        ratio = round(b_rate / d_rate, 4) if d_rate and b_rate else None
        e2e = (streamed["output tokens"].astype(float) * 1e3 / streamed["total (ms)"]).groupby(streamed["side"])
        e2e_ratio = _p50(e2e.get_group("bridged")) / _p50(e2e.get_group("direct")) if len(e2e) == 2 else None
        s: dict[str, Any] = {
            "pairs": int(len(pairs)),
            "p50 added latency (ms)": _p50(added_ttft),
            "p50 added total (ms)": _p50(added_total),
            "direct decode tok/s": d_rate, "bridged decode tok/s": b_rate, "decode ratio": ratio,
            "end-to-end tok/s ratio": round(e2e_ratio, 4) if e2e_ratio else None,
            "same output": bool((pairs["text"]["bridged"] == pairs["text"]["direct"]).all()),
        }
        timed = df[(df["route"] == route) & ~df["stream"]]
        if len(timed) and timed["server decode (ms)"].notna().all():
            t = timed.assign(net=timed["total (ms)"] - timed["server prompt (ms)"] - timed["server decode (ms)"])
            tp = t.pivot(index="pair", columns="side", values="net")
            s["p50 proxy overhead net of server time (ms)"] = _p50(tp["bridged"] - tp["direct"])
            st = timed.pivot(index="pair", columns="side", values="server tok/s")
            s["server decode ratio (llama.cpp timings)"] = round(_p50(st["bridged"]) / _p50(st["direct"]), 4)
        s["latency goal met (≤ 1 ms)"] = s["p50 added latency (ms)"] is not None and \
            s["p50 added latency (ms)"] <= LATENCY_GOAL_MS
        s["decode goal met (≥ 99 %)"] = ratio is not None and ratio >= DECODE_GOAL
        out[route] = s
    return out


def summary_table(summary: dict[str, Any]):
    """The summary as a table: one column per route."""
    import pandas as pd
    return pd.DataFrame(summary)
