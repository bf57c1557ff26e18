"""The runs sparkkit recorded, listed and compared: `sparkkit runs`, `sparkkit runs A B`.

Each run is a directory under `records.runs_root()` holding one record per step (`NN-step.json`, typed by
`sparkkit.results`). `table()` lists the runs — time, host, model, engine, each step's verdict, the figures
people compare — and `compare(a, b)` puts two side by side, figure by figure; both are WholeTables, so a
notebook shows them as they are and the terminal prints the same text.

A run whose record is damaged (not JSON, not a sparkkit record) is left out of the list and named in one
sentence; nothing is ever written here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import records
from .errors import ParameterError, SparkkitError
from .results import STEPS
from .tables import WholeTable

_RECORD = re.compile(r"^(\d\d-[a-z0-9-]+)\.json$")    # NN-step.json; not NN-step.<time>.json (kept re-runs)
GIB = 2**30


@dataclass
class Run:
    id: str
    path: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)   # step -> record

    def results(self, step: str) -> dict[str, Any]:
        r = self.records.get(step, {}).get("results")
        return r if isinstance(r, dict) else {}

    @property
    def finished(self) -> str:
        times = [r.get("finished_at") for r in self.records.values() if isinstance(r.get("finished_at"), str)]
        return max(times) if times else ""


class DamagedRecord(SparkkitError):
    """A run's record cannot be read as a sparkkit record."""


def load(path: Path, run_id: str | None = None) -> Run:
    """The run in directory `path`; a damaged record is one sentence naming it."""
    run = Run(run_id or path.name, path)
    for f in sorted(path.iterdir()):
        m = _RECORD.match(f.name)
        if not m or not f.is_file():
            continue
        try:
            data = records.read_record(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, SparkkitError, AttributeError) as e:
            why = ("not readable JSON" if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)) else
                   "not a sparkkit record" if isinstance(e, (SparkkitError, AttributeError)) else f"unreadable ({e})")
            raise DamagedRecord(f"{f} is {why}: move it aside, or re-run {m.group(1)} into that run "
                                f"(-p run_dir {path})") from None
        if not isinstance(data.get("results", {}), dict):
            raise DamagedRecord(f"{f} is not a sparkkit record (its results are not an object): move it aside, "
                                f"or re-run {m.group(1)} into that run (-p run_dir {path})")
        run.records[data.get("step") or m.group(1)] = data
    return run


def scan(root: Path | None = None) -> tuple[list[Run], list[str]]:
    """Every run under `root` (default: records.runs_root()) with at least one record, oldest first, and
    one sentence for each run left out because a record of it is damaged."""
    root = Path(root) if root else records.runs_root()
    runs, skipped = [], []
    if not root.is_dir():
        return runs, skipped
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            run = load(d)
        except DamagedRecord as e:
            skipped.append(f"skipped run {d.name}: {e}")
            continue
        except OSError as e:
            skipped.append(f"skipped run {d.name}: the directory cannot be read ({e.strerror})")
            continue
        if run.records:
            runs.append(run)
    return runs, skipped


def find(run: str, root: Path | None = None) -> Run:
    """A run by its id (the directory name under the runs directory; a unique prefix will do) or by its
    directory's path; an unknown one is one sentence naming it."""
    root = Path(root) if root else records.runs_root()
    given = Path(run).expanduser()
    if run and ("/" in run or run.startswith((".", "~"))):           # a path: a run directory anywhere
        if not given.is_dir():
            raise ParameterError("run", run, "a run directory (one holding NN-step.json records), or a run id "
                                             "that `sparkkit runs` lists — this path is not a directory")
        return load(given.resolve(), run.rstrip("/"))
    ids = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    match = [i for i in ids if i == run] or [i for i in ids if run and i.startswith(run)]
    if len(match) == 1:
        return load(root / match[0])
    if len(match) > 1:
        raise ParameterError("run", run, f"one run: it matches {', '.join(match)} — give more of the id")
    where = (f"under {root}: {', '.join(ids[-3:])}{' (the latest three)' if len(ids) > 3 else ''}" if ids else
             f"none under {root} yet: `sparkkit run` makes one")
    raise ParameterError("run", run, f"a run id that `sparkkit runs` lists ({where}), or a run directory's path")


# ----------------------------------------------------------------------------- what people compare
def _num(v: Any, digits: int = 1) -> Any:
    return round(v, digits) if isinstance(v, float) else v


def _gib(v: Any) -> Any:
    return round(v / GIB, 2) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _host(run: Run) -> str:
    r = run.results("01-preflight")
    if not r:
        return ""
    what = r.get("box") or ("GB10" if r.get("is_gb10") else r.get("target") or "")
    source = r.get("source") or ""
    return what + (f" ({source})" if source and source != "this machine" else "")


def _runtime(rt: dict[str, Any]) -> str:
    """04's runtime in a few words: its kind and the last line of its version (llama-server prints several)."""
    version = str(rt.get("version") or "").strip().splitlines()
    return " ".join(x for x in (str(rt.get("kind") or ""), version[-1] if version else "") if x)


def _probes(r: dict[str, Any]) -> str:
    probes = [p for p in r.get("probes") or [] if isinstance(p, dict)]
    if not probes:
        return ""
    ok = sum(1 for p in probes if p.get("ok") and not p.get("absent"))
    return f"{ok}/{len(probes)}"


# (label, step, how to read it from that step's results) — the figures a comparison lines up
FIGURES: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("usable memory (GiB)", "01-preflight", lambda r: _gib(r.get("usable_bytes"))),
    ("context", "02-plan", lambda r: r.get("context")),
    ("slots", "02-plan", lambda r: r.get("slots")),
    ("KV type", "02-plan", lambda r: r.get("kv_type")),
    ("planned memory (GiB)", "02-plan", lambda r: _gib(r.get("total_bytes"))),
    ("largest context that fits", "02-plan", lambda r: r.get("largest_context")),
    ("model file", "03-place-model", lambda r: r.get("path")),
    ("model size (GiB)", "03-place-model", lambda r: _gib(r.get("size_bytes"))),
    ("engine runtime", "04-engine", lambda r: _runtime(r.get("runtime") or {})),
    ("load time (s)", "05-serve", lambda r: _num(r.get("load time (s)"), 2)),
    ("decode (tok/s)", "06-verify", lambda r: _num(r.get("decode_tps"))),
    ("decode as an agent (tok/s)", "06-verify", lambda r: _num(r.get("agent_decode_tps"))),
    ("prefill (tok/s)", "06-verify", lambda r: _num(r.get("prefill_tps"))),
    ("agent turn's TTFT (s)", "06-verify", lambda r: _num(r.get("ttft_s"), 3)),
    ("cold TTFT (s)", "06-verify", lambda r: _num(r.get("cold_ttft_s"), 3)),
    ("probes ok", "06-verify", _probes),
    ("Claude Code answered in (s)", "07-wire-claude", lambda r: _num((r.get("cli") or {}).get("seconds"))),
    ("Claude Code CLI", "07-wire-claude", lambda r: r.get("cli_version")),
]


def _figure(run: Run, step: str, read: Callable[[dict[str, Any]], Any]) -> Any:
    r = run.results(step)
    if not r:
        return None
    try:
        v = read(r)
    except (TypeError, AttributeError, ValueError):      # an older record's shape: shown empty, never a traceback
        return None
    return None if v == "" else v


def _about(run: Run) -> dict[str, Any]:
    pre, plan_, placed = run.results("01-preflight"), run.results("02-plan"), run.results("03-place-model")
    return {"run": run.id, "finished": run.finished.replace("T", " ").replace("+00:00", " UTC"),
            "host": _host(run), "model": pre.get("model") or plan_.get("model") or placed.get("model") or "",
            "engine": pre.get("engine") or plan_.get("engine") or ""}


def table(root: Path | None = None, skipped: list[str] | None = None) -> WholeTable:
    """One row per run, oldest first: time, host, model, engine, each step's verdict, the key figures.
    `skipped`, if given, receives one sentence for each run left out (a damaged record)."""
    runs, left_out = scan(root)
    if skipped is not None:
        skipped.extend(left_out)
    rows = []
    for run in runs:
        row = _about(run)
        for step in STEPS:
            row[step[:2]] = run.records.get(step, {}).get("verdict", "")
        for label in ("context", "load time (s)", "decode (tok/s)", "prefill (tok/s)", "agent turn's TTFT (s)"):
            _, step, read = next(f for f in FIGURES if f[0] == label)
            row[label] = _figure(run, step, read)
        rows.append(row)
    columns = ["run", "finished", "host", "model", "engine", *(s[:2] for s in STEPS), "context", "load time (s)",
               "decode (tok/s)", "prefill (tok/s)", "agent turn's TTFT (s)"]
    return WholeTable(rows, columns=columns)


def compare(a: str, b: str, root: Path | None = None, headlines: bool = True) -> WholeTable:
    """Two runs side by side: what they ran on, each step's verdict, the figures, each step's headline
    (`headlines`), and a mark where they differ."""
    ra, rb = find(a, root), find(b, root)
    rows = []

    def add(what: str, va: Any, vb: Any) -> None:
        rows.append({"": what, ra.id: va, rb.id if rb.id != ra.id else rb.id + " ": vb,
                     "differs": "≠" if va != vb else ""})

    about_a, about_b = _about(ra), _about(rb)
    for key in ("finished", "host", "model", "engine"):
        add(key, about_a[key], about_b[key])
    for step in STEPS:
        add(f"{step} verdict", ra.records.get(step, {}).get("verdict", ""), rb.records.get(step, {}).get("verdict", ""))
    for label, step, read in FIGURES:
        add(label, _figure(ra, step, read), _figure(rb, step, read))
    for step in STEPS if headlines else ():
        add(f"{step} headline", ra.records.get(step, {}).get("headline", ""),
            rb.records.get(step, {}).get("headline", ""))
    return WholeTable(rows)


def _headlines(ids: list[str], root: Path | None = None) -> str:
    """Each step's headline, run under run: sentences too long to sit side by side in a terminal."""
    picked = [find(i, root) for i in ids]
    lines = []
    for step in STEPS:
        said = [(r.id, r.records[step].get("headline", "")) for r in picked if step in r.records]
        if said:
            lines.append(step)
            lines += [f"  {rid}: {h}" if len(picked) > 1 else f"  {h}" for rid, h in said]
    return "\n".join(lines)


def main(ids: list[str], out=print, err=print) -> int:
    """`sparkkit runs [A [B]]`: the list, one run's figures (A), or A and B side by side."""
    if len(ids) > 2:
        raise ParameterError("runs", " ".join(ids), "none (list the runs), one run id, or two to compare")
    if ids:
        shown = compare(ids[0], ids[1] if len(ids) > 1 else ids[0], headlines=False)
        if len(ids) == 1:
            shown = WholeTable(shown.iloc[:, :2])
        out(shown.to_plain() + "\n\n" + _headlines(ids))
        return 0
    skipped: list[str] = []
    listed = table(skipped=skipped)
    if len(listed):
        out(listed.to_plain())
    else:
        out(f"no runs recorded under {records.runs_root()} yet: `sparkkit run` makes one")
    for line in skipped:
        err(line)
    return 0
