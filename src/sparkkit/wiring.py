"""Where Claude Code is wired to the local server, and how to undo it exactly.

Every settings write 07 makes is remembered (`$SPARKKIT_HOME/claude-wiring/<id>.json`, 0600: the file as
it was may hold a key): whether the file existed, its bytes and mode before sparkkit first touched it,
the env keys sparkkit added and the old values of those it changed, and a hash of what sparkkit wrote.
`sparkkit unwire [scope]` then restores exactly what was there — byte-identical, mode included, or no
file when there was none — and, where the owner changed the file by hand since, takes out only
sparkkit's keys. `sparkkit wired` lists where Claude Code points now.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from . import records
from .errors import SparkkitError

SCOPES = ("user", "project", "sandbox")


def _records_dir() -> Path:
    return records.home() / "claude-wiring"


def _record_path(real: Path) -> Path:
    return _records_dir() / (hashlib.sha256(str(real).encode()).hexdigest()[:16] + ".json")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remember(real: Path, before: bytes | None, mode_before: int | None, old_env: dict[str, Any],
             env: dict[str, str]) -> None:
    """Called by 07's settings write once it has written `real`: keep what was there before sparkkit's
    first write (a later write keeps that first 'before')."""
    path = _record_path(real)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        rec = None
    if not isinstance(rec, dict) or rec.get("path") != str(real):
        rec = {"path": str(real), "existed": before is not None,
               "before_b64": base64.b64encode(before).decode() if before is not None else None,
               "mode": mode_before, "added": [], "changed": {}}
        for k in env:
            if k in old_env:
                rec["changed"][k] = old_env[k]
            else:
                rec["added"].append(k)
    else:
        for k in env:   # keys this write adds that neither the original file nor an earlier write had
            if k not in rec["added"] and k not in rec["changed"]:
                rec["added"].append(k)
    rec["after_sha256"] = _sha(real.read_bytes())
    records._write_json(path, rec, mode=0o600)


def settings_for(scope: str, project_dir: str = "") -> Path:
    from .claude import settings_path
    from .errors import check_choice
    check_choice("scope", scope, SCOPES)
    return settings_path(scope, project_dir)


def wired_projects() -> list[Path]:
    """The project settings files sparkkit wired (from its records), whether or not they still exist."""
    found = []
    for rec in sorted(_records_dir().glob("*.json")):
        try:
            path = json.loads(rec.read_text(encoding="utf-8")).get("path", "")
        except (OSError, ValueError):
            continue
        if path.endswith(os.path.join(".claude", "settings.local.json")):
            found.append(Path(path))
    return found


def unwire(scope: str = "user", project_dir: str = "") -> str:
    """Undo sparkkit's wiring of Claude Code at `scope` (project: of `project_dir`); one sentence saying
    what was done."""
    link = settings_for(scope, project_dir)
    real = Path(os.path.realpath(link))
    path = _record_path(real)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"sparkkit has not wired Claude Code at scope {scope} ({link}): nothing to undo"
    before = base64.b64decode(rec["before_b64"]) if rec.get("before_b64") is not None else None
    if not real.exists():
        if before is not None:
            records.write_atomic(real, before, rec.get("mode") or 0o600)
            msg = f"{link} had been removed since; restored it as it was before sparkkit wired it"
        else:
            msg = f"{link} is already gone, as it was before sparkkit wired it"
    elif _sha(real.read_bytes()) == rec.get("after_sha256"):
        if before is None:
            real.unlink()
            msg = f"removed {link}: there was none before sparkkit wired Claude Code"
        else:
            records.write_atomic(real, before, rec.get("mode") or stat.S_IMODE(real.stat().st_mode))
            msg = f"restored {link} byte for byte as it was before sparkkit wired Claude Code"
    else:   # changed by hand since: take out sparkkit's keys only
        try:
            data = json.loads(real.read_text(encoding="utf-8"))
            env = data.get("env") if isinstance(data, dict) else None
            if not isinstance(env, dict):
                raise ValueError("no env object")
        except (OSError, ValueError) as e:
            raise SparkkitError(f"{link} was changed since sparkkit wired it and is not a settings object sparkkit "
                                f"can edit ({e}); nothing was changed — remove the ANTHROPIC_* keys by hand") from None
        for k in rec.get("added", []):
            env.pop(k, None)
        env.update(rec.get("changed", {}))
        records.write_atomic(real, (json.dumps(data, indent=2) + "\n").encode(), stat.S_IMODE(real.stat().st_mode))
        msg = (f"{link} was changed by hand since sparkkit wired it: took out the {len(rec.get('added', []))} keys "
               f"sparkkit added and gave back the old values of {len(rec.get('changed', {}))}; the rest is kept")
    path.unlink(missing_ok=True)
    return msg


CLOUD = "cloud"


def wired_places() -> list[tuple[str, str, Path]]:
    """(scope, project_dir, settings file) of each place sparkkit has wired and not undone."""
    found = [(scope, "", settings_for(scope)) for scope in ("user", "sandbox")]
    found += [("project", str(p.parent.parent), p) for p in wired_projects()]
    return [(s, d, p) for s, d, p in found if _record_path(Path(os.path.realpath(p))).exists()]


def back_to_cloud(scope: str = "", project_dir: str = "") -> list[str]:
    """`sparkkit use cloud`: undo sparkkit's wiring at `scope` (project: of `project_dir`), or at every place it
    wired when `scope` is empty; one sentence per place. The `sparkkit claude` launcher writes no file, so it
    has nothing to undo."""
    if scope == "launcher":
        return ["the launcher (`sparkkit claude`) writes no settings file: nothing to undo"]
    if scope:
        return [unwire(scope, project_dir)]
    said = []
    for s, d, link in wired_places():
        try:
            said.append(unwire(s, d))
        except (SparkkitError, ValueError) as e:
            said.append(f"{link}: {e}")
    return said or ["sparkkit has wired Claude Code nowhere: it talks to Anthropic's cloud already (or to what "
                    "its settings name by hand — `sparkkit wired` shows them)"]


def switch_plan(target: str, scope: str = "", project_dir: str = "") -> tuple[tuple[str, ...], dict[str, Any], str]:
    """What `sparkkit use MODEL` runs: (runbook stems, or () for all; the choices; why). When the server
    sparkkit runs already serves MODEL, only 07 (wire it, check with the real CLI); else the whole chain for
    MODEL — 05 replaces the running server only once the new one answers. The scope is the one given, else the
    one place sparkkit wired now, else 07's default."""
    from .choices import check
    from .model import MODEL_CHOICES
    from .errors import ParameterError
    from .engines import spec as engine_spec
    from .serve import healthy
    models = [m for m in MODEL_CHOICES if m != "auto"]
    if target not in models:
        raise ParameterError("MODEL", target, f"{CLOUD} or one of {', '.join(models)}")
    choices: dict[str, Any] = {"model": target}
    if not scope:
        places = wired_places()
        if len(places) == 1:
            scope, project_dir = places[0][0], places[0][1]
    if scope:
        choices["scope"] = scope
    if project_dir:
        choices["project_dir"] = project_dir
    check(choices)
    state = records.load_state()
    server, placed = state.get("server") or {}, (state.get("model") or {}).get("model")
    alive = bool(server.get("base_url")) and healthy(server["base_url"],
                                                     engine_spec(server.get("engine") or "llamacpp").health)
    if placed == target and alive:
        return ("07-wire-claude",), {k: v for k, v in choices.items() if k != "model"}, \
            f"{target} is served already at {server['base_url']}: wiring Claude Code to it (07)"
    why = f"sparkkit's server serves {placed}" if alive else "no sparkkit server answers"
    return (), choices, f"{why}: planning, placing, serving, verifying {target} and wiring Claude Code to it (01–07)"


def wired() -> list[dict[str, Any]]:
    """Where Claude Code points at each scope: the URL, the model, whether sparkkit wired it and whether
    the server answers."""
    from .serve import answers
    rows = []
    places = [(scope, settings_for(scope)) for scope in SCOPES if scope != "project"]
    places[1:1] = [("project " + str(p.parent.parent), p) for p in wired_projects()]
    for scope, link in places:
        env: dict[str, Any] = {}
        try:
            data = json.loads(link.read_text(encoding="utf-8"))
            env = data.get("env", {}) if isinstance(data, dict) and isinstance(data.get("env"), dict) else {}
        except (OSError, ValueError):
            pass
        url = env.get("ANTHROPIC_BASE_URL", "")
        answering = ("yes" if answers(url, timeout=2.0) else "no") if url else ""
        rows.append({"scope": scope, "settings": str(link),
                     "points at": url or "Anthropic's cloud (no ANTHROPIC_BASE_URL)",
                     "model": env.get("ANTHROPIC_MODEL", ""), "wired by sparkkit":
                         "yes" if _record_path(Path(os.path.realpath(link))).exists() else "no",
                     "server answers": answering})
    return rows
