"""05's server lifecycle against the real embedded llama.cpp: start, refuse, fail clearly, stop safely."""
import os
import signal
import socket
import subprocess
import sys
import time

from dataclasses import replace
import json

import httpx
import pytest

from sparkkit import records, serve
from sparkkit.download import place_embedded
from sparkkit.engines.launch import Launch
from sparkkit.errors import ServeError

EMBEDDED = {"kind": "embedded"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    yield tmp_path
    serve.stop()


@pytest.fixture
def model(home):
    return place_embedded(home / "models").path


def test_start_records_and_stop(model):
    launch = Launch(model=model, alias="tiny-gpt-oss", context=4096, port=serve.free_port(), threads=2)
    started = serve.start(launch, EMBEDDED)
    assert httpx.get(f"{started.base_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{started.base_url}/v1/models").json()["data"][0]["id"] == "tiny-gpt-oss"
    server = records.load_state()["server"]
    assert server["pid"] == started.pid and serve.is_ours(server) and server["launch"]["context"] == 4096
    assert os.getpgid(started.pid) == started.pid          # own session: outlives the kernel that started it
    # re-running 05 with the same launch keeps the server that works; another launch replaces it
    same = serve.start(launch, EMBEDDED)
    assert same.pid == started.pid and same.replaced.startswith("kept the running sparkkit server")
    again = serve.start(replace(launch, context=8192), EMBEDDED)
    assert again.pid != started.pid and again.replaced.startswith(f"replaced the sparkkit server pid {started.pid}")
    assert again.log != started.log and started.log.exists()          # every server keeps its own log
    out = serve.stop()
    assert out["stopped"] and not serve.status()["running"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{again.base_url}/health", timeout=2)


def test_port_taken_by_someone_else_is_a_clear_error(model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already in use.*-p port {port + 1}"):
            serve.start(Launch(model=model, port=port), EMBEDDED)
    assert "server" not in records.load_state()


def test_a_model_that_fails_to_load_reports_the_log_tail(home):
    bad = home / "not-a-model.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ServeError, match=r"exited with code .* before it was ready.*Last lines"):
        serve.start(Launch(model=str(bad), port=serve.free_port()), EMBEDDED, timeout=60)
    assert "server" not in records.load_state()


def test_stop_never_signals_a_process_sparkkit_did_not_start(home):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A state file pointing at a live pid that is not ours (pid reuse, or a hand-edited file).
        records.update_state("server", {"pid": stranger.pid, "start_ticks": 1, "argv": ["llama-server"]})
        out = serve.stop()
        assert not out["stopped"] and "left alone" in out["message"]
        time.sleep(0.2)
        assert stranger.poll() is None
    finally:
        stranger.send_signal(signal.SIGTERM)
        stranger.wait()


def test_serve_step_refuses_a_plan_that_does_not_fit_unless_forced(home, model, monkeypatch):
    from sparkkit.errors import ParameterError, StateError

    with pytest.raises(StateError, match="run 03-place-model first"):
        serve.run(port=serve.free_port())
    records.update_state("choice", {"model": "embedded", "engine": "llamacpp", "model_dir": str(home / "models")})
    records.update_state("model", {"model": "embedded", "path": model, "alias": "tiny-gpt-oss"})
    records.update_state("engine", {"runtime": EMBEDDED})
    records.update_state("plan", {"for_model": "embedded", "context": 4096, "slots": 1, "kv_type": "f16",
                                  "ubatch": 512, "verdict": "does not fit", "total_bytes": 2**40,
                                  "usable_bytes": 2**30})
    with pytest.raises(ParameterError, match="parameter `force`.*does not fit"):
        serve.run(port=serve.free_port())
    started = serve.run(port=serve.free_port(), force=True)
    assert isinstance(started.load_seconds, float)          # a figure, printed, not a timing assertion
    print(f"forced launch ready in {started.load_seconds:.2f} s")


def test_lan_bind_with_key_requires_the_key(home, model):
    key = home / "key"
    key.write_text("sk-test-key")
    port = serve.free_port()
    started = serve.start(Launch(model=model, host="0.0.0.0", port=port, api_key_file=str(key), context=2048),
                          EMBEDDED)
    assert httpx.get(f"{started.base_url}/v1/models").status_code == 401
    assert httpx.get(f"{started.base_url}/v1/models", headers={"Authorization": "Bearer sk-test-key"}).status_code == 200


def test_a_replacement_that_fails_leaves_the_owner_a_server(home, model):
    """05 never leaves the owner with less: a launch that cannot start costs nothing that worked."""
    launch = Launch(model=model, alias="tiny-gpt-oss", context=4096, port=serve.free_port(), threads=2)
    first = serve.start(launch, EMBEDDED)
    bad = home / "truncated.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    # another port: the new server fails to load; the running one was never touched
    with pytest.raises(ServeError, match=r"(?s)before it was ready.*left running"):
        serve.start(replace(launch, model=str(bad), port=serve.free_port()), EMBEDDED, timeout=60)
    assert serve.status()["pid"] == first.pid and httpx.get(f"{first.base_url}/health").status_code == 200
    # a model file that is not there: refused before anything is stopped
    with pytest.raises(ServeError, match="(?s)is not there.*left alone"):
        serve.start(replace(launch, model=str(home / "gone.gguf")), EMBEDDED)
    assert serve.status()["pid"] == first.pid
    # the same port: the old one must go first, so a failed launch brings it back from its own command line
    with pytest.raises(ServeError, match=r"(?s)before it was ready.*started again \(pid (\d+)"):
        serve.start(replace(launch, model=str(bad)), EMBEDDED, timeout=60)
    back = records.load_state()["server"]
    assert back["pid"] != first.pid and serve.is_ours(back) and back["launch"]["model"] == model
    assert httpx.get(f"{first.base_url}/v1/models").json()["data"][0]["id"] == "tiny-gpt-oss"


def test_stop_and_status_find_our_server_whatever_state_json_holds(home, model):
    started = serve.start(Launch(model=model, context=4096, port=serve.free_port(), threads=2), EMBEDDED)
    records.state_path().write_text("{not json")                     # corrupt, or moved aside by hand
    st = serve.status()
    assert st["running"] and st["pid"] == started.pid and "not readable JSON" in st["state"]
    out = serve.stop()
    assert out["stopped"] and str(started.pid) in out["message"] and "not readable" in out["message"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{started.base_url}/health", timeout=2)
    assert serve.stop()["message"].startswith("no sparkkit server is recorded")
    records.state_path().unlink()
