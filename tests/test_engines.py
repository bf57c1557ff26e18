"""Every runbook, 01 through 07, with `-p engine ollama|sglang|vllm` on a GB10 host snapshot.

What cannot run here (Docker on a Spark, Ollama, SGLang, vLLM) is driven by recorded real outputs
through the same code path the real thing takes: `docker` and `ollama` on PATH replay recordings and
`docker run` starts a replay HTTP server (tests/replay, each recording with its source); the Hub is
tests/hubserver.py serving an `openai/gpt-oss-120b`-shaped repo (with the `original/` and `metal/`
folders 03 must skip). llama.cpp's own path is tests/test_e2e.py and the rest of the suite.
"""
import json
import os
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
                    "HF_ENDPOINT": hub, "PYTHONPATH": str(ROOT / "src"), "SPARKKIT_HOST_SNAPSHOT": str(GB10)}
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
        out = box.papermill("07", "-p", "run_cli", "False")
        assert out.returncode == 0, out.stderr[-3000:]
    finally:
        box.close()
