"""Every runbook, 01 through 07, with `-p engine ollama|sglang|vllm` on a GB10 host snapshot.

What cannot run here (Docker on a Spark, Ollama, SGLang, vLLM) is driven by recorded real outputs
through the same code path the real thing takes: `docker` and `ollama` on PATH replay recordings and
`docker run` starts a replay HTTP server (tests/replay, each recording with its source); the Hub is
tests/hubserver.py serving an `openai/gpt-oss-120b`-shaped repo (with the `original/` and `metal/`
folders 03 must skip). llama.cpp's own path is tests/test_e2e.py and the rest of the suite.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hubserver import HubServer
from sparkkit.serve import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REPLAY = ROOT / "tests" / "replay"
GB10 = ROOT / "tests" / "snapshots" / "dgx-spark-fe-7.3.1"


def make_repo(root: Path) -> Path:
    """A tiny repo shaped like openai/gpt-oss-120b at the root, with the folders 03 must leave out."""
    repo = root / "openai" / "gpt-oss-120b"
    (repo / "original").mkdir(parents=True)
    (repo / "metal").mkdir()
    (repo / "config.json").write_text(json.dumps({"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
                                                  "num_hidden_layers": 36, "max_position_embeddings": 131072}))
    (repo / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    for i in (1, 2):
        (repo / f"model-0000{i}-of-00002.safetensors").write_bytes(os.urandom(200_000))
    (repo / "tokenizer.json").write_text("{}")
    (repo / "original" / "model.safetensors").write_bytes(os.urandom(300_000))
    (repo / "metal" / "model.bin").write_bytes(os.urandom(300_000))
    return repo


class Box:
    """One owner's box: a SPARKKIT_HOME, the replayed tools on PATH, the runs folder."""

    def __init__(self, tmp: Path, engine: str, hub: str, fault: str = ""):
        self.tmp, self.engine = tmp, engine
        state = tmp / "replay"
        state.mkdir()
        self.env = {**os.environ, "SPARKKIT_HOME": str(tmp / "home"), "SPARKKIT_RUNS": str(tmp / "runs"),
                    "PATH": f"{REPLAY / 'bin'}:{os.environ['PATH']}", "SPARKKIT_REPLAY_STATE": str(state),
                    "HF_ENDPOINT": hub, "PYTHONPATH": str(ROOT / "src"), "SPARKKIT_HOST_SNAPSHOT": str(GB10),
                    # a GB10's 07 wires the user's own ~/.claude: here that is a home of the test's
                    "HOME": str(tmp / "user-home")}
        (tmp / "user-home").mkdir()
        if fault:
            self.env["SPARKKIT_REPLAY_FAULT"] = fault
        self.ollama = None
        if engine == "ollama":
            port = free_port()
            self.env["OLLAMA_HOST"] = f"127.0.0.1:{port}"
            self.ollama = subprocess.Popen([sys.executable, str(REPLAY / "replay_http.py"), "--engine", "ollama",
                                            "--port", str(port), "--state", str(state)], env=self.env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert "ready" in self.ollama.stdout.readline()

    def papermill(self, n: str, *params: str):
        nb = next((ROOT / "runbooks").glob(f"{n}-*.ipynb"))
        argv = [BIN / "papermill", nb, self.tmp / f"{nb.stem}.out.ipynb", "-p", "engine", self.engine, *params]
        return subprocess.run([str(a) for a in argv], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=600)

    def record(self, step: str) -> dict:
        return json.loads(sorted((self.tmp / "runs").glob(f"*/{step}.json"))[-1].read_text())

    def state(self) -> dict:
        return json.loads((self.tmp / "home" / "state.json").read_text())

    def sparkkit(self, *args: str):
        return subprocess.run([str(BIN / "sparkkit"), *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=300)

    def close(self):
        self.sparkkit("stop")
        if self.ollama:
            self.ollama.terminate()
            self.ollama.wait(10)
        docker = json.loads((Path(self.env["SPARKKIT_REPLAY_STATE"]) / "docker.json").read_text()) \
            if (Path(self.env["SPARKKIT_REPLAY_STATE"]) / "docker.json").exists() else {}
        for c in (docker.get("containers") or {}).values():     # never leave a replay server behind
            pid = c.get("ServerPid") if isinstance(c, dict) else None
            if pid:
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    make_repo(root)
    from sparkkit import download
    from sparkkit.tinymodel import split_gguf
    whole = download.place_embedded(tmp_path_factory.mktemp("gen")).path   # the GGUF repo's shards, tiny
    split_gguf(whole, root / "ggml-org" / "gpt-oss-120b-GGUF", "gpt-oss-120b-mxfp4", 3)
    with HubServer(root) as server:
        yield server


@pytest.mark.parametrize("engine", ["sglang", "vllm", "ollama"])
def test_all_seven_runbooks_with_a_replayed_engine_on_a_gb10(tmp_path, hub, engine):
    box = Box(tmp_path, engine, hub.endpoint)
    try:
        out = box.papermill("01")
        assert box.record("01-preflight")["results"]["engine"] == engine, out.stderr[-1500:]
        assert box.state()["choice"] == {**box.state()["choice"], "model": "gpt-oss-120b", "engine": engine}
        out = box.papermill("02")
        assert out.returncode == 0, out.stderr[-2000:]
        plan = box.state()["plan"]
        assert plan["engine"] == engine and plan["serving"]["engine"] == engine
        out = box.papermill("03", "-p", "hf_endpoint", hub.endpoint)
        assert out.returncode == 0, out.stderr[-2000:]
        model = box.state()["model"]
        assert model["engine"] == engine
        if engine != "ollama":          # the safetensors at the root, never original/ or metal/
            placed = sorted(p.name for p in Path(model["path"]).iterdir() if not p.name.startswith("."))
            assert "original" not in placed and "metal" not in placed and "config.json" in placed
        out = box.papermill("04")
        assert out.returncode == 0, out.stderr[-2000:]
        out = box.papermill("05")
        assert out.returncode == 0, out.stderr[-3000:]
        server = box.state()["server"]
        assert server["engine"] == engine
        if engine != "ollama":
            argv = " ".join(server["argv"])
            assert "-p 127.0.0.1:" in argv and "--served-model-name gpt-oss-120b" in argv
            fraction = "--mem-fraction-static" if engine == "sglang" else "--gpu-memory-utilization"
            assert f"{fraction} {plan['serving']['mem_fraction']}" in argv     # 02's plan, launched
            assert str(plan["serving"]["context"]) in argv
        else:
            assert server["context_length"] == plan["serving"]["context"]
        out = box.papermill("06", "-p", "repeats", "1", "-p", "depths", "[0]", "-p", "pp_tokens", "64",
                            "-p", "tg_tokens", "8")
        assert out.returncode == 0, out.stderr[-3000:]
        # the real Claude Code CLI through the replayed vLLM's /v1/messages (a scripted Read, as the tiny model's)
        out = box.papermill("07", "-p", "run_cli", "False")             # a GB10's default: the launcher, no file
        assert out.returncode == 0, out.stderr[-3000:]
        rec = box.record("07-wire-claude")
        assert rec["results"]["scope"] == "launcher" and rec["results"]["settings"] is None
        assert "nothing was written" in rec["results"]["for_whom"]
        assert not (tmp_path / "user-home" / ".claude" / "settings.json").exists()
        out = box.papermill("07", "-p", "run_cli", str(engine == "vllm"), "-p", "scope", "user")
        assert out.returncode == 0, out.stderr[-3000:]
        if engine == "vllm":
            cli = box.record("07-wire-claude")["results"]["cli"]
            assert cli["exit_code"] == 0 and [t["name"] for t in cli["tool_uses"]] == ["Read"], cli
        env = json.loads((tmp_path / "user-home" / ".claude" / "settings.json").read_text())["env"]
        assert env["ANTHROPIC_BASE_URL"] == server["base_url"] and env["ANTHROPIC_MODEL"] == server["launch"]["alias"]
    finally:
        box.close()


# ----------------------------------------------------------------------------- in-process: faults and bad input
@pytest.fixture
def gb10(tmp_path, hub, monkeypatch):
    """This process as an owner's GB10 (snapshot acting as this machine) with the replayed tools on PATH."""
    state = tmp_path / "replay"
    state.mkdir()
    for k, v in {"SPARKKIT_HOME": str(tmp_path / "home"), "SPARKKIT_RUNS": str(tmp_path / "runs"),
                 "PATH": f"{REPLAY / 'bin'}:{os.environ['PATH']}", "SPARKKIT_REPLAY_STATE": str(state),
                 "SPARKKIT_HOST_SNAPSHOT": str(GB10), "HOME": str(tmp_path / "user-home")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SPARKKIT_REPLAY_FAULT", raising=False)
    yield tmp_path
    from sparkkit import serve
    serve.stop()
    docker = state / "docker.json"
    for c in (json.loads(docker.read_text()).get("containers") or {}).values() if docker.exists() else ():
        if c.get("ServerPid"):
            try:
                os.kill(c["ServerPid"], 15)
            except ProcessLookupError:
                pass


def up_to_04(engine: str, hub) -> None:
    from sparkkit import download, engines, host, plan
    host.run(engine=engine)
    plan.run()
    download.run(hf_endpoint=hub.endpoint)
    engines.prepare()


def test_docker_missing_pieces_are_one_sentence_with_the_fix(gb10, hub, monkeypatch):
    from sparkkit import download, engines, host, plan
    from sparkkit.errors import ServeError
    host.run(engine="vllm")
    plan.run()
    download.run(hf_endpoint=hub.endpoint)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")                          # no docker at all
    with pytest.raises(ServeError, match=r"^docker is not installed: sudo apt install docker.io"):
        engines.prepare()
    monkeypatch.setenv("PATH", f"{REPLAY / 'bin'}:/usr/bin:/bin")
    for fault, sentence in (("no-daemon", "the daemon is not running — sudo systemctl enable --now docker"),
                            ("no-permission", "permission denied on the Docker socket — add yourself to the docker"),
                            ("no-nvidia", "docker has no NVIDIA runtime .* install the NVIDIA container toolkit")):
        monkeypatch.setenv("SPARKKIT_REPLAY_FAULT", fault)
        with pytest.raises(ServeError, match=sentence):
            engines.prepare()
    monkeypatch.delenv("SPARKKIT_REPLAY_FAULT")
    with pytest.raises(ServeError, match=r"image is not pulled: docker pull nvcr.io/nvidia/vllm@sha256:9204569b.*"
                                         r"\(9.6 GB\)"):
        engines.prepare(pull=False)                                     # the pull command, and its size first
    with pytest.raises(ServeError, match="image is not pulled: run 04-engine"):
        from sparkkit import serve
        records_engine = {"engine": "vllm", "runtime": {"kind": "container"},
                          "image": {"pinned_ref": "nvcr.io/nvidia/vllm@sha256:9204569b17ee4c0eff75194b8e6e458479c8aee"
                                                  "18953b5ab9cf359fcdac659e2"}}
        from sparkkit import records
        records.update_state("engine", records_engine)
        serve.run()


@pytest.mark.parametrize("engine", ["sglang", "vllm"])
@pytest.mark.parametrize("fault,diagnosis", [
    ("oom", "out of memory"),
    ("oom-kill", "out of memory"),
    ("unknown-flag", "this image does not know the flag"),
    ("port-taken", "the port is taken")])
def test_a_container_that_exits_is_diagnosed_from_its_log(gb10, hub, monkeypatch, engine, fault, diagnosis):
    from sparkkit import records, serve
    from sparkkit.errors import ServeError
    up_to_04(engine, hub)
    monkeypatch.setenv("SPARKKIT_REPLAY_FAULT", fault)
    with pytest.raises(ServeError, match=diagnosis) as e:
        serve.run()
    assert fault == "port-taken" or "Last lines of docker logs" in str(e.value)
    assert "server" not in records.load_state() and serve.recorded_servers() == []   # nothing half-recorded
    state = json.loads((gb10 / "replay" / "docker.json").read_text())
    assert all(c["Status"] != "running" for c in state["containers"].values())     # no container left running


def test_the_same_launch_is_kept_a_new_one_replaces_and_stop_stops_only_ours(gb10, hub, monkeypatch):
    from sparkkit import plan, records, serve
    from sparkkit.engines import container
    up_to_04("sglang", hub)
    first = serve.run()
    again = serve.run()
    assert again.kept and again.container == first.container                  # nothing restarted
    # a stranger's container from the same image, on another port: never stopped by sparkkit
    stranger = container.docker("run", "-d", "--name", "not-sparkkit", "-p", f"127.0.0.1:{free_port()}:30000",
                                records.load_state()["engine"]["image"]["pinned_ref"], "python3", "-m",
                                "sglang.launch_server", "--model-path", "/m", "--port", "30000").stdout.strip()
    plan.run(context=65536)                                                      # a new plan: a new launch
    second = serve.run()
    assert not second.kept and second.container != first.container
    assert container.inspect(first.container) is None                           # replaced once the new one was healthy
    assert "--context-length 65536" in " ".join(second.argv)
    assert serve.stop()["stopped"]
    assert container.inspect(stranger)["State"]["Running"]                       # left alone
    assert "nothing to stop" in serve.stop()["message"]
    container.docker("rm", "-f", stranger)


def test_a_failed_replacement_on_the_same_port_starts_the_old_container_again(gb10, hub, monkeypatch):
    from sparkkit import plan, records, serve
    from sparkkit.engines import container
    from sparkkit.errors import ServeError
    up_to_04("vllm", hub)
    first = serve.run()
    plan.run(context=32768)
    monkeypatch.setenv("SPARKKIT_REPLAY_FAULT", "oom")
    with pytest.raises(ServeError, match="(?s)out of memory.*previous sparkkit container .* was started again"):
        serve.run()
    monkeypatch.delenv("SPARKKIT_REPLAY_FAULT")
    assert container.inspect(first.container)["State"]["Running"]
    assert httpx.get(f"{first.base_url}/health").status_code == 200
    assert records.load_state()["server"]["container"] == first.container


def test_ollama_without_the_service_or_the_cli_and_a_context_it_ignores(gb10, hub, monkeypatch):
    from sparkkit import download, engines, host, plan, serve
    from sparkkit.errors import ServeError
    host.run(engine="ollama")
    plan.run()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(ServeError, match=r"Ollama is not installed: curl -fsSL https://ollama.com/install.sh \| sh"):
        engines.prepare()
    monkeypatch.setenv("PATH", f"{REPLAY / 'bin'}:/usr/bin:/bin")
    port = free_port()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    with pytest.raises(ServeError, match="the Ollama service does not answer .* sudo systemctl enable --now ollama"):
        engines.prepare()
    proc = subprocess.Popen([sys.executable, str(REPLAY / "replay_http.py"), "--engine", "ollama", "--port",
                             str(port), "--state", str(gb10 / "replay"), "--fault", "ctx-ignored"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "ready" in proc.stdout.readline()
        download.run()
        ready = engines.prepare()
        assert ready.messages and ready.launch_claude
        started = serve.run()
        verdict, head, _ = started.record()
        assert verdict == "warn" and "context 4096, not the 131072 02 planned" in head
        assert "OLLAMA_CONTEXT_LENGTH=131072" in head
        assert "sudo systemctl" not in " ".join(started.argv)              # sparkkit never touches the service
        serve.stop()
        assert httpx.get(f"http://127.0.0.1:{port}/api/version").status_code == 200   # the service still runs
    finally:
        proc.terminate()
        proc.wait(10)


def test_engine_other_than_01s_is_refused_naming_the_command(gb10, hub):
    from sparkkit import download, host, serve
    from sparkkit.errors import ParameterError
    host.run(engine="vllm")
    with pytest.raises(ParameterError, match=r"parameter `engine`: got 'sglang'; accepted: empty or vllm in 05-serve: "
                                             r"01 chose vllm; .*sparkkit run --engine sglang"):
        serve.run(engine="sglang")
    with pytest.raises(ParameterError, match="parameter `source`.*a generated stand-in is a GGUF: llama.cpp only"):
        download.run(source="generate")


def test_an_engine_without_v1_messages_is_bridged_or_refused(tmp_path, hub, monkeypatch):
    """06 finds no /v1/messages (an older SGLang image): a warning, not a failure; 07 puts the LiteLLM bridge
    in front and wires Claude Code to it. With the bridge's port taken by someone else, 07 refuses, saying
    why, and writes no settings."""
    box = Box(tmp_path, "sglang", hub.endpoint, fault="no-messages")
    box.env["SPARKKIT_BRIDGE_VENV"] = str(ROOT / ".sparkkit" / "bridge-venv")   # installed once per machine
    try:
        for n in ("01", "02"):
            assert box.papermill(n).returncode == 0
        assert box.papermill("03", "-p", "hf_endpoint", hub.endpoint).returncode == 0
        for n in ("04", "05"):
            out = box.papermill(n)
            assert out.returncode == 0, out.stderr[-2000:]
        out = box.papermill("06", "-p", "repeats", "1", "-p", "depths", "0", "-p", "pp_tokens", "64",
                            "-p", "tg_tokens", "8")
        assert out.returncode == 0, out.stderr[-2000:]
        record = box.record("06-verify")
        assert record["verdict"] == "warn" and "absent: Anthropic /v1/messages" in record["headline"]
        assert box.state()["verify"]["messages"] is False
        # someone else on the bridge's port: 07 refuses in one sentence, nothing written
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 4000))
            squatter.listen()
            out = box.papermill("07", "-p", "run_cli", "False")
        assert out.returncode != 0 and "07 will not wire Claude Code to http://127.0.0.1:30000: it has no " \
                                       "/v1/messages" in out.stderr
        settings = box.tmp / "user-home" / ".claude" / "settings.json"      # scope user on a GB10: the user's
        assert not settings.exists()
        out = box.papermill("07", "-p", "run_cli", "False", "-p", "scope", "user")
        assert out.returncode == 0, out.stderr[-3000:]
        env = json.loads(settings.read_text())["env"]
        bridge = json.loads(box.sparkkit("bridge", "status").stdout)
        assert bridge["running"] and env["ANTHROPIC_BASE_URL"] == bridge["base_url"] != box.state()["server"]["base_url"]
        r = httpx.post(f"{bridge['base_url']}/v1/messages", headers={"Authorization": f"Bearer {env['ANTHROPIC_AUTH_TOKEN']}"},
                       json={"model": "claude-sonnet-4-5", "max_tokens": 64,
                             "messages": [{"role": "user", "content": "Say hello."}]}, timeout=120)
        assert r.status_code == 200 and r.json()["type"] == "message"     # Claude's API, over the engine's OpenAI one
        assert "stopped the sparkkit bridge" in box.sparkkit("stop").stdout
    finally:
        box.close()


def test_sglang_with_the_120b_says_the_swap_01_asks_for_again_at_launch(monkeypatch):
    from sparkkit.engines import sglang
    monkeypatch.setenv("SPARKKIT_HOST_SNAPSHOT", str(ROOT / "tests" / "snapshots" / "asus-gx10-dgxos-7.6.0"))
    said = sglang.swap_warning("gpt-oss-120b")          # 32 GiB of swap; SGLang's 120B load wants 64
    assert said.startswith("warning: swap 32.0 GiB") and "fallocate -l 33G" in said
    assert sglang.swap_warning("gpt-oss-20b") == ""


def test_llamacpp_on_a_gb10_without_cuda_builds_first(tmp_path, hub):
    """The llama.cpp path on a GB10 snapshot, as far as a box without CUDA goes: 01-03 as on the Spark (the three
    GGUF shards, verified), 04 renders the sm_121a build it would run (-p build no), 05 says build first."""
    box = Box(tmp_path, "llamacpp", hub.endpoint)
    try:
        for n in ("01", "02"):
            assert box.papermill(n).returncode == 0
        assert box.papermill("03", "-p", "hf_endpoint", hub.endpoint).returncode == 0
        assert Path(box.state()["model"]["path"]).name == "gpt-oss-120b-mxfp4-00001-of-00003.gguf"
        out = box.papermill("04", "-p", "build", "no")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "121a-real" in " ".join(box.state()["engine"]["build_commands"])
        out = box.papermill("05")
        assert out.returncode != 0 and "llama-server is not built yet: run 04-engine with -p build yes" in out.stderr
        assert box.record("05-serve")["verdict"] == "fail"
    finally:
        box.close()
