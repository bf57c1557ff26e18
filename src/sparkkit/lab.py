"""`make lab`: JupyterLab on the runbooks, on 127.0.0.1 with a token, with the `sparkkit` kernel.

The runbooks name the kernel `sparkkit` in their metadata. `make setup` (so `make run`, `make test`
and `make lab`) installs it into the user's Jupyter (`python -m ipykernel install --user --name sparkkit`),
pointing at this checkout's `.venv` python: JupyterLab and papermill started from the venv find it, and
so does a JupyterLab the owner already runs (e.g. DGX Dashboard's). A spec whose python is gone (the
`.venv` deleted) is re-installed here, or named with the command that re-installs it (`kernel_problem`).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import SparkkitError

KERNEL_NAME = "sparkkit"
DEFAULT_PORT = 8888
FIRST_NOTEBOOK = "01-preflight.ipynb"
REINSTALL = "run `make setup` in the sparkkit checkout (or `.venv/bin/sparkkit kernel` there) to re-install it"


def display_name() -> str:
    return f"sparkkit ({Path(sys.prefix).name})"          # "sparkkit (.venv)"


def kernel_dir() -> Path:
    """Where `make setup` puts the kernel: the user's Jupyter data dir (`$JUPYTER_DATA_DIR` moves it)."""
    from jupyter_core.paths import jupyter_data_dir
    return Path(jupyter_data_dir()) / "kernels" / KERNEL_NAME


def _python_of(spec_dir: Path) -> str | None:
    try:
        argv = json.loads((spec_dir / "kernel.json").read_text())["argv"]
        return str(argv[0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def kernel_problem() -> str | None:
    """One sentence when the installed `sparkkit` kernel spec's python no longer exists, else None."""
    d = kernel_dir()
    py = _python_of(d)
    if (d / "kernel.json").exists() and (not py or not os.access(py, os.X_OK)):
        return (f"the Jupyter kernel `{KERNEL_NAME}` ({d}) points at {py or 'nothing readable'}, which no longer "
                f"exists (a deleted .venv?): {REINSTALL}")
    return None


def install_kernel() -> Path:
    """`python -m ipykernel install --user --name sparkkit --display-name "sparkkit (.venv)"` for this python."""
    from ipykernel.kernelspec import install
    return Path(install(user=True, kernel_name=KERNEL_NAME, display_name=display_name()))


def ensure_kernel() -> str | None:
    """Install or repair the spec so it runs this python; one line saying what changed, None if nothing did."""
    d = kernel_dir()
    before = _python_of(d)
    if before == sys.executable:
        return None
    path = install_kernel()
    if before and not os.access(before, os.X_OK):
        return (f"the kernel `{KERNEL_NAME}` at {path} pointed at {before}, which no longer exists; "
                f"re-installed it for {sys.executable}")
    if before:
        return f"the kernel `{KERNEL_NAME}` at {path} pointed at {before}; now {sys.executable}"
    return f"installed the kernel `{KERNEL_NAME}` ({display_name()}) at {path}"


def remove_kernel() -> str:
    """`make clean`: drop the user's `sparkkit` spec when it runs this .venv (another checkout's is left alone)."""
    d = kernel_dir()
    py = _python_of(d)
    if py != sys.executable:
        return (f"kernel `{KERNEL_NAME}` at {d} runs {py}, not this .venv: left alone" if py else
                f"no kernel `{KERNEL_NAME}` installed at {d}")
    import shutil
    shutil.rmtree(d)
    return f"removed the kernel `{KERNEL_NAME}` ({d}), which ran {py}"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(port: int = 0) -> tuple[int, str | None]:
    """The port asked for (refused in one sentence when taken), or the first free one from 8888 and a note."""
    if port:
        if not 1 <= port <= 65535:
            raise SparkkitError(f"port {port} is not a TCP port: choose one from 1 to 65535 (`make lab PORT=8890`)")
        if not _free(port):
            raise SparkkitError(f"port {port} on 127.0.0.1 is taken: choose another (`make lab PORT={port + 1}`), "
                                f"or leave PORT out for the first free one from {DEFAULT_PORT}")
        return port, None
    for p in range(DEFAULT_PORT, DEFAULT_PORT + 100):
        if _free(p):
            return p, (None if p == DEFAULT_PORT else
                       f"port {DEFAULT_PORT} is taken; JupyterLab uses {p} (choose one with `make lab PORT=…`)")
    raise SparkkitError(f"ports {DEFAULT_PORT}-{DEFAULT_PORT + 99} on 127.0.0.1 are all taken: "
                        "choose one with `make lab PORT=…`")


def lab_argv(port: int, root: Path) -> list[str]:
    """JupyterLab on loopback only, no browser of its own (lab() opens the notebook's URL), rooted at runbooks/."""
    argv = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}"]
    # Jupyter refuses root without this; root is who runs a container or CI, and the bind is loopback + token
    return argv + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])


def _answers(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.3)
    return False


def _open_browser(url: str) -> str | None:
    """Open `url` where there is a browser; else None (never raises: a headless box just reads the URL)."""
    import webbrowser
    try:
        browser = webbrowser.get()
        return browser.name if browser.open(url) else None
    except Exception:                                       # webbrowser.Error, or a browser that cannot start
        return None


def _exit_on_term(signum, frame):
    raise SystemExit(128 + signum)


def lab(port: int = 0, browser: bool = True, root: Path | None = None) -> int:
    """Start JupyterLab on the runbooks and wait for it (Ctrl-C twice stops it)."""
    from .runner import runbooks
    root = root or runbooks()[0].parent
    port, note = choose_port(port)
    changed = ensure_kernel()
    if changed:
        print(changed, flush=True)
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}/lab/tree/{FIRST_NOTEBOOK}?token={token}"
    if note:
        print(note, flush=True)
    # the token travels in the environment, not on a command line other users can read with ps
    proc = subprocess.Popen(lab_argv(port, root), env={**os.environ, "JUPYTER_TOKEN": token})
    # `kill` (SIGTERM) of this process stops its JupyterLab too, through the finally below: never an orphan
    signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        if not _answers(port, proc, timeout=120):
            code = proc.wait()
            raise SparkkitError(f"JupyterLab exited ({code}) before it answered on port {port}: see its lines "
                                "above; another port: `make lab PORT=…`")
        print(f"\nJupyterLab on the runbooks ({root}), kernel {display_name()}:\n    {url}", flush=True)
        opened = _open_browser(url) if browser else None
        if not opened:
            print(f"open that URL in a browser (from another machine: `ssh -L {port}:127.0.0.1:{port} <this box>` "
                  "first); Ctrl-C twice stops JupyterLab", flush=True)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:                        # JupyterLab asks, or stops on the second Ctrl-C
                continue
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
