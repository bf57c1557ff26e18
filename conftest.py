"""Test-session wiring shared by tests/ and the nbval run over runbooks/.

Every test session gets its own SPARKKIT_HOME (state, models, server logs, sandbox Claude home)
so tests never touch a developer's ~/.sparkkit or ~/.claude. nbval kernels inherit it from this
process's environment. The pinned Claude Code CLI is shared through SPARKKIT_CLAUDE_DIR (the
Makefile points it into the checkout) so it is installed once, not per session.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="sparkkit-test-home-"))


def _owner_files() -> dict[str, bytes | None]:
    """The real user's Claude Code settings: no test may write them (a GB10's 07 wires ~/.claude)."""
    out = {}
    for p in (Path.home() / ".claude" / "settings.json", Path.home() / ".claude.json"):
        try:
            out[str(p)] = p.read_bytes()
        except OSError:
            out[str(p)] = None
    return out


_OWNER_BEFORE = _owner_files()


def pytest_sessionfinish(session, exitstatus):
    changed = [p for p, b in _owner_files().items() if b != _OWNER_BEFORE.get(p) and p.endswith("settings.json")]
    if changed:
        session.config.get_terminal_writer().line(f"A test wrote the real user's {', '.join(changed)}: give that "
                                                  "test a HOME of its own", red=True)
        session.exitstatus = 1


def pytest_configure(config):
    os.environ["SPARKKIT_HOME"] = str(_SESSION_HOME)
    os.environ["SPARKKIT_RUNS"] = str(_SESSION_HOME / "runs")
    os.environ.setdefault("SPARKKIT_CLAUDE_DIR", str(Path(__file__).parent / ".sparkkit" / "claude-code"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    # The runbooks name the kernel `sparkkit` (make setup installs it in the user's Jupyter): papermill by hand in
    # the tests finds this session's own spec, for this python, first on JUPYTER_PATH — never the user's.
    from ipykernel.kernelspec import install
    from sparkkit.lab import KERNEL_NAME, display_name
    install(prefix=str(_SESSION_HOME / "jupyter"), kernel_name=KERNEL_NAME, display_name=display_name())
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(_SESSION_HOME / "jupyter" / "share" / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])])


def pytest_unconfigure(config):
    # The nbval run of 05-serve leaves its (detached) server running for 06 and 07: stop it,
    # through the same pid+start-time check users get, then drop the session home.
    os.environ["SPARKKIT_HOME"] = str(_SESSION_HOME)
    try:
        from sparkkit.serve import stop
        stop()
    finally:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


# ----------------------------------------------------------------------------- the fault suite's table
_FAULT_RESULTS: dict[str, list[str]] = {}


def pytest_runtest_logreport(report):
    import sys
    sys.path.insert(0, str(Path(__file__).parent / "tests"))
    from fault_suite import case_of
    case = case_of(report.nodeid)
    if case and (report.when == "call" or report.outcome != "passed"):
        _FAULT_RESULTS.setdefault(report.nodeid.split("[")[0], []).append(report.outcome)


def pytest_terminal_summary(terminalreporter):
    """Faults injected / survived and bad inputs tried / answered, as one table (issue 11's benchmark)."""
    if not _FAULT_RESULTS:
        return
    from fault_suite import case_of
    rows = []
    for nodeid, outcomes in sorted(_FAULT_RESULTS.items()):
        kind, what = case_of(nodeid)
        ok = all(o == "passed" for o in outcomes)
        rows.append((kind, what, "held" if ok else "FAILED", len(outcomes)))
    w = max(len(r[1]) for r in rows)
    tr = terminalreporter
    tr.section("fault suite")
    for kind in ("fault", "bad input"):
        mine = [r for r in rows if r[0] == kind]
        for _, what, verdict, n in mine:
            tr.write_line(f"  {kind:<9}  {what:<{w}}  {verdict}" + (f" ({n} cases)" if n > 1 else ""))
    faults = [r for r in rows if r[0] == "fault"]
    bad = [r for r in rows if r[0] == "bad input"]
    tr.write_line(f"faults injected {len(faults)}, survived with nothing lost {sum(r[2] == 'held' for r in faults)}; "
                  f"bad inputs tried {len(bad)}, answered with a sentence {sum(r[2] == 'held' for r in bad)}")
