"""`make run`: execute the seven runbooks with papermill, in order, and summarise them.

Each executed notebook lands in the run directory next to the JSON record it wrote. What a
runbook prints (download and build progress, CLI turns) streams to the terminal as it happens,
each line prefixed with its step. 03 (placing the model: a 63 GB download on a GB10) and 04
(the engine: a 5–10 minute CUDA build) need nothing of each other, so they run side by side.
The owner's choices (`sparkkit.choices`) go to every runbook that takes them. The summary prints
step, verdict, key figure and duration, plus how much of the wall time went to starting kernels
(the part no runbook code can speed up).
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from traitlets.config import Config

from . import records

EMBEDDED_TARGET_S = 60     # make run on the embedded default, 2 cores, install excluded (issue 10's goal)
REPO_RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def _ipc_config(sockets: Path) -> Config:
    """Kernels talk over Unix sockets, not TCP ports on localhost (ipykernel warns about unencrypted TCP),
    each kernel in a folder of its own: with ipc, "ip" is the sockets' path prefix, and two kernels started
    side by side on the default prefix (kernel-ipc-N in the working directory) took each other's messages
    ("Invalid Signature")."""
    return Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel")}})


def runbooks(directory: Path | None = None) -> list[Path]:
    d = directory or (REPO_RUNBOOKS if REPO_RUNBOOKS.is_dir() else Path.cwd() / "runbooks")
    found = sorted(d.glob("[0-9][0-9]-*.ipynb"))
    if not found:
        raise records.SparkkitError(f"no runbooks found in {d}")
    return found


def _cell_seconds(nb) -> float:
    return sum(float((c.get("metadata", {}).get("papermill") or {}).get("duration") or 0) for c in nb.cells)


class _Prefixed:
    """A file-like sink for papermill's stdout_file/stderr_file: whole lines, each tagged with its step."""

    _lock = threading.Lock()

    def __init__(self, step: str, stream=None):
        self.tag, self.stream, self.pending = f"  {step[:2]} │ ", stream or sys.stdout, ""

    def write(self, text: str) -> None:
        # carriage returns (progress bars redrawing a line) become new lines: a log keeps every state
        self.pending += text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self.pending = self.pending.split("\n")
        if lines:
            with self._lock:
                self.stream.write("".join(f"{self.tag}{ln}\n" for ln in lines if ln.strip()))
                self.stream.flush()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.pending.strip():
            self.write("\n")


# Steps that need nothing of each other and run side by side: 03 downloads, 04 builds.
SIDE_BY_SIDE = ("03-place-model", "04-engine")


def _groups(paths: list[Path], parallel: bool) -> list[list[Path]]:
    groups: list[list[Path]] = []
    for p in paths:
        if parallel and groups and p.stem in SIDE_BY_SIDE and all(q.stem in SIDE_BY_SIDE for q in groups[-1]):
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


# What `sparkkit run --log-level` (or $SPARKKIT_LOG_LEVEL) shows while the runbooks run: quiet, the summary
# only; info, each step's live lines too (downloads, builds, benchmarks, Claude Code's turns); debug, also
# papermill's own log, cell by cell (what `papermill --log-output` shows for one runbook).
LOG_LEVELS = ("quiet", "info", "debug")


class _Quiet:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _execute(nb_path: Path, out: Path, parameters: dict[str, Any],
             stream=None, log_level: str = "info") -> tuple[float, float, str | None]:
    """Run one runbook; (its wall seconds, seconds spent inside its cells, failure or None)."""
    import tempfile

    import papermill as pm
    sink, t0 = _Prefixed(nb_path.stem, _Quiet() if log_level == "quiet" else stream), time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix=f"sparkkit-{nb_path.stem[:2]}-") as sockets:
            nb = pm.execute_notebook(str(nb_path), str(out), parameters=parameters, kernel_name="python3",
                                     progress_bar=False, cwd=str(nb_path.parent), config=_ipc_config(Path(sockets)),
                                     stdout_file=sink, stderr_file=sink, log_output=log_level == "debug")
        return time.monotonic() - t0, _cell_seconds(nb), None
    except pm.PapermillExecutionError as e:
        return time.monotonic() - t0, float("nan"), f"{nb_path.stem}: {e.ename}: {e.evalue}"
    finally:
        sink.close()


def run_all(run_dir: str = "", keep_serving: str = "auto", directory: Path | None = None,
            choices: dict[str, Any] | None = None, parallel: bool = True, only: tuple[str, ...] = (),
            log_level: str = "") -> int:
    """Run every runbook in `directory` in order (03 beside 04), or the `only` ones (stems), handing each the
    owner's `choices` it takes; print the summary; 0 when every step passed or warned, else 1."""
    from .choices import per_runbook
    from .errors import check_choice
    import logging
    log_level = log_level or os.environ.get("SPARKKIT_LOG_LEVEL", "") or "info"
    check_choice("log_level", log_level, LOG_LEVELS)
    logger, handler, level = logging.getLogger("papermill"), None, logging.getLogger("papermill").level
    if log_level == "debug":              # papermill's log: which cell runs, and each cell's output as it comes
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("  papermill │ %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        return _run_all(run_dir, keep_serving, directory, given=per_runbook(choices or {}), parallel=parallel,
                        only=only, log_level=log_level)
    finally:
        if handler:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _run_all(run_dir: str, keep_serving: str, directory: Path | None, given: dict[str, dict[str, Any]],
             parallel: bool, only: tuple[str, ...], log_level: str) -> int:
    target = Path(run_dir) if run_dir else records.runs_root() / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = records.run_dir(str(target))
    rows, failed = [], None
    t_all = time.monotonic()
    chosen = [p for p in runbooks(directory) if not only or p.stem in only]
    for group in _groups(chosen, parallel):
        print(("▶ " + " ∥ ".join(p.stem for p in group) + " …" + (" (side by side)" if len(group) > 1 else "")),
              flush=True)
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            futures = [pool.submit(_execute, p, target / p.name, {"run_dir": str(target), **given.get(p.stem, {})},
                                   None, log_level) for p in group]
            results = [f.result() for f in futures]
        for nb_path, (wall, cells, error) in zip(group, results):
            step = nb_path.stem
            rec_path = target / f"{step}.json"
            rec = records.read_record(rec_path) if rec_path.exists() else {}
            rows.append({"step": step, "verdict": rec.get("verdict", "fail" if error else "?"),
                         "key figure": rec.get("headline", error or ""), "seconds": round(wall, 1),
                         # side by side, the kernels start together: their overhead is counted once
                         "kernel+overhead s": (round(wall - cells, 1) if cells == cells and nb_path == group[0]
                                               else None)})
            failed = failed or error
        if failed:
            break
    total = time.monotonic() - t_all
    from .tables import WholeTable
    table = WholeTable(rows)                  # whole cells, headlines read from the left
    print("\n" + repr(table))
    overhead = table["kernel+overhead s"].dropna().sum()
    print(f"\ntotal {total:.1f} s, of which kernel start-up and papermill overhead {overhead:.1f} s "
          f"({100 * overhead / total:.0f} %)")
    state = records.load_state()
    if state.get("host", {}).get("target") == "embedded":
        print(f"embedded default: {total:.1f} s / {EMBEDDED_TARGET_S} s target = {total / EMBEDDED_TARGET_S:.2f}× "
              f"(below 1 meets it; {os.cpu_count()} cores)")
    print(f"records: {target}")
    if keep_serving == "no" or (keep_serving == "auto" and state.get("host", {}).get("target") != "gb10"):
        from .serve import stop
        print(stop()["message"])
    elif state.get("server"):
        print(f"server still running at {state['server']['base_url']}; stop it with: sparkkit stop")
    if failed:
        print(f"\nFAILED at {failed}\nsee the executed notebook: {target / (failed.split(':')[0] + '.ipynb')}")
        return 1
    return 0
