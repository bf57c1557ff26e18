"""`make run`: execute the seven runbooks with papermill, in order, and summarise them.

Each executed notebook lands in the run directory next to the JSON record it wrote. The
summary prints step, verdict, key figure and duration, plus how much of the wall time went to
starting kernels (the part no runbook code can speed up).
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pandas as pd
from traitlets.config import Config

from . import records

EMBEDDED_TARGET_S = 90     # issue: make run on the embedded default, 2 cores, install excluded
REPO_RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


# Kernels talk over Unix sockets, not TCP ports on localhost (ipykernel warns about unencrypted TCP).
_IPC = Config({"KernelManager": {"transport": "ipc"}})


def runbooks(directory: Path | None = None) -> list[Path]:
    d = directory or (REPO_RUNBOOKS if REPO_RUNBOOKS.is_dir() else Path.cwd() / "runbooks")
    found = sorted(d.glob("[0-9][0-9]-*.ipynb"))
    if not found:
        raise records.SparkkitError(f"no runbooks found in {d}")
    return found


def _cell_seconds(nb) -> float:
    return sum(float((c.get("metadata", {}).get("papermill") or {}).get("duration") or 0) for c in nb.cells)


def run_all(run_dir: str = "", keep_serving: str = "auto", directory: Path | None = None) -> int:
    import papermill as pm

    target = Path(run_dir) if run_dir else records.runs_root() / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = records.run_dir(str(target))
    rows, failed = [], None
    t_all = time.monotonic()
    for nb_path in runbooks(directory):
        step = nb_path.stem
        print(f"▶ {step} …", flush=True)
        t0 = time.monotonic()
        out = target / nb_path.name
        try:
            nb = pm.execute_notebook(str(nb_path), str(out), parameters={"run_dir": str(target)},
                                     kernel_name="python3", progress_bar=False, cwd=str(nb_path.parent),
                                     config=_IPC)
            cells = _cell_seconds(nb)
        except pm.PapermillExecutionError as e:
            failed = f"{step}: {e.ename}: {e.evalue}"
            cells = float("nan")
        wall = time.monotonic() - t0
        rec_path = target / f"{step}.json"
        rec = records.read_record(rec_path) if rec_path.exists() else {}
        rows.append({"step": step, "verdict": rec.get("verdict", "fail" if failed else "?"),
                     "key figure": rec.get("headline", failed or ""), "seconds": round(wall, 1),
                     "kernel+overhead s": round(wall - cells, 1) if cells == cells else None})
        if failed:
            break
    total = time.monotonic() - t_all
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        print("\n" + table.to_string(index=False))
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
