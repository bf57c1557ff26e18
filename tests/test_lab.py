"""`make lab`'s bad inputs, one sentence each: a taken port, a kernel whose .venv is gone, no browser.

The runbooks name the kernel `sparkkit`; papermill started from the venv resolves that name (the test
session's spec, conftest.py), so `.venv/bin/papermill` without `-k` runs them as the README says.
"""
import json
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sparkkit import lab
from sparkkit.errors import SparkkitError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def jupyter_data(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jdata"))
    return tmp_path / "jdata"


def test_a_taken_port_is_refused_in_one_sentence_and_the_default_moves_on():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(SparkkitError) as e:
            lab.choose_port(taken)
        assert str(e.value).startswith(f"port {taken} on 127.0.0.1 is taken: choose another (`make lab PORT=")
        assert "\n" not in str(e.value)
    port, note = lab.choose_port(0)
    assert port >= lab.DEFAULT_PORT and (note is None) == (port == lab.DEFAULT_PORT)


def test_a_kernel_pointing_at_a_deleted_venv_is_named_and_repaired(jupyter_data):
    spec = jupyter_data / "kernels" / "sparkkit"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": ["/gone/.venv/bin/python", "-m", "ipykernel_launcher",
                                                           "-f", "{connection_file}"],
                                                  "display_name": "sparkkit (.venv)", "language": "python"}))
    problem = lab.kernel_problem()
    assert problem and "/gone/.venv/bin/python, which no longer exists" in problem and "make setup" in problem
    out = subprocess.run([str(BIN / "sparkkit"), "kernel", "--check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0 and "make setup" in out.stderr
    assert "re-installed it for" in lab.ensure_kernel()
    assert lab.kernel_problem() is None
    assert json.loads((spec / "kernel.json").read_text())["argv"][0] == sys.executable
    assert lab.ensure_kernel() is None                           # already right: nothing rewritten


def test_no_browser_never_fails(monkeypatch):
    monkeypatch.setenv("BROWSER", "/nonexistent/browser")
    assert lab._open_browser("http://127.0.0.1:1/lab?token=x") is None


def test_lab_binds_loopback_with_a_token_and_opens_the_runbooks():
    argv = lab.lab_argv(8888, ROOT / "runbooks")
    assert "--ServerApp.ip=127.0.0.1" in argv and f"--ServerApp.root_dir={ROOT / 'runbooks'}" in argv
    assert not any("token" in a.lower() for a in argv)             # it travels in JUPYTER_TOKEN, not on argv


@pytest.mark.parametrize("path", sorted((ROOT / "runbooks").glob("[0-9][0-9]-*.ipynb")), ids=lambda p: p.stem)
def test_runbooks_name_the_sparkkit_kernel(path):
    ks = nbformat.read(path, as_version=4).metadata.kernelspec
    assert ks.name == lab.KERNEL_NAME and ks.display_name == "sparkkit (.venv)"


def test_papermill_without_k_resolves_the_named_kernel(tmp_path):
    out = subprocess.run([str(BIN / "papermill"), "runbooks/01-preflight.ipynb", str(tmp_path / "01.ipynb"),
                          "-p", "run_dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert nbformat.read(tmp_path / "01.ipynb", as_version=4).metadata.kernelspec.name == "sparkkit"


@pytest.mark.parametrize("path", sorted((ROOT / "runbooks").glob("[0-9][0-9]-*.ipynb")), ids=lambda p: p.stem)
def test_markdown_code_spans_render_as_written(path):
    """A backslash cannot escape a backtick inside a code span (CommonMark): JupyterLab showed
    `parameter \\`engine\\`` as broken pieces with stray backslashes; a span holding backticks uses ``…``."""
    nb = nbformat.read(path, as_version=4)
    bad = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines() if "\\`" in line]
    assert bad == []


def test_stopping_sparkkit_lab_stops_its_jupyterlab(tmp_path):
    """`kill` of `sparkkit lab` (SIGTERM, as a test or a service manager stops it) left JupyterLab orphaned on its
    port; now JupyterLab goes with it. It answered with the token only, on 127.0.0.1."""
    import os
    import re
    import time

    import httpx

    from sparkkit.serve import free_port
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_DATA_DIR": str(tmp_path / "jd"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jc"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jr")}
    proc = subprocess.Popen([str(BIN / "sparkkit"), "lab", "--port", str(port), "--no-browser"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for line in proc.stdout:
            m = re.search(rf"http://127\.0\.0\.1:{port}/lab/tree/01-preflight\.ipynb\?token=(\w+)", line)
            if m:
                url = m.group(0)
                break
        assert url, "no URL printed"
        assert httpx.get(f"http://127.0.0.1:{port}/api/contents").status_code == 403          # no token: refused
        listing = httpx.get(f"http://127.0.0.1:{port}/api/contents?token={m.group(1)}").json()
        assert "01-preflight.ipynb" in {c["name"] for c in listing["content"]}
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    for _ in range(300):                      # JupyterLab's own shutdown, bounded
        if lab._free(port):
            break
        time.sleep(0.2)
    assert lab._free(port), f"JupyterLab still holds port {port} after sparkkit lab was stopped"


@pytest.mark.parametrize("path", sorted((ROOT / "runbooks").glob("[0-9][0-9]-*.ipynb")), ids=lambda p: p.stem)
def test_commands_in_the_runbooks_run_as_shown(path):
    """A command shown in a runbook runs as typed in the checkout, as the README's do: through .venv/bin."""
    nb = nbformat.read(path, as_version=4)
    bare = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
            if "`papermill " in line or "`sparkkit " in line]
    assert bare == []


def test_make_clean_removes_only_this_venvs_kernel(jupyter_data):
    """`make clean` deletes the .venv: the kernel it leaves would point at nothing, so it goes first —
    unless it is another checkout's."""
    lab.install_kernel()
    assert "removed the kernel" in lab.remove_kernel() and not (jupyter_data / "kernels" / "sparkkit").exists()
    spec = jupyter_data / "kernels" / "sparkkit"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": ["/other/checkout/.venv/bin/python"]}))
    assert "left alone" in lab.remove_kernel() and (spec / "kernel.json").exists()
