"""05 on two Sparks: vLLM (Ray head + worker) and SGLang (--nnodes 2) tensor parallel 2, one launch.

The engines run through the replayed `docker` (tests/replay: a two-node start is replayed from recorded real
logs, the head answering only once its worker's node is up) and a fake `ssh` first on PATH that runs the remote
command on this box with the peer's own replay state (tests/replay/sshbin/ssh), so the real ssh argv and its
quoting are exercised. The state's "pair" section is written here, as 01 writes it.
"""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hubserver import HubServer
from sparkkit.serve import free_port

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT / "tests" / "replay"
GB10 = ROOT / "tests" / "snapshots" / "dgx-spark-fe-7.3.1"
PEER = "spark-b"


def make_repo(root: Path) -> None:
    repo = root / "openai" / "gpt-oss-120b"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text(json.dumps({"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
                                                  "num_hidden_layers": 36, "max_position_embeddings": 131072}))
    (repo / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    for i in (1, 2):
        (repo / f"model-0000{i}-of-00002.safetensors").write_bytes(os.urandom(100_000 + i))
    (repo / "tokenizer.json").write_text("{}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    make_repo(root)
    with HubServer(root) as server:
        yield server


@pytest.fixture
def box(tmp_path, monkeypatch):
    """This process as the head GB10; the peer is a second replay state reached through the fake ssh."""
    for d in ("replay", "peer-replay", "net"):
        (tmp_path / d).mkdir()
    env = {"SPARKKIT_HOME": str(tmp_path / "home"), "SPARKKIT_RUNS": str(tmp_path / "runs"),
           "PATH": f"{REPLAY / 'sshbin'}:{REPLAY / 'bin'}:{os.environ['PATH']}",
           "SPARKKIT_REPLAY_STATE": str(tmp_path / "replay"), "SPARKKIT_REPLAY_NET": str(tmp_path / "net"),
           "SPARKKIT_FAKE_SSH_STATE": str(tmp_path / "peer-replay"), "SPARKKIT_FAKE_SSH_LOG": str(tmp_path / "ssh.log"),
           "SPARKKIT_HOST_SNAPSHOT": str(GB10), "HOME": str(tmp_path / "user-home")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("SPARKKIT_REPLAY_FAULT", "SPARKKIT_FAKE_SSH_DOWN", "SPARKKIT_FAKE_SSH_MAP"):
        monkeypatch.delenv(k, raising=False)
    yield tmp_path
    from sparkkit import serve
    try:
        serve.stop()
    except Exception:
        pass
    for d in ("replay", "peer-replay"):          # never leave a replay server or node process behind
        path = tmp_path / d / "docker.json"
        for c in (json.loads(path.read_text()).get("containers") or {}).values() if path.exists() else ():
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


def ref() -> str:
    from sparkkit import records
    return records.load_state()["engine"]["image"]["pinned_ref"]


def peer_docker(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """The peer's docker, as the owner would run it there."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SPARKKIT_REPLAY_STATE": str(tmp / "peer-replay")})


def containers(state_dir: Path) -> dict:
    path = state_dir / "docker.json"
    return json.loads(path.read_text())["containers"] if path.exists() else {}


def write_pair(transport: str = "ssh", **changes) -> dict:
    from sparkkit import records
    pair = {"peer": f"nvidia@{PEER}" if transport == "ssh" else "loopback", "transport": transport,
            "host": f"nvidia@{PEER}" if transport == "ssh" else "", "head_addr": "192.168.100.10",
            "peer_addr": "192.168.100.11", "iface": "enp1s0f1np1", "peer_iface": "enP2p1s0f1np1",
            "link_mbps": 200000, "mtu": 9000, "peer_gpu_index": 0, "peer_usable_bytes": 120 * 2**30,
            "peer_gpu": "NVIDIA GB10", "status": "pass", **changes}
    records.update_state("pair", pair)
    return pair


def without_launch_ids(argv: list[str]) -> list[str]:
    """argv less its --name and the launch-digest label (what 05 adds per launch)."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--name" or (a == "--label" and argv[i + 1].startswith("sparkkit.launch=")):
            skip = True
            continue
        out.append(a)
    return out


def ssh_calls(tmp: Path) -> list[list[str]]:
    log = tmp / "ssh.log"
    return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


# ----------------------------------------------------------------------------- a pair start, its command, its stop
@pytest.mark.parametrize("engine,transport", [("vllm", "ssh"), ("sglang", "ssh"), ("sglang", "loopback")])
def test_a_pair_starts_healthy_shows_both_sides_and_stops_both(box, hub, engine, transport):
    from sparkkit import engines, records, serve
    from sparkkit.engines import container
    from sparkkit.engines.serving import Serving
    up_to_04(engine, hub)
    if transport == "ssh":
        assert peer_docker(box, "pull", ref()).returncode == 0          # the peer holds the same image
    pair = write_pair(transport)
    port = free_port()
    started = serve.run(port=port)
    server = records.load_state()["server"]
    plan = records.load_state()["plan"]["serving"]

    # healthy: the head answers its health path and lists the model
    assert httpx.get(f"{started.base_url}/health").status_code == 200
    assert [m["id"] for m in httpx.get(f"{started.base_url}/v1/models").json()["data"]] == [server["served_model"]]
    # both sides run: the head here, the worker on the peer (its own Docker), with the same launch label
    peer_state = box / ("peer-replay" if transport == "ssh" else "replay")
    worker = server["pair"]["worker"]
    head_c, worker_c = container.inspect(server["container"]), containers(peer_state)[worker["container"]]
    assert head_c["State"]["Running"] and worker_c["Status"] == "running"
    assert head_c["Config"]["Labels"]["sparkkit.launch"] == worker_c["Labels"]["sparkkit.launch"] == server["digest"]
    assert worker_c["Labels"]["sparkkit.role"] == "worker" and head_c["Config"]["Labels"]["sparkkit.role"] == "head"
    # the head's log: tensor parallel 2 across two nodes, from the recorded real output
    log = container.log_tail(server["container"], 200)
    if engine == "vllm":
        assert "tensor_parallel_size=2" in log and f"Connected to Ray cluster" in log
        assert f"Connecting to existing Ray cluster at address: {pair['head_addr']}:6379" in log
        assert "Ray runtime started." in peer_docker(box, "logs", worker["container"]).stdout
    else:
        assert "tp_size=2, nnodes=2, node_rank=0" in log
        assert "CustomAllreduce is disabled because this process group spans across nodes." in log
        assert "Application startup complete." in log
    # one launch: TP 2, 02's per-sequence context and memory fraction unchanged, the link on each side
    head, wargv = server["argv"], worker["argv"]
    wdocker = shlex.split(wargv[-1]) if transport == "ssh" else wargv     # the docker run the peer's shell ran
    fraction = "--gpu-memory-utilization" if engine == "vllm" else "--mem-fraction-static"
    ctx = "--max-model-len" if engine == "vllm" else "--context-length"
    for side in (head, wdocker):
        assert "--network host" in " ".join(side) and f"MASTER_ADDR={pair['head_addr']}" in side
    for side in (head,) if engine == "vllm" else (head, wdocker):          # vLLM's worker is a Ray node only
        assert f"{fraction} {plan['mem_fraction']}" in " ".join(side) and f"{ctx} {plan['context']}" in " ".join(side)
    assert f"NCCL_SOCKET_IFNAME={pair['iface']}" in head and f"NCCL_SOCKET_IFNAME={pair['peer_iface']}" in wdocker
    assert "-p" not in head and "--env-file" not in wdocker              # host network; no key on the peer
    if engine == "vllm":
        script = head[-1]
        assert "--tensor-parallel-size 2 --distributed-executor-backend ray" in script
        assert f"--host 127.0.0.1 --port {port}" in script               # the API stays on loopback
        assert f"ray start --head --node-ip-address={pair['head_addr']} --port=6379" in script
        assert f"ray start --block --address={pair['head_addr']}:6379 --node-ip-address={pair['peer_addr']}" in wdocker[-1]
    else:
        h, w = " ".join(head), " ".join(wdocker)
        assert f"--host 127.0.0.1 --port {port} --tp 2 --nnodes 2 --node-rank 0 --dist-init-addr " \
               f"{pair['head_addr']}:20000" in h
        assert f"--node-rank 1 --dist-init-addr {pair['head_addr']}:20000" in w
        assert f"SGLANG_HOST_IP={pair['head_addr']}" in h and f"SGLANG_HOST_IP={pair['peer_addr']}" in w
    if transport == "ssh":   # the worker's docker went through ssh, batch mode, short timeout, to the peer
        assert wargv[:6] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"nvidia@{PEER}"]
        assert any(c[-1].startswith("docker run --name") for c in ssh_calls(box))
    else:
        assert wargv[:2] == ["docker", "run"] and ssh_calls(box) == []

    # the command 05 shows is the launch, both sides, in launch order: plan and launch cannot disagree
    serving = Serving.from_dict(records.load_state()["plan"]["serving"])
    cmd = engines.module(engine).command(serving, records.load_state()["model"], "127.0.0.1", port)
    assert cmd[:2] == ["sh", "-c"] and list(cmd.sides) == list(engines.module(engine).PAIR_ORDER)
    assert without_launch_ids(cmd.head) == without_launch_ids(head)
    worker_cmd = cmd.worker if transport == "loopback" else shlex.split(cmd.worker[-1])
    assert without_launch_ids(worker_cmd) == without_launch_ids(wdocker)
    assert cmd.worker[:6] == wargv[:6] if transport == "ssh" else cmd.worker[:2] == ["docker", "run"]
    shown = started.spark_command()
    assert "--tensor-parallel-size 2" in shown if engine == "vllm" else "--nnodes 2" in shown
    assert ("ConnectTimeout=5" in shown) == (transport == "ssh")

    # stop stops both (the worker checked and stopped on the peer)
    assert serve.stop()["stopped"]
    assert container.inspect(server["container"]) is None
    assert worker["container"] not in containers(peer_state)
    assert "nothing to stop" in serve.stop()["message"]


def test_a_peers_container_that_is_not_ours_is_left_alone(box, hub):
    """Stop checks the worker's id and launch label on the peer: another container there is never touched."""
    from sparkkit import records, serve
    up_to_04("sglang", hub)
    assert peer_docker(box, "pull", ref()).returncode == 0
    write_pair()
    serve.run(port=free_port())
    server = records.load_state()["server"]
    stranger = peer_docker(box, "run", "-d", "--name", "not-sparkkit", "--label",
                           f"sparkkit.launch={server['digest']}", ref(), "python3", "-m", "sglang.launch_server",
                           "--model-path", "/m", "--port", str(free_port())).stdout.strip()
    # a record pointing at the stranger (same label, other id) must not stop it
    records.update_state("server", {**server, "pair": {**server["pair"], "worker": {
        **server["pair"]["worker"], "container": stranger[:12] + "0" * 52}}})
    serve.stop()
    assert containers(box / "peer-replay")[stranger]["Status"] == "running"
    peer_docker(box, "rm", "-f", stranger)
    peer_docker(box, "rm", "-f", server["pair"]["worker"]["container"])


# ----------------------------------------------------------------------------- the worker starts, the head fails
@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_worker_up_head_fails_the_worker_is_removed_and_the_old_server_kept(box, hub, monkeypatch, engine):
    from sparkkit import records, serve
    from sparkkit.engines import container
    from sparkkit.errors import ServeError
    up_to_04(engine, hub)
    assert peer_docker(box, "pull", ref()).returncode == 0
    port = free_port()
    first = serve.run(port=port)                     # one Spark, as before
    assert "pair" not in records.load_state()["server"]
    write_pair()
    monkeypatch.setenv("SPARKKIT_REPLAY_FAULT", "oom")                   # the head runs out of memory
    with pytest.raises(ServeError, match=r"(?s)out of memory.*previous sparkkit container .* was started again"):
        serve.run(port=port)
    monkeypatch.delenv("SPARKKIT_REPLAY_FAULT")
    # the worker had started on the peer (its log kept), and is gone there now; so is the failed head
    worker_log = next((box / "home" / "server").glob("*-worker.log"))
    assert ("Ray runtime started." if engine == "vllm" else "TP1] Init torch distributed begin.") in worker_log.read_text()
    assert any(c[-1].startswith("docker run --name") for c in ssh_calls(box))
    assert any(c[-1].startswith("docker rm -f") for c in ssh_calls(box))
    assert containers(box / "peer-replay") == {}
    assert [c["Id"] for c in containers(box / "replay").values()] == [first.container]
    # the previous server serves again, and the state still names it
    assert container.inspect(first.container)["State"]["Running"]
    assert httpx.get(f"{first.base_url}/health").status_code == 200
    assert records.load_state()["server"]["container"] == first.container


def test_a_worker_that_exits_fails_the_launch_and_nothing_is_left(box, hub):
    """The peer's worker dies before the head is ready: one sentence from its log, both sides removed."""
    from sparkkit import serve
    from sparkkit.errors import ServeError
    up_to_04("vllm", hub)
    assert peer_docker(box, "pull", ref()).returncode == 0
    write_pair()
    # the worker's node process is killed as soon as the replayed docker starts it (a worker OOM-killed at join)
    code = ("import json, os, pathlib, time\n"
            f"p = pathlib.Path({str(box / 'peer-replay' / 'docker.json')!r})\n"
            "while True:\n"
            "    for c in (json.loads(p.read_text())['containers'].values() if p.exists() else ()):\n"
            "        try:\n"
            "            os.kill(c.get('ServerPid') or 0, 9) if c.get('ServerPid') else None\n"
            "        except ProcessLookupError:\n"
            "            pass\n"
            "    time.sleep(0.2)\n")
    killer = subprocess.Popen([sys.executable, "-c", code])
    try:
        with pytest.raises(ServeError, match=r"the vLLM worker on the peer nvidia@spark-b exited \(code 1\) before "
                                             r"the head was ready"):
            serve.run(port=free_port())
    finally:
        killer.kill()
        killer.wait()
    assert containers(box / "peer-replay") == {} and containers(box / "replay") == {}


# ----------------------------------------------------------------------------- bad input: one sentence, nothing started
def test_bad_pairs_are_one_sentence_with_the_fix_before_anything_starts(box, hub, monkeypatch):
    from sparkkit import records, serve
    from sparkkit.errors import ServeError
    up_to_04("vllm", hub)
    write_pair()
    pinned = ref()
    weights = Path(records.load_state()["model"]["path"])

    def refused(pattern: str) -> str:
        with pytest.raises(ServeError, match=pattern) as e:
            serve.run(port=free_port())
        assert containers(box / "replay") == {} and containers(box / "peer-replay") == {}   # nothing started
        assert "server" not in records.load_state()
        return str(e.value)

    monkeypatch.setenv("SPARKKIT_FAKE_SSH_DOWN", PEER)
    said = refused(r"^the peer nvidia@spark-b is unreachable over ssh \(ssh: connect to host spark-b port 22: "
                   r"Connection timed out\): check the link and that `ssh nvidia@spark-b` logs in without a password")
    assert "\n" not in said
    monkeypatch.delenv("SPARKKIT_FAKE_SSH_DOWN")

    refused(rf"^the pinned image {pinned.replace('.', '[.]')} is not on the peer nvidia@spark-b: pull it there "
            rf"\(ssh -o BatchMode=yes -o ConnectTimeout=5 nvidia@spark-b 'docker pull {pinned}'\), then re-run 05$")

    assert peer_docker(box, "pull", pinned).returncode == 0
    docker_json = box / "peer-replay" / "docker.json"
    good = docker_json.read_text()
    st = json.loads(good)
    for im in st["images"].values():                 # a build of the same ref with another image id
        im["id"] = "sha256:" + "ab" * 32
    docker_json.write_text(json.dumps(st))
    refused(rf"^the peer nvidia@spark-b holds another build of {pinned.replace('.', '[.]')} \(image sha256:abababab"
            r"abab, here sha256:[0-9a-f]{12}\): docker pull .* on both Sparks so they run the same one")
    docker_json.write_text(good)

    elsewhere = box / "peer-disk"                     # the peer's copy of the weights' folder
    elsewhere.mkdir()
    monkeypatch.setenv("SPARKKIT_FAKE_SSH_MAP", f"{weights}={elsewhere}")
    refused(rf"^the weights at {weights} are not on the peer nvidia@spark-b at the same path \(nothing is there\): "
            rf"vLLM and SGLang load them on both Sparks, so copy them: rsync -a {weights}/ nvidia@spark-b:{weights}/")
    (elsewhere / "config.json").write_bytes((weights / "config.json").read_bytes())
    shard = sorted(weights.glob("*.safetensors"))[0]
    (elsewhere / shard.name).write_bytes(shard.read_bytes()[:-1])          # one shard cut short
    refused(rf"\(2 of 3 files missing or of another size there, e\.g\. model-0000[12]-of-00002\.safetensors\)")
    monkeypatch.delenv("SPARKKIT_FAKE_SSH_MAP")

    write_pair("snapshot", peer=str(GB10), host="")
    refused(r"^the pair in the state is a recorded snapshot .*, not a live box, so 05 cannot start anything there: "
            r"re-run 01-preflight with -p peer user@host$")
    write_pair(status="fail", checks=[{"name": "ConnectX-7 link", "status": "fail", "value": "enp1s0f1np1 is down",
                                       "why": "", "fix": "plug the QSFP cable into both boxes"}])
    refused(r"^01 found the pair not ready \(ConnectX-7 link\): enp1s0f1np1 is down — plug the QSFP cable into both "
            r"boxes; fix it and re-run 01-preflight with -p peer nvidia@spark-b, nothing was started$")
    write_pair(head_addr="")
    refused(r"^the state's pair lacks head_addr \(the link 01 measures\): re-run 01-preflight with -p peer "
            r"nvidia@spark-b$")


def test_without_a_pair_nothing_changes(box, hub):
    """No "pair" (or None) in the state: the one-Spark launch and command, exactly as before."""
    from sparkkit import engines, records, serve
    from sparkkit.engines.serving import Serving
    up_to_04("vllm", hub)
    records.update_state("pair", None)
    port = free_port()
    started = serve.run(port=port)
    server = records.load_state()["server"]
    assert "pair" not in server and f"-p 127.0.0.1:{port}:8000" in " ".join(server["argv"])
    assert "--tensor-parallel-size" not in " ".join(server["argv"]) and ssh_calls(box) == []
    serving = Serving.from_dict(records.load_state()["plan"]["serving"])
    cmd = engines.module("vllm").command(serving, records.load_state()["model"], "127.0.0.1", port)
    assert type(cmd) is list and cmd[:2] == ["docker", "run"]
    assert without_launch_ids(cmd) == without_launch_ids(started.argv)
