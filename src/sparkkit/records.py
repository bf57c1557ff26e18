"""Where sparkkit keeps things, and the records every runbook leaves.

Layout (all under ``SPARKKIT_HOME``, default ``~/.sparkkit``):

- ``state.json`` — the small hand-off file between runbooks: what 01 found, what 02 planned,
  where 03 put the model, which runtime 04 made ready, which server 05 started. Each runbook
  reads what it needs and writes its own section, so any runbook also runs alone.
  Written with mode 0600 (it may hold the server's API key); never printed whole.
- ``runs/<run-id>/`` (or ``SPARKKIT_RUNS``) — one directory per run: each executed notebook and,
  next to it, ``NN-name.json``, its machine-readable record (schema ``sparkkit.record/1``).

A record is ``{"schema", "results_schema", "step", "verdict": pass|warn|fail, "headline", "finished_at",
"results"}``; `results` is typed per step (``sparkkit.results``, the JSON Schema in
``sparkkit/data/schema/results-1.json``) and checked as the record is written.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SparkkitError

RECORD_SCHEMA = "sparkkit.record/1"
STATE_SCHEMA = "sparkkit.state/1"
VERDICTS = ("pass", "warn", "fail")

# Keys whose values never reach a record, a table or a log line.
# Whole-key endings only: "HF_TOKEN", "api_key", "DGX_SERIAL_NUMBER" — not "prompt tokens", and not a rate
# "…_per_token" (02's record lost the architecture's active_bytes_per_token to "***").
_SECRET_KEY = re.compile(r"(^|(?<![_\-\s]per)(?<!^per)[_\-\s])"
                         r"(token|auth_token|api[_\-]?key|secret|password|serial(_number)?)$", re.I)


class StepFailed(SparkkitError):
    """A runbook's verdict was `fail`; its record was written before this was raised."""


class RecordError(SparkkitError):
    """A step's results do not follow the committed results schema (a sparkkit bug): nothing was written under
    the step's name; the results are kept beside it as `<step>.invalid.json`."""


def home() -> Path:
    return Path(os.environ.get("SPARKKIT_HOME") or Path.home() / ".sparkkit").expanduser()


def runs_root() -> Path:
    return Path(os.environ.get("SPARKKIT_RUNS") or home() / "runs").expanduser()


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_secret(key: str) -> bool:
    """A key whose value is a secret (…_TOKEN, …_API_KEY, secret, password, serial): what `redact` hides."""
    return bool(_SECRET_KEY.search(str(key)))


def redact(obj: Any) -> Any:
    """A copy of `obj` with every secret-looking key's value replaced by '***'."""
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def finite(obj: Any) -> Any:
    """A copy of `obj` with every NaN or infinity None: JSON has no NaN (Python writes it, and other JSON
    readers refuse the file), and a missing figure is "none", not a number."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one. The temporary
    file has a name of its own (two writers never share one) and the final mode from its creation, and
    it is removed when anything fails (the state file, records, settings files, sidecars all use this)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_json(path: Path, data: Any, mode: int = 0o644) -> None:
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"), mode)


@contextlib.contextmanager
def file_lock(path: Path):
    """One holder at a time across processes (flock on `path`, made 0600 if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing releases the lock


def _state_lock():
    """One writer of the state file at a time, across processes (03 and 04 run side by side in `sparkkit run`)."""
    return file_lock(state_path().with_name("state.json.lock"))


# ----------------------------------------------------------------------------- state file
def state_path() -> Path:
    return home() / "state.json"


def load_state() -> dict[str, Any]:
    p = state_path()
    if not p.exists():
        return {"schema": STATE_SCHEMA}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SparkkitError(f"{p} is not readable JSON ({e}); move it aside and re-run 01-preflight") from e
    return data if isinstance(data, dict) else {"schema": STATE_SCHEMA}


def update_state(section: str, value: Any) -> dict[str, Any]:
    """Replace one section of the state file (None removes it) and return the new state.

    Read, change and write happen under the state lock, so two steps writing their own sections at
    once both land (without it the later write dropped the earlier one's section)."""
    with _state_lock():
        state = load_state()
        if value is None:
            state.pop(section, None)
        else:
            state[section] = value
        state["schema"] = STATE_SCHEMA
        _write_json(state_path(), state, mode=0o600)
    return state


# Which runbook writes each state section: a step that needs one names the step to run.
WRITTEN_BY = {"host": "01-preflight", "choice": "01-preflight", "plan": "02-plan", "model": "03-place-model",
              "engine": "04-engine", "server": "05-serve"}
# The typed sections: the keys each one must hold, with their types (a hand-edited or older state file
# is named, never a KeyError or a TypeError deep in a step).
SECTION_TYPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "host": {"target": str, "usable_bytes": int},
    "choice": {"model": str, "engine": str},
    "plan": {"engine": str, "context": int, "slots": int, "kv_type": str, "ubatch": int, "verdict": str,
             "serving": (dict, type(None))},
    "model": {"model": str, "path": str, "alias": str},
    "engine": {"engine": str, "runtime": dict},
    "server": {"base_url": str, "launch": dict},
}
# What each runbook needs from earlier steps (ploomber's `upstream`): it says which step to run when a
# section is missing. Sections a step can make itself (02's plan and 04's llama.cpp, from 05) are not here.
UPSTREAM: dict[str, tuple[str, ...]] = {"01-preflight": (), "02-plan": (), "03-place-model": (), "04-engine": (),
                                        "05-serve": ("model",), "06-verify": (), "07-wire-claude": ("server",)}


def section(state: dict[str, Any], name: str, *keys: str) -> dict[str, Any]:
    """`state[name]` holding `keys`, or one sentence naming what is missing and the step that writes it
    (never a bare KeyError from a partial or hand-edited state file)."""
    from .errors import StateError
    value = state.get(name)
    step = WRITTEN_BY.get(name, "the earlier runbooks")
    if not isinstance(value, dict):
        raise StateError(f"state.json has no `{name}` section yet: run {step} first")
    missing = [k for k in keys if k not in value]
    if missing:
        raise StateError(f"state.json's `{name}` section lacks {', '.join(f'`{k}`' for k in missing)} "
                         f"(written by an older or interrupted {step}): re-run {step}")
    types = SECTION_TYPES.get(name, {})
    wrong = [k for k in keys if k in types and not isinstance(value[k], types[k])
             or (k in types and isinstance(value[k], bool) and types[k] is int)]
    if wrong:
        raise StateError(f"state.json's `{name}` section has {', '.join(f'`{k}`' for k in wrong)} of the wrong type "
                         f"(edited by hand?): re-run {step}")
    return value


def needs(state: dict[str, Any], step: str, *names: str) -> dict[str, dict[str, Any]]:
    """The sections `step` reads, each whole and typed, or one sentence naming the step that writes it."""
    from .errors import StateError
    out = {}
    for name in names or UPSTREAM.get(step, ()):
        if not isinstance(state.get(name), dict):
            raise StateError(f"{step} needs {WRITTEN_BY.get(name, 'an earlier step')}'s `{name}`, which is not "
                             f"there yet: run {WRITTEN_BY.get(name, 'the earlier runbooks')} first")
        out[name] = section(state, name, *SECTION_TYPES.get(name, {}))
    return out


def upstream(step: str) -> dict[str, dict[str, Any]]:
    """A runbook's first call: the steps it declares it needs (UPSTREAM) have run, or it stops naming them."""
    return needs(load_state(), step)


# ----------------------------------------------------------------------------- run records
def run_dir(requested: str = "") -> Path:
    """The run directory a runbook writes into.

    `requested` (the runbooks' `run_dir` parameter) wins; else the current run named in the
    state file; else a new ``runs/<UTC timestamp>``. The choice is remembered as the current run.
    """
    if requested:
        path = Path(requested).expanduser()
    else:
        current = load_state().get("run_dir")
        path = Path(current) if current else runs_root() / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    if load_state().get("run_dir") != str(path):
        update_state("run_dir", str(path))
    return path


@dataclass
class Verdict:
    """What a runbook concluded; renders as one line in the notebook, lives on as JSON."""

    step: str
    verdict: str
    headline: str
    record_path: Path
    results: dict[str, Any] = field(default_factory=dict)

    def _repr_markdown_(self) -> str:
        icon = {"pass": "✅", "warn": "⚠️", "fail": "❌"}[self.verdict]
        return f"### {icon} {self.step}: {self.verdict.upper()} — {self.headline}\n\nRecord: `{self.record_path}`"

    def __repr__(self) -> str:
        return f"{self.step}: {self.verdict.upper()} — {self.headline} (record: {self.record_path})"


def finish(step: str, verdict: str, headline: str, results: dict[str, Any], run_directory: Path) -> Verdict:
    """Write ``<run_dir>/<step>.json`` and return the verdict; raise StepFailed on `fail`.

    Secrets are redacted before anything is written.
    """
    from .results import RESULTS_SCHEMA, problems
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    record = {"schema": RECORD_SCHEMA, "results_schema": RESULTS_SCHEMA, "step": step, "verdict": verdict,
              "headline": headline, "finished_at": now(), "results": finite(redact(results))}
    record = json.loads(json.dumps(record, default=str))        # what a reader of the file gets
    wrong = problems(record)
    path = Path(run_directory) / f"{step}.json"
    if wrong:   # a sparkkit bug: no record under the step's name that breaks its schema; the results kept
        keep = path.with_name(f"{step}.invalid.json")
        _write_json(keep, record)
        raise RecordError(f"{step}'s results do not follow {RESULTS_SCHEMA} at {wrong[0]}"
                          + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")
                          + f" — a sparkkit bug (please report it); the results are kept in {keep}")
    if path.exists():   # a re-run of this step in the same run: keep the earlier record beside it
        stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        keep, n = path.with_name(f"{step}.{stamp}.json"), 1
        while keep.exists():
            keep, n = path.with_name(f"{step}.{stamp}-{n}.json"), n + 1
        os.replace(path, keep)
    _write_json(path, record)
    v = Verdict(step, verdict, headline, path, results)
    if verdict == "fail":
        raise StepFailed(repr(v))
    return v


def read_record(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("schema") != RECORD_SCHEMA:
        raise SparkkitError(f"{path}: not a sparkkit record (schema {data.get('schema')!r})")
    return data


PROBE_TEXT = "sparkkit probe file: if you can read this, the tool round trip works.\n"


def probe_file() -> Path:
    """A small file agents are asked to Read in 06 and 07 (created on first use)."""
    path = home() / "workspace" / "hello.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(PROBE_TEXT, encoding="utf-8")
    return path
