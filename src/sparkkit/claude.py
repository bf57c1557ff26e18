"""Wire Claude Code to the local server (runbook 07), and prove it with the real CLI.

Settings go into the `env` block of a Claude Code settings file — merged with what is there,
after a timestamped backup, never by blind overwrite. Where the runbooks run on the embedded
default the file is in a sandbox home (``$SPARKKIT_HOME/claude-home``), never the user's
``~/.claude``. The values come from research/claude-code.md (CLI 2.1.332, verified there):
the attribution line off (it defeats prefix caching), the auto-compact window set to the served
context (an unknown model is otherwise assumed to have 1M tokens), a fixed tool list.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import records
from .errors import SparkkitError

PINNED_CLI = "2.1.332"
LOCAL_TOKEN = "sparkkit-local"   # what Claude Code sends when the server has no key: not a secret
# Claude Code's first request (system prompt, the 21 tools, the first user turn) with 2.1.332: 13,822 tokens with
# gpt-oss's own tokenizer (o200k_harmony; records/fullscale/first-request/NOTES.md). sparkkit's generated models
# (the embedded default, `03 -p source generate`) split the same request into ~37.6k tokens of their own vocabulary
# (the server log of records/fullscale/h200-run1 and the agent-loop benchmark). A context below it cannot take one turn.
FIRST_REQUEST_TOKENS = 13_822
STANDIN_FIRST_REQUEST_TOKENS = 37_700
CONTEXT_HEADROOM = 8_192          # room for the answer and a few tool results before compaction
NPM_PACKAGE = "@anthropic-ai/claude-code"
MAX_RETRIES = 2                   # CLAUDE_CODE_MAX_RETRIES: the 500 storm ends in seconds, not minutes


def settings_env(base_url: str, model: str, context: int, token: str | None = None) -> dict[str, str]:
    """The `env` block that points Claude Code at our server."""
    return {
        "ANTHROPIC_BASE_URL": base_url,                       # no /v1: the CLI appends it
        "ANTHROPIC_AUTH_TOKEN": token or LOCAL_TOKEN,    # sent as Bearer; must match the server key
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "CLAUDE_CODE_SUBAGENT_MODEL": model,
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",                # per-session line at token 0 busts the KV prefix cache
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(context),      # else compaction plans for 1M tokens
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(context),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",      # no telemetry / HEAD probes to a local box
        "ENABLE_TOOL_SEARCH": "false",                        # fixed tools[] keeps the prompt prefix stable
        "API_TIMEOUT_MS": "1800000",                          # long prefills on a local model
        # A 500 (llama.cpp's answer when the model's tool call breaks the request's grammar) is retried 10 times
        # over ~150 s by default; 2 retries give a sampled model two more tries and end in ~3 s (measured with
        # 2.1.332: 3 requests, 2.6 s against an instant 500). A server restarted mid-session fails the turn
        # the same way: run it again once 05 says the server is up.
        "CLAUDE_CODE_MAX_RETRIES": str(MAX_RETRIES),
    }


@dataclass
class SettingsWrite:
    path: Path
    backup: Path | None
    added: list[str]
    changed: list[str]
    kept: list[str]


def write_settings(path: Path, env: dict[str, str]) -> SettingsWrite:
    """Merge `env` into the settings file's `env` block; back the old file up first.

    The file may hold a key (ANTHROPIC_AUTH_TOKEN), so: a symlink is written through to its target
    (the backup sits beside the target); the target's mode is kept, and a new file is 0600, as is the
    backup; a read-only file is refused, not overwritten; the new content goes to a private temporary
    file beside the target, renamed over it, and removed if anything fails — no partial file is left."""
    link = Path(path)
    path = Path(os.path.realpath(link))          # follow a symlinked settings file to the real one
    existing: dict[str, Any] = {}
    backup = None
    mode = 0o600
    before: bytes | None = None          # the file as it was, for `sparkkit unwire`
    mode_before: int | None = None
    if path.exists():
        if not path.stat().st_mode & stat.S_IWUSR or not os.access(path, os.W_OK):   # root passes os.access
            raise SparkkitError(f"{link} is read-only{' (through its link to ' + str(path) + ')' if path != link else ''}: "
                                "sparkkit will not overwrite it; make it writable (chmod u+w) or pass another "
                                "-p scope, then re-run 07")
        before = path.read_bytes()
        mode_before = stat.S_IMODE(path.stat().st_mode)
        raw = before.decode("utf-8", errors="replace")
        try:
            existing = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as e:
            raise SparkkitError(f"{path} is not valid JSON ({e}); fix or move it, then re-run 07 — "
                                "sparkkit will not overwrite it") from e
        if not isinstance(existing, dict) or not isinstance(existing.get("env", {}), dict):
            raise SparkkitError(f"{path} does not hold a JSON object with an `env` object; fix or move it")
        secret = env.get("ANTHROPIC_AUTH_TOKEN", LOCAL_TOKEN) != LOCAL_TOKEN   # a real key, not the placeholder
        mode = stat.S_IMODE(path.stat().st_mode) & (~0o077 if secret else ~0)
        backup = path.with_name(f"{path.name}.sparkkit-backup-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while backup.exists():
            backup = backup.with_name(f"{backup.name.split('.~')[0]}.~{n}")
            n += 1
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # it may hold a key too
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(raw)
    old_env = dict(existing.get("env", {}))
    merged = {**existing, "env": {**old_env, **env}}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        records.write_atomic(path, (json.dumps(merged, indent=2) + "\n").encode("utf-8"), mode)
    except OSError as e:
        raise SparkkitError(f"could not write {path} ({e.strerror or e}); it is unchanged"
                            + (f" and its backup is {backup}" if backup else "") + "; fix its permissions and re-run 07") from None
    from .wiring import remember
    remember(path, before, mode_before, old_env, env)
    return SettingsWrite(link, backup,
                         added=sorted(k for k in env if k not in old_env),
                         changed=sorted(k for k in env if k in old_env and old_env[k] != env[k]),
                         kept=sorted(k for k in old_env if k not in env))


def sandbox_home() -> Path:
    return records.home() / "claude-home"


def settings_path(scope: str, project_dir: str = "") -> Path:
    """user: ~/.claude/settings.json (every session of this user); project: <dir>/.claude/settings.local.json
    (sessions started in that project only; Claude Code's personal, git-ignored file, which outranks the
    user's); sandbox: a home of sparkkit's own (the embedded default)."""
    if scope == "project":
        return project_root(project_dir) / ".claude" / "settings.local.json"
    home = sandbox_home() if scope == "sandbox" else Path.home()
    return home / ".claude" / "settings.json"


def project_root(project_dir: str) -> Path:
    from .errors import ParameterError
    p = Path(project_dir).expanduser() if project_dir else None
    if p is None or not p.is_dir():
        raise ParameterError("project_dir", project_dir, "an existing directory: the project whose Claude Code "
                                                         "sessions should use the local model (scope project)")
    return p.resolve()


# ----------------------------------------------------------------------------- the CLI
def cli_dir() -> Path:
    """Where the pinned CLI lives; SPARKKIT_CLAUDE_DIR lets several homes share one install."""
    return Path(os.environ.get("SPARKKIT_CLAUDE_DIR") or records.home() / "claude-code").expanduser()


def installed_cli() -> Path:
    return cli_dir() / "node_modules" / ".bin" / "claude"


def cli_version(cli: Path) -> str:
    out = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip().split(" ")[0]


def ensure_cli(explicit: str = "") -> Path:
    """The Claude Code CLI to run: `explicit`, else the pinned one (npm-installed on first use)."""
    if explicit:
        cli = Path(shutil.which(explicit) or explicit)
        if not cli.exists():
            raise SparkkitError(f"parameter `claude_bin`: {explicit!r} not found; leave it empty to use the "
                                f"pinned CLI {PINNED_CLI}")
        return cli
    cli = installed_cli()
    if cli.exists() and cli_version(cli) == PINNED_CLI:
        return cli
    if shutil.which("npm") is None:
        raise SparkkitError("npm is not installed; install Node.js 20+ (conda: nodejs, Debian: apt-get install npm)")
    print(f"installing {NPM_PACKAGE}@{PINNED_CLI} into {cli_dir()} (one time, ~400 MB) …", flush=True)
    cli_dir().mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(cli_dir()),
                           f"{NPM_PACKAGE}@{PINNED_CLI}"], capture_output=True, text=True)
    if proc.returncode or not cli.exists():
        raise SparkkitError(f"npm install {NPM_PACKAGE}@{PINNED_CLI} failed:\n{proc.stderr[-2000:]}")
    return cli


@dataclass
class CliRun:
    exit_code: int
    seconds: float
    result: str
    turns: int | None
    tool_uses: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and bool(self.result.strip())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ask(cli: Path, prompt: str, home: Path, cwd: Path, timeout: float = 600.0,
        add_dirs: tuple[Path, ...] = (), progress: Callable[[str], None] | None = None,
        launcher_env: dict[str, str] | None = None) -> CliRun:
    """Run `claude -p PROMPT` with its settings from `home` (or, `launcher_env`, as `sparkkit claude` runs it:
    those settings through `--settings` and the process environment, no file of `home` written); parse the
    stream-json transcript as it comes (`progress` gets one line per tool call, tool result and answer)."""
    # A clean environment: the settings file alone must be enough (and the caller's own
    # ANTHROPIC_* variables must not leak into the proof).
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", **(launcher_env or {})}
    if launcher_env:
        with launcher_settings(launcher_env) as flag:
            return _ask(cli, prompt, env, cwd, timeout, add_dirs, progress, ["--settings", str(flag)])
    return _ask(cli, prompt, env, cwd, timeout, add_dirs, progress, [])


@contextlib.contextmanager
def launcher_settings(env_block: dict[str, str]):
    """The settings of one launched process: a 0600 file of sparkkit's own, removed afterwards."""
    folder = records.home() / "claude-launcher"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="settings-", suffix=".json", dir=folder)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"env": env_block}, f)
        yield Path(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _ask(cli: Path, prompt: str, env: dict[str, str], cwd: Path, timeout: float, add_dirs: tuple[Path, ...],
         progress: Callable[[str], None] | None, flags: list[str]) -> CliRun:
    t0 = time.monotonic()
    extra = [a for d in add_dirs for a in ("--add-dir", str(d))] + flags
    proc = subprocess.Popen([str(cli), "-p", prompt, "--output-format", "stream-json", "--verbose", *extra],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    killed = threading.Event()
    timer = threading.Timer(timeout, lambda: (killed.set(), proc.kill()))
    timer.start()
    run = CliRun(0, 0.0, "", None)
    try:
        for line in proc.stdout:
            _read_event(line, run, progress, t0)
        proc.wait()
    finally:
        timer.cancel()
    reader.join(timeout=5)
    if killed.is_set():
        raise SparkkitError(f"Claude Code did not finish within {timeout:.0f} s; is the server answering? "
                            f"(06-verify checks it)")
    run.exit_code = proc.returncode or run.exit_code
    run.seconds = time.monotonic() - t0
    run.stderr_tail = "".join(err)[-1500:]
    return run


def _read_event(line: str, run: CliRun, progress: Callable[[str], None] | None, t0: float) -> None:
    """One line of `--output-format stream-json`: tool calls, tool results and the result go into `run`."""
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        return
    say = (lambda text: progress(f"  [{time.monotonic() - t0:5.1f} s] {text}")) if progress else (lambda text: None)
    content = (ev.get("message") or {}).get("content") if isinstance(ev.get("message"), dict) else None
    for block in content if isinstance(content, list) else []:
        if block.get("type") == "tool_use":
            run.tool_uses.append({"name": block.get("name"), "input": block.get("input")})
            say(f"Claude Code calls {block.get('name')}({json.dumps(block.get('input'))[:100]})")
        elif block.get("type") == "tool_result":
            text = block.get("content")
            text = text if isinstance(text, str) else json.dumps(text)
            run.tool_results.append({"is_error": bool(block.get("is_error")), "content": text[:500]})
            say(f"tool result{' (error)' if block.get('is_error') else ''}: {len(text)} characters")
    if ev.get("type") == "result":
        run.result = ev.get("result") or ""
        run.turns = ev.get("num_turns")
        if ev.get("is_error"):
            run.exit_code = 1
        say(f"{'error' if ev.get('is_error') else 'answer'} after {run.turns} turn(s): {run.result[:100]!r}")


SCOPES = ("auto", "launcher", "sandbox", "user", "project")
# What each scope changes, and for whom: 07 says it in its record and under its cell.
FOR_WHOM = {
    "launcher": "nothing was written: every Claude Code session keeps what it had; `sparkkit claude` starts one "
                "on the local model (this process only); `sparkkit use MODEL --scope user` makes it stick",
    "sandbox": "only sparkkit's own sandbox home ({path}); the owner's Claude Code is untouched; `sparkkit claude` "
               "starts a local session",
    "user": "every Claude Code session of this user on this box now uses the local model ({path}); "
            "`sparkkit use cloud` gives the file back as it was",
    "project": "Claude Code sessions started in {project} use the local model ({path}); every other session keeps "
               "what it had; `sparkkit unwire project {project}` undoes it",
}


@dataclass
class Wiring:
    settings: SettingsWrite
    env: dict[str, str]
    cli: Path | None
    cli_version: str | None
    run: CliRun | None
    prompt: str
    bridge: dict[str, Any] | None = None     # the LiteLLM bridge 07 put in front (an engine without /v1/messages)
    notes: list[str] = field(default_factory=list)
    scope: str = ""
    said: str = ""                            # what 07 changed, and for whom (FOR_WHOM)

    def record(self) -> tuple[str, str, dict[str, Any]]:
        s = self.settings
        results = {"scope": self.scope, "for_whom": self.said, "settings": str(s.path) if s else None,
                   "backup": str(s.backup or "") if s else "", "added": s.added if s else [],
                   "changed": s.changed if s else [], "kept": s.kept if s else [], "env": self.env, "cli_version": self.cli_version, "prompt": self.prompt,
                   "cli": self.run.to_dict() if self.run else None, "notes": self.notes,
                   "bridge": {k: v for k, v in (self.bridge or {}).items() if k in ("pid", "base_url", "log", "litellm",
                                                                                  "aliases")} or None}
        if self.run is None:
            where = f"settings written to {s.path}" if s else "no settings file written (scope launcher)"
            return "warn", (f"{where}; CLI not run (run_cli=False)" + (f"; {self.notes[0]}" if self.notes else "")), \
                results
        used = [t["name"] for t in self.run.tool_uses]
        tool_ok = bool(used) and self.run.tool_results and not any(r["is_error"] for r in self.run.tool_results)
        verdict = "pass" if self.run.ok and tool_ok else "fail"
        headline = (f"Claude Code {self.cli_version} answered in {self.run.seconds:.1f} s, {self.run.turns} turns, "
                    f"tools used: {', '.join(used) or 'none'} — reply: {self.run.result[:80]!r}")
        if verdict == "fail":
            headline += f" (exit {self.run.exit_code}; stderr: {self.run.stderr_tail[-300:]!r})"
        if self.bridge:
            headline += f" — through the LiteLLM bridge at {self.bridge['base_url']}"
        return verdict, headline, results

    def env_table(self):
        from .tables import WholeTable
        # only secrets are hidden: CLAUDE_CODE_MAX_CONTEXT_TOKENS is a number an owner wants to see
        return WholeTable([{"variable": k, "value": "***" if records.is_secret(k) else v}
                             for k, v in self.env.items()])

    def transcript(self):
        from .tables import WholeTable
        rows = [{"step": "tool_use", "detail": f"{t['name']}({json.dumps(t['input'])})"} for t in self.run.tool_uses]
        rows += [{"step": "tool_result" + (" (error)" if r["is_error"] else ""), "detail": r["content"][:200]}
                 for r in self.run.tool_results]
        rows.append({"step": "final reply", "detail": self.run.result})
        return WholeTable(rows)


def run(scope: str = "auto", prompt: str = "", run_cli: bool = True, claude_bin: str = "",
        timeout: float = 600.0, engine: str = "", project_dir: str = "") -> Wiring:
    """Runbook 07: write the settings, then ask the real CLI to do a tool-use turn."""
    from .errors import ParameterError, check_choice
    from .serve import chosen_engine, connection

    engine = chosen_engine(engine, "07-wire-claude")
    check_choice("scope", scope, SCOPES)
    if scope == "project":
        project_root(project_dir)             # before anything is started or written
    elif project_dir:
        scope = "project" if scope == "auto" else scope
        if scope != "project":
            raise ParameterError("project_dir", project_dir, f"empty with scope {scope} (a project directory goes "
                                                             "with scope project)")
        project_root(project_dir)
    base_url, key, launch = connection()
    if run_cli:
        check_context(launch)
    if scope == "auto":    # on a GB10 the least surprising: no file changed, `sparkkit claude` for a local session
        scope = "sandbox" if records.load_state().get("host", {}).get("target") != "gb10" else "launcher"
    bridged = None
    if not has_messages(base_url, key):
        bridged = bridge_for(base_url, launch["alias"], key)
        base_url, key = bridged["base_url"], None          # on loopback the bridge takes LOCAL_TOKEN
    env = settings_env(base_url, launch["alias"], window(launch), key)
    written = None if scope == "launcher" else write_settings(settings_path(scope, project_dir), env)
    probe = records.probe_file()
    prompt = prompt or f"Use the Read tool to read {probe} and tell me in one sentence what it says."
    notes = _engine_notes(engine)
    if bridged:
        notes.insert(0, f"the engine has no /v1/messages: Claude Code goes through the LiteLLM bridge at "
                        f"{bridged['base_url']} (pid {bridged['pid']}; `sparkkit bridge stop` stops it)")
    said = FOR_WHOM[scope].format(path=written.path if written else "", project=project_dir)
    if not run_cli:
        return Wiring(written, env, None, None, None, prompt, bridged, notes, scope, said)
    cli = ensure_cli(claude_bin)
    home = sandbox_home() if scope in ("sandbox", "launcher") else Path.home()
    if scope == "project":    # a session started in the project, as the owner's would be; the probe read from outside
        result = ask(cli, prompt, home, project_root(project_dir), timeout, add_dirs=(probe.parent,), progress=print)
    else:                     # launcher: as `sparkkit claude` runs it, in sparkkit's sandbox home (no owner file)
        result = ask(cli, prompt, home, probe.parent, timeout, progress=print,
                     launcher_env=env if scope == "launcher" else None)
    return Wiring(written, env, cli, cli_version(cli), result, prompt, bridged, notes, scope, said)


def has_messages(base_url: str, key: str | None) -> bool:
    """Does the server answer Claude Code's API? 06's finding for this server when it has one, else asked now."""
    found = records.load_state().get("verify") or {}
    if found.get("base_url", "").rstrip("/") == base_url.rstrip("/") and "messages" in found:
        return bool(found["messages"])
    from .verify import Absent, anthropic_messages, client, served_model
    with client(base_url, key, timeout=120.0) as c:
        try:
            anthropic_messages(c, served_model(c))
        except Absent:
            return False
        except Exception:          # present but failing: 06 says why; 07's CLI turn will show it too
            return True
    return True


def bridge_for(base_url: str, served: str, key: str | None) -> dict[str, Any]:
    """The LiteLLM bridge in front of an engine without /v1/messages; 07 refuses, saying why, if it cannot run."""
    from . import bridge
    engine_key_file = None
    if key:                               # the engine's own key, for the bridge to send it (0600, never argv)
        engine_key_file = records.home() / "bridge" / "engine-key"
        engine_key_file.parent.mkdir(parents=True, exist_ok=True)
        records.write_atomic(engine_key_file, key.encode(), mode=0o600)
    try:
        return bridge.start(base_url, served, engine_key_file=str(engine_key_file) if engine_key_file else None)
    except SparkkitError as e:
        raise SparkkitError(f"07 will not wire Claude Code to {base_url}: it has no /v1/messages (Claude Code's API) "
                            f"and the LiteLLM bridge could not start — {str(e).splitlines()[0]}") from None


def _engine_notes(engine: str) -> list[str]:
    """What else the engine offers the owner for Claude Code."""
    state = records.load_state().get("engine") or {}
    if engine == "ollama" and state.get("launch_claude"):
        return ["this Ollama also has `ollama launch claude`: the same wiring for one process, no files "
                "(sparkkit's own is `sparkkit claude`)"]
    return []


def window(launch: dict[str, Any]) -> int:
    """The tokens one conversation can use: with one KV pool for all slots (--kv-unified) each slot may grow to
    the whole context (idle slots are cleared when the pool runs short); without, each slot has its share."""
    context = int(launch.get("context") or 0)
    slots = max(int(launch.get("slots") or 1), 1)
    return context if launch.get("kv_unified", True) else context // slots


def first_request_tokens(launch: dict[str, Any]) -> int:
    """Claude Code's first request in the served model's tokens: a model sparkkit generated (03's state says so for
    this very file) has its own vocabulary; anything else is gpt-oss's tokenizer."""
    placed = records.load_state().get("model") or {}
    generated = str(placed.get("source", "")).startswith("generated") and placed.get("path") == launch.get("model")
    return STANDIN_FIRST_REQUEST_TOKENS if generated else FIRST_REQUEST_TOKENS


def check_context(launch: dict[str, Any]) -> None:
    """Refuse, in one sentence, a server whose context per conversation cannot hold Claude Code's first request."""
    first = first_request_tokens(launch)
    need = first + CONTEXT_HEADROOM
    slots = max(launch.get("slots", 1), 1)
    if "context" in launch and window(launch) < need:
        enough = 1 << (need - 1).bit_length()
        raise SparkkitError(f"the server's context is {launch['context']} tokens"
                            + (f" split over {slots} slots" if slots > 1 else "")
                            + f", but Claude Code {PINNED_CLI}'s first request alone is {first:,} "
                            f"tokens: re-run 02-plan with -p context {enough} or more (or -p context 0 for the "
                            "largest that fits), then 05-serve and 07")


def launch(args: list[str], cli: str = "") -> int:
    """`sparkkit claude [args…]`: run the Claude Code CLI against the server 05 started, for this process
    only. The settings go in through the CLI's own `--settings` (a 0600 file, removed afterwards) and the
    process environment; no settings file of the owner's is read for them or written."""
    from .serve import connection
    base_url, key, launch_ = connection()
    if not has_messages(base_url, key):          # an engine without Claude Code's API: through the bridge
        base_url, key = bridge_for(base_url, launch_["alias"], key)["base_url"], None
    check_context(launch_)
    env_block = settings_env(base_url, launch_["alias"], window(launch_), key)
    exe = ensure_cli(cli)
    with launcher_settings(env_block) as flag:
        return subprocess.run([str(exe), "--settings", str(flag), *args], env={**os.environ, **env_block}).returncode
