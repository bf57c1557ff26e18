"""Shared helpers for the replay tools (stdlib only): recordings, the state dir, locking."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import time

HERE = pathlib.Path(__file__).resolve().parent
RECORDINGS = HERE / "recordings"


def recording(engine: str) -> dict:
    return json.loads((RECORDINGS / f"{engine}.json").read_text())


def state_dir(explicit: str | None = None, required: bool = True) -> pathlib.Path | None:
    d = explicit or os.environ.get("SPARKKIT_REPLAY_STATE")
    if not d:
        if required:
            raise SystemExit("replay: SPARKKIT_REPLAY_STATE is not set (one state dir per test)")
        return None
    p = pathlib.Path(d)
    p.mkdir(parents=True, exist_ok=True)
    return p


def fault() -> str:
    return os.environ.get("SPARKKIT_REPLAY_FAULT", "")


@contextlib.contextmanager
def locked_json(path: pathlib.Path, default):
    """Read-modify-write a JSON file under an exclusive lock; yields the object, writes it back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a+") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text()) if path.exists() else default
        except ValueError:
            data = default
        yield data
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)


def read_json(path: pathlib.Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % int((t % 1) * 1e9)


def human_bytes(n: int) -> str:
    """Ollama's format.HumanBytes (decimal units)."""
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.0f} {unit}" if v >= 10 else f"{v:.1f} {unit}"
    return f"{n} B"
