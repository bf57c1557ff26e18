"""05 for a pair (llama.cpp RPC): the rpc-servers start before the head, stop with it, and never outlive a
failed launch; a taken port or an engine without RPC is one sentence before anything starts.

The processes are real (each is recorded and stopped by pid + start time + command line); the binaries are
stand-ins (tools/gpu_standin/fakes.py): `rpc-server` listens and prints the banner llama.cpp's prints, and
`llama-server` connects to every --rpc endpoint, as llama.cpp does before it loads, then serves with the
embedded llama.cpp. The split itself runs on GPUs in records/pair (tools/pair_standin)."""
import os
import socket
import sys
from pathlib import Path

import httpx
import pytest

from sparkkit import host, plan, records, serve
from sparkkit.download import place_embedded
from sparkkit.errors import ServeError

ROOT = Path(__file__).resolve().parents[1]


def _script(path: Path, kind: str) -> None:
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT / 'tools' / 'gpu_standin')!r})\n"
                    f"import fakes\nsys.exit(fakes.{kind}(sys.argv[1:]))\n")
    path.chmod(0o755)


def _two_free_ports() -> int:
    for _ in range(50):
        p = serve.free_port()
        if p < 65535 and not serve.port_in_use("127.0.0.1", p + 1):
            return p
    raise RuntimeError("no two free ports in a row")


@pytest.fixture
def pair_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "llama-server", "server")
    _script(bin_dir / "ggml-rpc-server", "rpc")
    host.run(model="embedded")
    placed = place_embedded(tmp_path / "home" / "models")
    records.update_state("model", {**placed.to_dict(), "alias": "tiny-gpt-oss", "engine": "llamacpp"})
    records.update_state("engine", {"engine": "llamacpp",
                                    "runtime": {"kind": "binary", "path": str(bin_dir / "llama-server")}})
    rpc_port = _two_free_ports()
    records.update_state("pair", {"peer": "loopback", "transport": "loopback", "host": "", "head_addr": "127.0.0.1",
                                  "peer_addr": "127.0.0.1", "peer_gpu_index": None, "peer_usable_bytes": None,
                                  "rpc_port": rpc_port, "status": "pass"})
    view = plan.run(context=4096, slots=2)
    yield tmp_path, view, rpc_port
    serve.stop()


def _running(bin_dir: Path) -> list[int]:
    """The processes still running one of this test's binaries (zombies awaiting their reaper are not)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(bin_dir) in (proc / "cmdline").read_text(errors="replace") and \
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _pids(server):
    return [server["pid"]] + [r["pid"] for r in server.get("rpc_servers") or []]


def test_a_pair_starts_the_rpc_servers_first_and_stop_stops_every_side(pair_home):
    tmp_path, view, rpc_port = pair_home
    sv = view.plan.serving
    assert sv.rpc == (f"127.0.0.1:{rpc_port}", f"127.0.0.1:{rpc_port + 1}") and len(view.plan.boxes) == 2
    started = serve.run(port=serve.free_port())
    server = records.load_state()["server"]
    recs = server["rpc_servers"]
    assert [r["endpoint"] for r in recs] == list(sv.rpc)
    assert all(serve.is_ours(r) for r in recs) and serve.is_ours(server)
    argv = server["argv"]
    assert argv[argv.index("--rpc") + 1] == ",".join(sv.rpc)
    assert argv[argv.index("-ts") + 1] == ",".join(map(str, sv.split))
    assert httpx.get(f"{started.base_url}/health").status_code == 200
    assert any(n.startswith(f"rpc-server 127.0.0.1:{rpc_port} ") for n in started.notes)
    assert "Starting RPC server" in Path(recs[0]["log"]).read_text()
    # what 05 shows as the owner's commands: each rpc-server, then llama-server; `sparkkit status` names both sides
    shown = started.spark_command()
    assert shown.index("-H 127.0.0.1 -p") < shown.index("# then here:") < shown.index("--rpc")
    st = serve.status()
    assert st["running"] and [r["running"] for r in st["rpc_servers"]] == [True, True]
    pids = _pids(server)
    out = serve.stop()
    assert out["stopped"]
    assert not set(pids) & set(_running(tmp_path / "bin"))


def test_an_rpc_port_held_by_someone_else_is_one_sentence_and_nothing_is_left_running(pair_home):
    tmp_path, view, rpc_port = pair_home
    with socket.socket() as s:
        s.bind(("127.0.0.1", rpc_port + 1))       # this box's own rpc-server port: the peer's starts first
        s.listen()
        with pytest.raises(ServeError, match=rf"127.0.0.1:{rpc_port + 1} already answers: a process sparkkit did "
                                             r"not start holds the rpc-server port"):
            serve.run(port=serve.free_port())
    assert not records.load_state().get("server")
    assert any((tmp_path / "home" / "server").glob(f"rpc-server-{rpc_port}-*.log"))  # the peer's did start …
    assert not _running(tmp_path / "bin")                                            # … and was stopped


def test_a_head_that_fails_takes_its_rpc_servers_down(pair_home):
    tmp_path, view, rpc_port = pair_home
    bad = tmp_path / "bin" / "llama-server"
    bad.write_text("#!/bin/sh\n[ \"$1\" = --help ] && exit 0\necho 'failed to load model' >&2\nexit 1\n")
    with pytest.raises(ServeError, match="exited with code 1 before it was ready"):
        serve.run(port=serve.free_port())
    assert not _running(tmp_path / "bin")                     # both rpc-servers went with the failed head
    assert not records.load_state().get("server")


def test_the_peer_over_ssh_is_started_checked_and_stopped_on_its_own_box(pair_home, monkeypatch):
    """transport ssh: every command for the peer goes through `ssh -o BatchMode=yes … HOST CMD`; this `ssh`
    runs CMD here (there is no second box in CI), so the real command lines are what is exercised."""
    tmp_path, view, rpc_port = pair_home
    log = tmp_path / "ssh.log"
    ssh = tmp_path / "bin" / "ssh"
    ssh.write_text("#!/bin/sh\n# skip ssh's options and the host; run the command as the remote shell would\n"
                   f"echo \"$@\" >> {log}\n"
                   "while [ $# -gt 1 ]; do case \"$1\" in -o) shift 2;; *) shift; break;; esac; done\n"
                   "exec sh -c \"$1\"\n")
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path / "peerhome"))
    pair = records.load_state()["pair"]
    records.update_state("pair", {**pair, "transport": "ssh", "host": "spark-b", "peer": "spark-b"})
    started = serve.run(port=serve.free_port())
    server = records.load_state()["server"]
    peer = server["rpc_servers"][0]
    assert peer["where"] == "ssh" and peer["host"] == "spark-b" and peer["start_ticks"]
    assert "BatchMode=yes" in log.read_text() and "spark-b" in log.read_text()
    assert httpx.get(f"{started.base_url}/health").status_code == 200
    serve.stop()
    assert not _running(tmp_path / "bin")


def test_the_embedded_engine_cannot_serve_a_pair_and_says_what_to_do(pair_home):
    records.update_state("engine", {"engine": "llamacpp", "runtime": {"kind": "embedded"}})
    with pytest.raises(ServeError, match="embedded engine has no RPC backend.*04-engine"):
        serve.run(port=serve.free_port())
    assert not records.load_state().get("server")


def test_a_pair_01_found_not_ready_starts_nothing(pair_home):
    """The second box unreachable, other versions, the link down: 01 said so; 05 repeats it and starts nothing."""
    tmp_path, view, rpc_port = pair_home
    pair = records.load_state()["pair"]
    records.update_state("pair", {**pair, "status": "fail", "checks": [
        {"name": "SSH to the second box", "status": "fail", "value": "spark-b does not answer on port 22",
         "why": "", "fix": "ssh-copy-id spark-b"}]})
    with pytest.raises(ServeError, match=r"^01 found the pair not ready \(SSH to the second box\): spark-b does not "
                                         r"answer on port 22 — ssh-copy-id spark-b; fix it and re-run 01-preflight"):
        serve.run(port=serve.free_port())
    assert not _running(tmp_path / "bin") and not records.load_state().get("server")
