"""The agent-loop benchmark, before and after, in one run: the same scripted Claude Code sessions (the real CLI,
07's `agentloop.run`) against each launch in turn, on the embedded model, and one table of the goals.

    .venv/bin/python tools/agentloop/before_after.py                       # embedded llama.cpp: 1 slot vs 02's 4
    .venv/bin/python tools/agentloop/before_after.py --binary B --patched P # also a built llama-server, and one
                                                                            # built with sparkkit's patches

Launches (each a fresh server, so every run starts cold):
- `1 slot`: the launch 02 planned before (one slot, the host prompt cache);
- `4 slots`: 02's default for llama.cpp now (four slots in one KV pool, the same memory);
- with --binary / --patched: `4 slots` on that llama-server (CPU build of the pinned tree), so the patch's
  effect (src/sparkkit/data/llamacpp-patches) is measured against the same build without it.

Prints each run's request table and a whole table of goals and ratios; writes JSON beside --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd


def one(name: str, home: Path, runtime: dict, **launch_kw) -> dict:
    from sparkkit import agentloop, serve
    from sparkkit.download import place_embedded
    from sparkkit.engines.launch import Launch
    os.environ["SPARKKIT_HOME"] = str(home)
    model = place_embedded(home / "models").path
    launch = Launch(model=str(model), alias="gpt-oss-120b", context=131072, port=serve.free_port(), **launch_kw)
    started = serve.start(launch, runtime)
    try:
        report = agentloop.run(base_url=started.base_url, launch=launch.to_dict(), workdir=home / "loop",
                               progress=lambda line: print(f"[{name}] {line}", flush=True))
    finally:
        serve.stop()
    print(f"\n== {name}\n" + report.table().to_string() + "\n" + report.goals_table().to_string() + "\n", flush=True)
    return {"name": name, "report": report}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="", help="a llama-server built from the pinned tree without the patches")
    ap.add_argument("--patched", default="", help="the same build with sparkkit's patches applied")
    ap.add_argument("--threads", type=int, default=0, help="-t for every server (0: their default; 1 leaves a core to the CLI on 2 cores)")
    ap.add_argument("--out", default="records/agentloop/before_after.json")
    ap.add_argument("--only", default="", help="comma-separated run names to do (default: all)")
    args = ap.parse_args()
    embedded = {"kind": "embedded", "python": sys.executable}
    extra = dict(threads=args.threads) if args.threads else {}
    runs = [("embedded, 1 slot", embedded, dict(slots=1, **extra)), ("embedded, 4 slots", embedded, dict(slots=4, **extra))]
    if args.binary:
        runs.append(("llama-server b11549, 4 slots", {"kind": "binary", "path": args.binary}, dict(slots=4, **extra)))
    if args.patched:
        runs.append(("llama-server b11549 + sparkkit patch, 4 slots", {"kind": "binary", "path": args.patched},
                     dict(slots=4, **extra)))
    if args.only:
        keep = {n.strip() for n in args.only.split(",")}
        runs = [r for r in runs if r[0] in keep]
    results = []
    for name, runtime, kw in runs:
        with tempfile.TemporaryDirectory(prefix="agentloop-") as home:
            results.append(one(name, Path(home), runtime, **kw))
    rows = []
    for r in results:
        rep = r["report"]
        row = {"launch": r["name"], "requests": len(rep.requests),
               "sessions ok": sum(s.exit_code == 0 for s in rep.sessions),
               "wall s": round(sum(s.seconds for s in rep.sessions), 1)}
        for g in rep.goals:
            row[f"{g.name} (measured)"] = g.measured
            row[f"{g.name} (ratio)"] = g.ratio
        rows.append(row)
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_columns", None, "display.width", 400, "display.max_colwidth", None):
        print(table.to_string(index=False))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{"run": r["name"], **r["report"].record()[2]} for r in results], indent=1,
                              default=str) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
