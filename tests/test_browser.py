"""JupyterLab as an owner uses it, in a real browser: `sparkkit lab` (what `make lab` runs), Chromium
from Debian's packages driven by Playwright, 01-preflight, 02-plan and 06-verify run from JupyterLab's
Run menu on the `sparkkit` kernel; the context tuner's slider dragged, "Use for 05-serve" pressed.
Asserted on what a person sees: whole fix commands in the tables, the plots, the tuner's status line,
and the plan that 05 would launch. Screenshots go to tests/output/browser/ (git-ignored; the path is
printed). JupyterLab, its kernels and the embedded llama.cpp get a temporary HOME, Jupyter dirs and
SPARKKIT_HOME, so nothing of the user's is read or written.

Needs /usr/bin/chromium (`.ci/run` installs Debian's `chromium`) and the dev extra `playwright`
(the browser download Playwright offers does not work here, so it launches Debian's). Without them
the test skips on a developer's machine and FAILS in CI (CI set), so CI never skips it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkkit import records, serve
from sparkkit.download import place_embedded
from sparkkit.engines.launch import Launch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("SPARKKIT_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / "tests" / "output" / "browser"
WAIT_MS = int(os.environ.get("SPARKKIT_BROWSER_WAIT_S", "600")) * 1000   # generous (2 busy cores); never asserted on


def _missing(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"{why} — CI must run the browser test (.ci/run installs chromium; `make test` the dev extras)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory):
    """A temp HOME, Jupyter dirs and SPARKKIT_HOME for JupyterLab, its kernels and this process."""
    t = tmp_path_factory.mktemp("browser")
    env = {**os.environ, "HOME": str(t / "home"), "JUPYTER_DATA_DIR": str(t / "jdata"),
           "JUPYTER_CONFIG_DIR": str(t / "jconfig"), "JUPYTER_RUNTIME_DIR": str(t / "jruntime"),
           "SPARKKIT_HOME": str(t / "sparkkit"), "SPARKKIT_RUNS": str(t / "sparkkit" / "runs")}
    env.pop("MPLBACKEND", None)          # a person's kernel draws inline, as JupyterLab sets it up
    env.pop("JUPYTER_PATH", None)        # the kernel comes from `sparkkit lab`'s own install, as for an owner
    (t / "home").mkdir()
    # JupyterLab autosaves an open notebook: executed outputs would land in the checkout's runbooks/
    # (a test must not write them; an owner's `make lab` keeps their edits as JupyterLab does)
    settings = t / "jconfig" / "lab" / "user-settings" / "@jupyterlab"
    (settings / "docmanager-extension").mkdir(parents=True)
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    return env


@pytest.fixture(scope="module")
def jupyterlab(lab_env):
    """`sparkkit lab --no-browser` on a free port: (base URL, token). The runbooks are byte for byte as before."""
    before = {p: p.read_bytes() for p in (ROOT / "runbooks").glob("*.ipynb")}
    port = serve.free_port()
    proc = subprocess.Popen([str(BIN / "sparkkit"), "lab", "--port", str(port), "--no-browser"], cwd=ROOT,
                            env=lab_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, url = [], None
    deadline = time.monotonic() + 300
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+)/lab/tree/01-preflight\.ipynb\?token=(\w+)", line)
        url = m and (m.group(1), m.group(2))
    try:
        assert url, "sparkkit lab printed no URL:\n" + "".join(lines[-40:])
        assert url[0] == f"http://127.0.0.1:{port}"
        kernel = json.loads((Path(lab_env["JUPYTER_DATA_DIR"]) / "kernels" / "sparkkit" / "kernel.json").read_text())
        assert kernel["argv"][0] == sys.executable and kernel["display_name"] == "sparkkit (.venv)"
        import threading
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()   # keep its pipe drained
        yield url
    finally:
        proc.terminate()                 # the JupyterLab this test started, by its own handle
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    changed = [p.name for p, b in before.items() if not p.exists() or p.read_bytes() != b]
    assert changed == [], f"JupyterLab wrote the checkout's runbooks: {changed}"


@pytest.fixture(scope="module")
def page(browser, jupyterlab):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    yield pg
    context.close()


@pytest.fixture(autouse=True)
def shot_on_failure(request, page):
    """What the page showed when a step failed or timed out, kept beside the other screenshots."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:             # the call's report is in before teardown
        shot(page, f"FAILED-{request.node.name}")


def shot(pg, name: str, locator=None) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    (locator or pg).screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def open_and_run_all(pg, base: tuple[str, str], notebook: str):
    """Open `notebook` in JupyterLab, wait for the sparkkit kernel, Run ▸ Run All Cells, wait until it ends."""
    url, token = base
    pg.goto(f"{url}/lab/tree/{notebook}?reset&token={token}")    # reset: only this notebook's tab is open
    tab = pg.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=notebook).first
    tab.wait_for()
    panel = pg.locator(f"[id='{tab.get_attribute('data-id')}']")
    panel.locator(".jp-Notebook").wait_for()
    # the notebook's own kernel, found by name — no "Select Kernel" dialog
    panel.locator(".jp-Toolbar-kernelName", has_text="sparkkit (.venv)").wait_for()
    assert pg.locator(".jp-Dialog").count() == 0, pg.locator(".jp-Dialog").inner_text()
    tab.click()
    pg.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    pg.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # done: the last code cell has a number, or a cell failed (Run All stops there)
    pg.wait_for_function("""nb => {
        if (nb.querySelector('[data-mime-type="application/vnd.jupyter.error"]')) return true;
        const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
        return prompts.length > 0 && !prompts.some(t => t.includes('*')) && /\\[\\d+\\]/.test(prompts[prompts.length - 1]);
    }""", arg=panel.locator(".jp-Notebook").element_handle(), timeout=WAIT_MS)
    errors = panel.locator('[data-mime-type="application/vnd.jupyter.error"]')
    if errors.count():
        shot(pg, f"{notebook[:2]}-error")
        pytest.fail(f"{notebook} failed in JupyterLab: {errors.first.inner_text()[-2000:]}")
    return panel


def check_whole_tables(pg, panel, notebook: str):
    """The troubleshooting table's fixes are whole: the same text as the runbook's source, nothing clipped;
    and no table the runbook printed has a cell cut by pandas (its "..." at 50 characters)."""
    assert cut_cells(panel) == [], f"{notebook}: table cells cut short: {cut_cells(panel)}"
    nb = json.loads((ROOT / "runbooks" / notebook).read_text())
    source = "".join(nb["cells"][-1]["source"])
    fixes = [row.split(" | ")[-1].rstrip(" |") for row in source.splitlines()
             if row.startswith("| ") and not row.startswith(("| Symptom", "|---"))]
    table = panel.locator(".jp-MarkdownOutput table").last
    table.scroll_into_view_if_needed()
    shot(pg, f"{notebook[:2]}-troubleshooting", table)
    text = table.inner_text()
    assert "\\`" not in text, f"{notebook}: markdown shown raw in the table: {text!r}"
    cells = table.locator("tbody tr td:nth-child(3)")
    assert cells.count() == len(fixes) > 0
    for i, fix in enumerate(fixes):
        for code in re.findall(r"`([^`]+)`", fix):
            assert code in cells.nth(i).inner_text(), f"{notebook}: fix {code!r} not shown whole"
    clipped = table.evaluate("""t => [...t.querySelectorAll('td, code')].filter(e =>
        e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible').map(e => e.textContent)""")
    assert clipped == [], f"{notebook}: cut in the troubleshooting table: {clipped}"
    # a table's right edge inside the notebook's own area: nothing runs off to the right unseen
    nb_box = panel.locator(".jp-Notebook").bounding_box()
    box = table.bounding_box()
    scroll = table.evaluate("t => { const o = t.closest('.jp-RenderedHTMLCommon'); "
                            "return o ? o.scrollWidth - o.clientWidth : 0 }")
    assert box["x"] + box["width"] <= nb_box["x"] + nb_box["width"] + 1 or scroll <= 0, \
        f"{notebook}: the troubleshooting table runs past the notebook's right edge"


def cut_cells(where) -> list[str]:
    return where.evaluate("""p => [...p.querySelectorAll('.jp-OutputArea-output table td')]
        .map(td => td.textContent.trim()).filter(t => t.endsWith('...'))""")


def plot_images(panel) -> int:
    return panel.evaluate("""p => [...p.querySelectorAll('.jp-OutputArea-output img')]
        .filter(i => i.src.startsWith('data:image/png') && i.naturalWidth > 100 && i.naturalHeight > 100).length""")


@pytest.fixture(scope="module")
def server_for_06(lab_env):
    """06 checks the server 05 started: the embedded llama.cpp, as tests/test_e2e.py starts it, in the lab's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARKKIT_HOME", lab_env["SPARKKIT_HOME"])
        mp.setenv("SPARKKIT_RUNS", lab_env["SPARKKIT_RUNS"])
        model = place_embedded(Path(lab_env["SPARKKIT_HOME"]) / "models").path
        launch = Launch(model=model, alias="gpt-oss-120b", context=131072, port=serve.free_port(), threads=2)
        started = serve.start(launch, {"kind": "embedded"})
        yield started
        serve.stop()


def _state(lab_env) -> dict:
    return json.loads((Path(lab_env["SPARKKIT_HOME"]) / "state.json").read_text())


def test_01_preflight_in_jupyterlab(page, jupyterlab, lab_env):
    panel = open_and_run_all(page, jupyterlab, "01-preflight.ipynb")
    shot(page, "01-preflight")
    run = Path(_state(lab_env)["run_dir"])
    record = json.loads((run / "01-preflight.json").read_text())
    assert record["verdict"] in ("pass", "warn")
    # the checks table: every fix the record holds is on the page whole (no pandas "…" at 50 characters)
    shown = panel.locator(".jp-OutputArea-output table").first.inner_text()
    fixes = [c.get("fix") for c in record["results"].get("checks", []) if c.get("fix")]
    assert all(f in " ".join(shown.split()) for f in (" ".join(f.split()) for f in fixes)), fixes
    check_whole_tables(page, panel, "01-preflight.ipynb")


def test_02_plan_tuner_in_jupyterlab(page, jupyterlab, lab_env, request):
    panel = open_and_run_all(page, jupyterlab, "02-plan.ipynb")
    assert plot_images(panel) >= 1                                  # the memory plot, as an image a person sees
    shot(page, "02-plan")
    check_whole_tables(page, panel, "02-plan.ipynb")
    before = _state(lab_env)["plan"]["context"]
    slider = panel.locator(".widget-slider", has=page.locator(".widget-label", has_text="context")).first
    slider.scroll_into_view_if_needed()
    readout = slider.locator(".widget-readout")
    assert readout.inner_text().strip() == str(before)
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-target, .slider").first.bounding_box()
    hb = handle.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.25, hb["y"] + hb["height"] / 2, steps=12)
    page.mouse.up()
    page.wait_for_function("([el, v]) => el.textContent.trim() !== v", arg=[readout.element_handle(), str(before)])
    tuned = int(readout.inner_text().strip())
    assert 1024 <= tuned < before and tuned % 1024 == 0
    tuner = slider.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
    status = tuner.locator(".widget-html").first
    page.wait_for_function("el => el.textContent.includes('largest context that fits')", arg=status.element_handle())
    # the widget redraws the plan: its own table and plot
    page.wait_for_function("el => [...el.querySelectorAll('img')].some(i => i.naturalWidth > 100)",
                           arg=tuner.element_handle())
    tuner.locator("button", has_text="Use for 05-serve").click()
    page.wait_for_function("el => el.textContent.includes('05-serve will launch')", arg=status.element_handle())
    assert f"05-serve will launch context {tuned} ×" in status.inner_text()
    shot(page, "02-tuner", tuner)
    assert cut_cells(tuner) == [], f"the tuner's plan table is cut: {cut_cells(tuner)}"
    state = _state(lab_env)
    assert state["plan"]["context"] == tuned                          # what 05 launches next
    record = json.loads((Path(state["run_dir"]) / "02-plan.json").read_text())
    assert record["results"]["context"] == tuned                      # the run's record says what the state says


def test_06_verify_in_jupyterlab(page, jupyterlab, lab_env, server_for_06):
    panel = open_and_run_all(page, jupyterlab, "06-verify.ipynb")
    assert plot_images(panel) >= 1                                  # the speed plot
    shot(page, "06-verify")
    record = json.loads((Path(_state(lab_env)["run_dir"]) / "06-verify.json").read_text())
    assert record["verdict"] in ("pass", "warn"), record["headline"]
    check_whole_tables(page, panel, "06-verify.ipynb")
