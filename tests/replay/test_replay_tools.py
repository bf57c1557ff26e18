"""Self-tests of the replay tools (recordings + fake ollama/docker + replay HTTP server). No wall-clock asserts."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

HERE = pathlib.Path(__file__).resolve().parent
BIN = HERE / "bin"
REC = HERE / "recordings"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e['PATH']}"
    e["SPARKKIT_REPLAY_STATE"] = str(tmp_path / "state")
    e.pop("SPARKKIT_REPLAY_FAULT", None)
    yield e
    # stop whatever replay servers this test left running (only ours: pid files in its own state dir)
    for pf in (tmp_path / "state").glob("replay_http-*.pid"):
        try:
            os.kill(int(pf.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def run(env, *argv, fault=None, **kw):
    e = dict(env)
    if fault:
        e["SPARKKIT_REPLAY_FAULT"] = fault
    return subprocess.run(list(argv), env=e, capture_output=True, text=True, timeout=60, **kw)


def wait_http(url, ok=(200,), tries=200):
    for _ in range(tries):
        try:
            r = httpx.get(url, timeout=1)
            if r.status_code in ok:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered {ok}")


@pytest.mark.parametrize("engine", ["ollama", "sglang", "vllm", "docker"])
def test_recordings_carry_sources(engine):
    rec = json.loads((REC / f"{engine}.json").read_text())
    assert rec["engine"] == engine and rec["version"] and rec["sources"]
    for section in ("cli", "http", "logs"):
        for name, item in rec.get(section, {}).items():
            assert item.get("source"), f"{engine}.{section}.{name} has no source"


def test_docker_images_recorded():
    imgs = json.loads((REC / "docker.json").read_text())["images"]
    assert imgs["sglang"]["digest"].startswith("sha256:") and imgs["vllm"]["digest"].startswith("sha256:")
    assert imgs["sglang_latest_cu130"]["digest"] is None  # said plainly: not found


# ------------------------------------------------------------------------ docker
SGLANG_CMD = ["python3", "-m", "sglang.launch_server", "--model-path", "openai/gpt-oss-120b", "--host", "0.0.0.0",
              "--port", "30000", "--tp", "1", "--reasoning-parser", "gpt-oss", "--tool-call-parser", "gpt-oss",
              "--served-model-name", "gpt-oss-120b"]


def docker_run_sglang(env, port, fault=None, extra=()):
    return run(env, "docker", "run", "-d", "--gpus", "all", "--shm-size", "32g", "--ipc=host", "--name", "sglang",
               "-p", f"127.0.0.1:{port}:30000", "--label", "sparkkit.engine=sglang", "lmsysorg/sglang:spark",
               *SGLANG_CMD, *extra, fault=fault)


def test_pull_then_inspect(env):
    r = run(env, "docker", "image", "inspect", "lmsysorg/sglang:spark")
    assert r.returncode == 1 and "No such image: lmsysorg/sglang:spark" in r.stderr
    r = run(env, "docker", "pull", "lmsysorg/sglang:spark")
    assert r.returncode == 0 and "Digest: sha256:16dec654b13e" in r.stdout and "Status: Downloaded newer image" in r.stdout
    r = run(env, "docker", "image", "inspect", "lmsysorg/sglang:spark")
    info = json.loads(r.stdout)[0]
    assert info["Architecture"] == "arm64" and info["RepoDigests"][0].endswith("16dec654b13e4d10a2d9eefa0560e85fed0d1fc9536986e1dfb1bcb0077cbc7a")
    assert "Image is up to date" in run(env, "docker", "pull", "lmsysorg/sglang:spark").stdout


def test_run_serves_then_stop_stops(env):
    port = free_port()
    run(env, "docker", "pull", "lmsysorg/sglang:spark")
    r = docker_run_sglang(env, port)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 64 and int(cid, 16) >= 0
    models = wait_http(f"http://127.0.0.1:{port}/v1/models").json()
    assert models["data"][0]["id"] == "gpt-oss-120b"
    chat = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "gpt-oss-120b", "messages": []}).json()
    assert chat["choices"][0]["message"]["reasoning_content"] and chat["model"] == "gpt-oss-120b"
    ps = run(env, "docker", "ps", "--filter", "label=sparkkit.engine=sglang", "--format", "{{.ID}}").stdout.split()
    assert ps == [cid[:12]]
    st = json.loads(run(env, "docker", "inspect", "sglang").stdout)[0]
    assert st["State"]["Running"] and st["HostConfig"]["PortBindings"]["30000/tcp"][0]["HostPort"] == str(port)
    assert "The server is fired up and ready to roll!" in run(env, "docker", "logs", "--tail", "3", "sglang").stderr
    assert run(env, "docker", "stop", "sglang").stdout.strip() == "sglang"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    st = json.loads(run(env, "docker", "inspect", "sglang").stdout)[0]["State"]
    assert st["Status"] == "exited" and not st["Running"]
    assert run(env, "docker", "rm", "sglang").returncode == 0


def test_run_refuses_unpulled_image(env):
    r = run(env, "docker", "run", "-d", "nvcr.io/nvidia/vllm:26.05.post1-py3", "vllm", "serve", "openai/gpt-oss-120b")
    assert r.returncode == 125 and "Unable to find image 'nvcr.io/nvidia/vllm:26.05.post1-py3' locally" in r.stderr


def test_vllm_run_unknown_flag_exits_2(env):
    run(env, "docker", "pull", "nvcr.io/nvidia/vllm:26.05.post1-py3")
    port = free_port()
    r = run(env, "docker", "run", "-d", "--gpus", "all", "--name", "vllm", "-p", f"{port}:8000",
            "nvcr.io/nvidia/vllm:26.05.post1-py3", "vllm", "serve", "openai/gpt-oss-120b", "--enable-reasoning")
    assert r.returncode == 0
    st = json.loads(run(env, "docker", "inspect", "vllm").stdout)[0]["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 2
    assert "unrecognized arguments: --enable-reasoning" in run(env, "docker", "logs", "vllm").stderr


def test_vllm_serves_max_model_len(env):
    run(env, "docker", "pull", "nvcr.io/nvidia/vllm:26.05.post1-py3")
    port = free_port()
    r = run(env, "docker", "run", "-d", "--gpus", "all", "--name", "vllm", "-p", f"127.0.0.1:{port}:8000",
            "nvcr.io/nvidia/vllm:26.05.post1-py3", "vllm", "serve", "openai/gpt-oss-120b", "--max-model-len", "65536",
            "--served-model-name", "gpt-oss-120b", "--gpu-memory-utilization", "0.8", "--no-enable-prefix-caching")
    assert r.returncode == 0, r.stderr
    m = wait_http(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]
    assert m["id"] == "gpt-oss-120b" and m["max_model_len"] == 65536
    assert "Application startup complete." in run(env, "docker", "logs", "vllm").stdout
    run(env, "docker", "rm", "-f", "vllm")


@pytest.mark.parametrize("fault,argv,code,text", [
    ("no-daemon", ["docker", "ps"], 1, "Cannot connect to the Docker daemon"),
    ("no-permission", ["docker", "info"], 1, "permission denied while trying to connect to the Docker daemon socket"),
])
def test_daemon_faults(env, fault, argv, code, text):
    r = run(env, *argv, fault=fault)
    assert r.returncode == code and text in r.stderr


def test_no_nvidia(env):
    assert "nvidia" in run(env, "docker", "info", "--format", "{{json .Runtimes}}").stdout
    assert "nvidia" not in run(env, "docker", "info", "--format", "{{json .Runtimes}}", fault="no-nvidia").stdout
    run(env, "docker", "pull", "lmsysorg/sglang:spark")
    r = docker_run_sglang(env, free_port(), fault="no-nvidia")
    assert r.returncode == 125 and 'could not select device driver "" with capabilities: [[gpu]]' in r.stderr


def test_port_taken(env):
    run(env, "docker", "pull", "lmsysorg/sglang:spark")
    r = docker_run_sglang(env, 30000, fault="port-taken")
    assert r.returncode == 125 and "Bind for 127.0.0.1:30000 failed: port is already allocated" in r.stderr


def test_oom_faults(env):
    run(env, "docker", "pull", "lmsysorg/sglang:spark")
    docker_run_sglang(env, free_port(), fault="oom")
    st = json.loads(run(env, "docker", "inspect", "sglang").stdout)[0]["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 1
    assert "Not enough memory. Please try to increase --mem-fraction-static" in run(env, "docker", "logs", "sglang").stderr
    run(env, "docker", "rm", "sglang")
    docker_run_sglang(env, free_port(), fault="oom-kill")
    st = json.loads(run(env, "docker", "inspect", "sglang").stdout)[0]["State"]
    assert st["ExitCode"] == 137 and st["OOMKilled"] is True


def test_unknown_flag_fault(env):
    run(env, "docker", "pull", "lmsysorg/sglang:spark")
    docker_run_sglang(env, free_port(), fault="unknown-flag")
    st = json.loads(run(env, "docker", "inspect", "sglang").stdout)[0]["State"]
    assert st["ExitCode"] == 2
    assert "launch_server.py: error: unrecognized arguments: --served-model-name" in run(env, "docker", "logs", "sglang").stderr


def test_no_messages_and_slow_ready(env):
    run(env, "docker", "pull", "lmsysorg/sglang:spark")
    port = free_port()
    docker_run_sglang(env, port, fault="no-messages,slow-ready")
    first = wait_http(f"http://127.0.0.1:{port}/health", ok=(200, 503))
    assert first.status_code in (200, 503)
    wait_http(f"http://127.0.0.1:{port}/health")
    r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json={"model": "gpt-oss-120b", "max_tokens": 8, "messages": []})
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    run(env, "docker", "rm", "-f", "sglang")


# ------------------------------------------------------------------------ ollama
@pytest.fixture
def ollama_server(env):
    port = free_port()
    env["OLLAMA_HOST"] = f"127.0.0.1:{port}"
    procs = []

    def start(fault=None):
        argv = [sys.executable, str(HERE / "replay_http.py"), "--engine", "ollama", "--port", str(port),
                "--state", env["SPARKKIT_REPLAY_STATE"]] + (["--fault", fault] if fault else [])
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert "ready" in p.stdout.readline()
        procs.append(p)
        return f"http://127.0.0.1:{port}"
    yield start
    for p in procs:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)


def test_ollama_down(env):
    env["OLLAMA_HOST"] = f"127.0.0.1:{free_port()}"
    r = run(env, "ollama", "pull", "gpt-oss:120b")
    assert r.returncode == 1 and "could not connect to ollama server" in r.stderr
    r = run(env, "ollama", "--version")
    assert r.returncode == 0 and "Warning: could not connect to a running Ollama instance" in r.stdout


def test_ollama_pull_create_load(env, ollama_server, tmp_path):
    url = ollama_server()
    assert run(env, "ollama", "--version").stdout.strip() == "ollama version is 0.32.15"
    r = run(env, "ollama", "pull", "gpt-oss:120b")
    assert r.returncode == 0 and "65 GB" in r.stdout and r.stdout.rstrip().endswith("success")
    r = run(env, "ollama", "pull", "no-such:1b")
    assert r.returncode == 1 and "pull model manifest: file does not exist" in r.stderr
    assert "gpt-oss:120b" in run(env, "ollama", "list").stdout
    # the old /api/create shape is refused by the recorded version
    old = httpx.post(url + "/api/create", json={"name": "x", "modelfile": "FROM gpt-oss:120b"})
    assert old.status_code == 400
    (tmp_path / "Modelfile").write_text("FROM gpt-oss:120b\nPARAMETER num_ctx 131072\n")
    r = run(env, "ollama", "create", "gpt-oss-120b-128k", "-f", str(tmp_path / "Modelfile"))
    assert r.returncode == 0 and r.stdout.rstrip().endswith("success")
    show = httpx.post(url + "/api/show", json={"model": "gpt-oss-120b-128k"}).json()
    assert "num_ctx" in show["parameters"] and "thinking" in show["capabilities"]
    load = httpx.post(url + "/api/generate", json={"model": "gpt-oss-120b-128k", "keep_alive": -1}).json()
    assert load["done_reason"] == "load"
    ps = httpx.get(url + "/api/ps").json()["models"]
    assert ps[0]["name"] == "gpt-oss-120b-128k:latest" and ps[0]["context_length"] == 131072
    assert "131072" in run(env, "ollama", "ps").stdout
    assert run(env, "ollama", "stop", "gpt-oss-120b-128k").returncode == 0
    assert httpx.get(url + "/api/ps").json()["models"] == []
    msg = httpx.post(url + "/v1/messages", json={"model": "gpt-oss:120b", "max_tokens": 8, "messages": []}).json()
    assert msg["model"] == "gpt-oss:120b" and msg["content"][0]["type"] == "thinking"
    assert httpx.post(url + "/v1/messages/count_tokens", json={}).status_code == 404


def test_ollama_ctx_ignored(env, ollama_server):
    url = ollama_server("ctx-ignored")
    httpx.post(url + "/api/pull", json={"model": "gpt-oss:120b", "stream": False})
    httpx.post(url + "/api/create", json={"model": "big", "from": "gpt-oss:120b", "parameters": {"num_ctx": 131072}, "stream": False})
    httpx.post(url + "/api/generate", json={"model": "big", "keep_alive": -1})
    assert httpx.get(url + "/api/ps").json()["models"][0]["context_length"] == 4096


def test_ollama_launch_help(env):
    r = run(env, "ollama", "launch", "--help")
    assert r.returncode == 0 and "claude          Claude Code" in r.stdout


def test_replay_server_sigterm_removes_pid(env, tmp_path):
    port = free_port()
    p = subprocess.Popen([sys.executable, str(HERE / "replay_http.py"), "--engine", "vllm", "--port", str(port),
                          "--state", env["SPARKKIT_REPLAY_STATE"]], stdout=subprocess.PIPE, text=True)
    assert "ready" in p.stdout.readline()
    pidfile = pathlib.Path(env["SPARKKIT_REPLAY_STATE"]) / f"replay_http-{port}.pid"
    assert pidfile.read_text() == str(p.pid)
    assert httpx.get(f"http://127.0.0.1:{port}/version").json()["version"] == "0.33.0"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0 and not pidfile.exists()
