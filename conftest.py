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


def pytest_configure(config):
    os.environ["SPARKKIT_HOME"] = str(_SESSION_HOME)
    os.environ["SPARKKIT_RUNS"] = str(_SESSION_HOME / "runs")
    os.environ.setdefault("SPARKKIT_CLAUDE_DIR", str(Path(__file__).parent / ".sparkkit" / "claude-code"))
    os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_unconfigure(config):
    # The nbval run of 05-serve leaves its (detached) server running for 06 and 07: stop it,
    # through the same pid+start-time check users get, then drop the session home.
    os.environ["SPARKKIT_HOME"] = str(_SESSION_HOME)
    try:
        from sparkkit.serve import stop
        stop()
    finally:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)
