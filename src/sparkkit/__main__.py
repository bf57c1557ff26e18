"""`sparkkit` on the command line: run all runbooks, see or stop the server, install the CLI."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["claude"]:          # everything after it is claude's own (-p, --resume, …)
        from .claude import launch
        from .errors import SparkkitError
        try:
            return launch(argv[1:])
        except SparkkitError as e:
            print(f"sparkkit claude: {e}", file=sys.stderr)
            return 2
    ap = argparse.ArgumentParser(prog="sparkkit", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the seven runbooks in order and print a summary",
                       description="Run the seven runbooks in order (03 beside 04) and print a summary. Each choice "
                                   "below is a runbook parameter: same name, default and check as its parameters cell.")
    r.add_argument("--run-dir", default="", help="where records go (default: $SPARKKIT_RUNS or "
                                                 "$SPARKKIT_HOME/runs, then <timestamp>)")
    r.add_argument("--keep-serving", choices=["auto", "yes", "no"], default="auto",
                   help="leave the server running afterwards (auto: yes on a GB10, no for the embedded default)")
    r.add_argument("--log-level", choices=["quiet", "info", "debug"], default=None,
                   help="quiet: the summary only; info: each step's live lines too (default, or $SPARKKIT_LOG_LEVEL); "
                        "debug: also papermill's log, cell by cell")
    params = _owner_parameters()
    for p in params.values():
        r.add_argument("--" + p.name.replace("_", "-"), dest=p.name, default=None, metavar=p.type.upper(),
                       help=f"{p.help} (default: {p.default!r}; runbooks/{p.runbook}.ipynb)".replace("%", "%%"))
    sub.add_parser("stop", help="stop the server sparkkit started, and its LiteLLM bridge if 07 started one "
                                "(never any other process or container)")
    br = sub.add_parser("bridge", help="the LiteLLM bridge 07 puts in front of an engine without /v1/messages")
    br.add_argument("action", choices=["status", "stop"])
    sub.add_parser("status", help="is the sparkkit server running?")
    sub.add_parser("install-cli", help="install the pinned Claude Code CLI")
    uw = sub.add_parser("unwire", help="undo sparkkit's wiring of Claude Code: the settings file as it was before "
                                       "(byte for byte), or without sparkkit's keys if edited since")
    uw.add_argument("scope", nargs="?", default="user", choices=["user", "project", "sandbox"])
    uw.add_argument("project_dir", nargs="?", default="", metavar="DIR", help="with scope project: the project")
    sub.add_parser("wired", help="where Claude Code points now, at each scope, and whether that server answers")
    us = sub.add_parser("use", help="switch Claude Code in one command: to a local model (served, verified and wired; "
                                    "only 07 when it is served already) or back to Anthropic's cloud",
                        description="sparkkit use MODEL: serve MODEL if it is not served yet (02-07; the running "
                                    "server is replaced only once the new one answers) and wire Claude Code to it. "
                                    "sparkkit use cloud: undo sparkkit's wiring everywhere (or at --scope).")
    us.add_argument("target", metavar="MODEL|cloud")
    us.add_argument("--scope", default="", choices=["", "auto", "launcher", "user", "project", "sandbox"],
                    help="where to wire (default: the one place sparkkit wired now, else 07's auto)")
    us.add_argument("--project-dir", default="", metavar="DIR", help="with --scope project: the project")
    us.add_argument("--run-dir", default="", help="where the records go (default: a new run)")
    # listed for --help; main() hands everything after "claude" to the CLI before argparse sees it
    cl = sub.add_parser("claude", help="run Claude Code against the local server for this process only "
                                       "(no settings file touched); the rest of the line goes to claude",
                        add_help=False)
    cl.add_argument("args", nargs=argparse.REMAINDER)
    rn = sub.add_parser("runs", help="list the recorded runs (time, host, model, engine, verdicts, key figures); "
                                     "RUN: one run's figures; RUN RUN: two side by side",
                        description="The runs under $SPARKKIT_RUNS (default $SPARKKIT_HOME/runs). A run is named by "
                                    "its id (the directory name; a unique prefix will do) or by a run directory's path.")
    rn.add_argument("run", nargs="*", metavar="RUN", help="a run id or directory; two to compare")
    lb = sub.add_parser("lab", help="JupyterLab on the runbooks, on 127.0.0.1 with a token, with the sparkkit kernel "
                                    "(what `make lab` runs)")
    lb.add_argument("--port", type=int, default=0, help="default: the first free port from 8888")
    lb.add_argument("--no-browser", action="store_true", help="only print the URL (with its token)")
    kn = sub.add_parser("kernel", help="install (or repair) the Jupyter kernel `sparkkit` for this .venv in the "
                                       "user's Jupyter, so any JupyterLab on this box lists it (`make setup` runs it)")
    kn.add_argument("--check", action="store_true", help="only say whether the installed kernel's python exists")
    kn.add_argument("--remove", action="store_true", help="remove it when it runs this .venv (`make clean` does)")
    snap = sub.add_parser("snapshot", help="save this machine's host facts in DIR (serials and tokens redacted), "
                          "for 01's -p host or a bug report")
    snap.add_argument("dir", metavar="DIR", help="a new or empty directory")
    a = ap.parse_args(argv)
    if a.cmd == "run":
        from .choices import check, convert
        from .errors import ParameterError
        from .runner import run_all
        try:
            chosen = {n: convert(p, getattr(a, n)) for n, p in params.items() if getattr(a, n) is not None}
            check(chosen)
        except ParameterError as e:
            print(f"sparkkit run: {e}", file=sys.stderr)
            return 2
        return run_all(a.run_dir, a.keep_serving, choices=chosen, log_level=a.log_level or "")
    if a.cmd == "stop":
        from .serve import stop
        print(stop()["message"])
        from . import bridge
        if bridge.status().get("running"):
            print(bridge.stop()["message"])
        return 0
    if a.cmd == "bridge":
        from . import bridge
        print(json.dumps(bridge.status(), indent=2) if a.action == "status" else bridge.stop()["message"])
        return 0
    if a.cmd == "status":
        from .serve import status
        print(json.dumps(status(), indent=2))
        return 0
    if a.cmd == "unwire":
        from .errors import SparkkitError
        from .wiring import unwire
        try:
            print(unwire(a.scope, a.project_dir))
        except SparkkitError as e:
            print(f"sparkkit unwire: {e}", file=sys.stderr)
            return 2
        return 0
    if a.cmd == "use":
        from .errors import SparkkitError
        from .wiring import CLOUD, back_to_cloud, switch_plan
        try:
            if a.target == CLOUD:
                for line in back_to_cloud("" if a.scope in ("", "auto") else a.scope, a.project_dir):
                    print(line)
                return 0
            only, chosen, why = switch_plan(a.target, a.scope, a.project_dir)
        except (SparkkitError, ValueError) as e:
            print(f"sparkkit use: {e}", file=sys.stderr)
            return 2
        from .runner import run_all
        print(why, flush=True)
        return run_all(a.run_dir, keep_serving="yes", choices=chosen, only=only)
    if a.cmd == "wired":
        from .tables import WholeTable
        from .wiring import wired
        print(WholeTable(wired()).to_plain())
        return 0
    if a.cmd == "install-cli":
        from .claude import cli_version, ensure_cli
        cli = ensure_cli()
        print(f"{cli} ({cli_version(cli)})")
        return 0
    if a.cmd == "runs":
        from .errors import SparkkitError
        from .runs import main as runs_main
        try:
            return runs_main(a.run, err=lambda line: print(line, file=sys.stderr))
        except SparkkitError as e:
            print(f"sparkkit runs: {e}", file=sys.stderr)
            return 2
    if a.cmd == "lab":
        from .errors import SparkkitError
        from .lab import lab
        try:
            return lab(a.port, browser=not a.no_browser)
        except SparkkitError as e:
            print(f"sparkkit lab: {e}", file=sys.stderr)
            return 2
    if a.cmd == "kernel":
        from .lab import ensure_kernel, kernel_dir, kernel_problem, remove_kernel
        if a.remove:
            print(remove_kernel())
            return 0
        if a.check:
            problem = kernel_problem()
            print(f"sparkkit kernel: {problem}" if problem else
                  f"kernel `sparkkit` at {kernel_dir()}" if (kernel_dir() / "kernel.json").exists() else
                  "sparkkit kernel: not installed: run `make setup` (or `.venv/bin/sparkkit kernel`)",
                  file=sys.stderr if problem else sys.stdout)
            return 1 if problem else 0
        print(ensure_kernel() or f"kernel `sparkkit` at {kernel_dir()} already runs {sys.executable}")
        return 0
    if a.cmd == "snapshot":
        from .errors import ParameterError
        from .snapshot import capture
        try:
            print(capture(a.dir, parameter="DIR"))
        except ParameterError as e:
            print(f"sparkkit snapshot: {e}", file=sys.stderr)
            return 2
        return 0
    return 2


def _owner_parameters():
    from .choices import parameters
    from .runner import runbooks
    return parameters(runbooks()[0].parent)


if __name__ == "__main__":
    sys.exit(main())
