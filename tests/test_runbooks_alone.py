"""Runbooks run alone, exactly as users type them, and find what earlier steps left."""
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from sparkkit.serve import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(*argv, env):
    return subprocess.run([str(a) for a in argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_design_cards_line_works_from_runbooks(tmp_path):
    """`papermill 05-serve.ipynb out.ipynb -p engine llamacpp`, typed in runbooks/ as the design card has it."""
    env = {**os.environ, "SPARKKIT_HOME": str(tmp_path / "home"), "SPARKKIT_RUNS": str(tmp_path / "runs")}
    here = ROOT / "runbooks"
    run = lambda *a: subprocess.run([str(x) for x in a], cwd=here, env=env, capture_output=True, text=True,  # noqa
                                    timeout=300)
    out = run(BIN / "papermill", "03-place-model.ipynb", "out-03.ipynb")
    assert out.returncode == 0, out.stderr[-2000:]
    try:
        out = run(BIN / "papermill", "05-serve.ipynb", "out.ipynb", "-p", "engine", "llamacpp", "-p", "port",
                  free_port())
        assert out.returncode == 0, out.stderr[-2000:]
        assert (here / "out.ipynb").is_file()
        ignored = subprocess.run(["git", "check-ignore", "-q", "runbooks/out.ipynb"], cwd=ROOT)
        assert ignored.returncode == 0                      # the owner's outputs never show up as changes
    finally:
        run(BIN / "sparkkit", "stop")
        for f in ("out.ipynb", "out-03.ipynb"):
            (here / f).unlink(missing_ok=True)


def test_03_then_05_alone_from_the_command_line_then_sparkkit_stop(tmp_path):
    env = {**os.environ, "SPARKKIT_HOME": str(tmp_path / "home"), "SPARKKIT_RUNS": str(tmp_path / "runs")}
    # 05 on a fresh machine: nothing placed yet — one clear sentence, not a traceback from deep inside
    out = sh(BIN / "papermill", "runbooks/05-serve.ipynb", tmp_path / "05a.ipynb", "-p", "engine", "llamacpp", env=env)
    assert out.returncode != 0 and "run 03-place-model first" in out.stderr
    # 03 alone detects the host itself (01 never ran) and places the embedded model
    out = sh(BIN / "papermill", "runbooks/03-place-model.ipynb", tmp_path / "03.ipynb", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    port = free_port()
    out = sh(BIN / "papermill", "runbooks/05-serve.ipynb", tmp_path / "05.ipynb", "-p", "engine", "llamacpp",
             "-p", "port", port, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    state = json.loads((tmp_path / "home" / "state.json").read_text())
    assert state["plan"]["for_model"] == "embedded"           # 02 never ran: 05 planned with defaults
    record = json.loads(next((tmp_path / "runs").glob("*/05-serve.json")).read_text())
    assert record["verdict"] == "pass" and record["results"]["pid"] == state["server"]["pid"]
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200   # outlived its kernel
    out = sh(BIN / "sparkkit", "stop", env=env)
    assert "stopped the sparkkit server" in out.stdout
    out = sh(BIN / "sparkkit", "stop", env=env)
    assert "nothing to stop" in out.stdout
