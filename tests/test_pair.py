"""01 for a pair of GB10s: the second box's checks, proven on two recorded boxes and their one-line variations.

tests/snapshots/gx10-pair-a and gx10-pair-b are the ASUS GX10 of asus-gx10-dgxos-7.6.0 as the two nodes of a
pair NVIDIA's connect-two-sparks playbook set up (their PROVENANCE.md says where each file's shape comes from).
Each bad case copies pair-b and changes the one thing it is about, then asserts the one sentence that names
it and its fix. SSH is exercised through a fake `ssh` placed first on PATH (this machine runs no sshd): it
logs the argv it was given and runs the command here, or fails as an unreachable host does.
"""
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from sparkkit import host, pair, records, snapshot
from sparkkit.errors import ParameterError
from sparkkit.results import problems

ROOT = Path(__file__).resolve().parents[1]
SNAPS = ROOT / "tests" / "snapshots"
A, B = SNAPS / "gx10-pair-a", SNAPS / "gx10-pair-b"
CONTRACT = ("peer", "transport", "host", "head_addr", "peer_addr", "iface", "peer_iface", "link_mbps", "mtu",
            "peer_gpu_index", "peer_usable_bytes", "peer_gpu", "status", "checks")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def check(report, name):
    return next(c for c in report.checks if c.name == name)


def statuses(report):
    return {c.name: c.status for c in report.checks}


def preflight(peer, engine="vllm", model="gpt-oss-120b", head=A):
    return pair.preflight(str(peer), model, engine, head_source=snapshot.load(head))


def variant(tmp_path, edit, name="gx10-pair-b"):
    """pair-b copied, with `edit(dir)` applied: one recorded thing changed."""
    d = tmp_path / name
    shutil.copytree(B, d)
    edit(d)
    return d


def sub(d, rel, old, new, count=0):
    p = d / rel
    text = p.read_text()
    assert old in text, (rel, old)
    p.write_text(text.replace(old, new) if not count else text.replace(old, new, count))


NET = "commands/12-net-sysfs.txt"


# ----------------------------------------------------------------------------- the good pair
def test_two_recorded_gx10s_make_a_good_pair():
    r = preflight(B)
    assert r.status == "pass", r.table().to_string()
    assert statuses(r) == {
        "SSH to the second box": "pass", "SSH back to this box": "pass", "ConnectX-7 link": "pass", "MTU": "pass",
        "link addresses": "pass", "same DGX OS": "pass", "same GPU driver": "pass", "same engine version": "pass",
        "engine for two boxes": "pass", "model on both boxes": "pass", "second box GPU and memory": "pass"}
    s = r.section()
    assert tuple(s) == CONTRACT                                 # the keys 02–05 code against, in order
    assert s["transport"] == "snapshot" and s["host"] == "" and s["peer"] == str(B)
    assert (s["head_addr"], s["peer_addr"], s["iface"], s["peer_iface"]) == \
        ("192.168.100.10", "192.168.100.11", "enp1s0f1np1", "enp1s0f1np1")   # the playbook's own port, not its twin
    assert (s["link_mbps"], s["mtu"], s["peer_gpu"], s["peer_gpu_index"]) == (200000, 1500, "NVIDIA GB10", None)
    assert s["peer_usable_bytes"] == host.preflight("gpt-oss-120b", "vllm", source=snapshot.load(B)).usable_bytes
    assert "DGX OS 7.6.0 on both" == check(r, "same DGX OS").value
    assert "ping" in check(r, "link addresses").value and "answers at 192.168.100.11" in check(r, "link addresses").value
    for c in r.checks:
        assert c.value and c.why and (c.fix != "") == (c.status in ("warn", "fail")), c


# ----------------------------------------------------------------------------- each bad input, one sentence
def _link_down(d):
    sub(d, NET, "operstate=up carrier=1 speed=200000", "operstate=down carrier=0 speed=")


def _link_100g(d):
    sub(d, NET, "speed=200000", "speed=100000")


def _mtu_9000(d):
    sub(d, NET, "speed=200000 mtu=1500", "speed=200000 mtu=9000")


def _dgx_os_750(d):      # the box before its last OTA: the release file without the 7.6.0 pair
    text = (d / "files/etc/dgx-release").read_text()
    cut = text.rindex('DGX_OTA_VERSION="7.6.0"')
    (d / "files/etc/dgx-release").write_text(text[:cut])


def _driver_159(d):
    sub(d, "commands/02-nvidia-smi-query.txt", "580.178.04", "580.159.03")


def _no_weights(d):
    p = d / "commands/19-vllm-weights.txt"
    first = p.read_text().splitlines()[0]
    p.write_text(f"{first}\n# exit 2\n")


def _addr_elsewhere(d):
    sub(d, "commands/13-ip-addr.txt", '"192.168.100.11"', '"192.168.200.11"')
    sub(d, "commands/13-ip-addr.txt", '"192.168.101.11"', '"192.168.201.11"')


BAD = {   # variant → (check, status, words in the value, words in the fix)
    "link down": (_link_down, "ConnectX-7 link", "fail", ("link is down", "the second box"),
                  ("QSFP cable", "ibdev2netdev", "reboot both")),
    "link at 100G": (_link_100g, "ConnectX-7 link", "warn", ("100G, not 200G", "2×"),
                     ("200G QSFP cable", "Speed: 200000Mb/s")),
    "MTU mismatch": (_mtu_9000, "MTU", "fail", ("MTU 1500 on this box's enp1s0f1np1 but 9000",),
                     ("sudo ip link set enp1s0f1np1 mtu 9000", "/etc/netplan/40-cx7.yaml")),
    "different DGX OS": (_dgx_os_750, "same DGX OS", "fail", ("DGX OS 7.6.0", "DGX OS 7.5.0", "differ"),
                         ("update the older box", "sudo apt dist-upgrade")),
    "different driver": (_driver_159, "same GPU driver", "fail", ("580.178.04", "580.159.03"),
                         ("same 580-branch driver", "Driver Version")),
    "model not on the peer": (_no_weights, "model on both boxes", "fail", ("here but not on the second box",),
                              ("rsync -a ~/.sparkkit/models/openai--gpt-oss-120b/", "run 03 on the second box")),
    "subnets differ": (_addr_elsewhere, "link addresses", "fail", ("different subnets",),
                       ("192.168.100.11/24", "netplan apply")),
}


@pytest.mark.parametrize("case", BAD)
def test_each_bad_pair_says_what_and_the_fix(tmp_path, case):
    edit, name, status, said, fixed = BAD[case]
    r = preflight(variant(tmp_path, edit))
    c = check(r, name)
    assert c.status == status, r.table().to_string()
    assert r.status == status and r.section()["status"] == status
    for words in said:
        assert words in c.value, (words, c.value)
    for words in fixed:
        assert words in c.fix, (words, c.fix)
    others = [x for x in r.checks if x.name != name and x.status in ("warn", "fail")]
    assert not others, others                           # the one thing changed is the one thing said


def test_a_slow_link_names_its_speed_in_the_contract(tmp_path):
    r = preflight(variant(tmp_path, _link_100g))
    assert r.section()["link_mbps"] == 100000


def test_the_model_is_needed_on_the_peer_for_vllm_not_for_llamacpp(tmp_path):
    d = variant(tmp_path, _no_weights)
    assert check(preflight(d, "vllm"), "model on both boxes").status == "fail"
    r = preflight(d, "llamacpp")
    assert check(r, "model on both boxes").status == "pass" and "rpc-server" in check(r, "model on both boxes").value
    assert r.status == "pass", r.table().to_string()
    assert check(r, "same engine version").value.startswith("release b11549 commit b11549 cuda_arch 121a-real")


def test_a_different_llamacpp_build_fails_the_pair(tmp_path):
    r = preflight(variant(tmp_path, lambda d: sub(d, "commands/14-llamacpp-stamp.txt", '"cuda_arch": "121a-real"',
                                                  '"cuda_arch": "90"')), "llamacpp")
    c = check(r, "same engine version")
    assert c.status == "fail" and "builds differ" in c.value and "run 04 on each box" in c.fix


def test_ollama_cannot_serve_a_pair():
    c = check(preflight(B, "ollama"), "engine for two boxes")
    assert c.status == "fail" and "-p engine llamacpp" in c.fix and "ollama/ollama#9147" in c.value


def test_a_snapshot_that_did_not_record_ssh_skips_it_with_the_reason(tmp_path):
    d = variant(tmp_path, lambda d: (d / "commands/17-ssh-other.txt").unlink())
    c = check(preflight(d), "SSH back to this box")
    assert c.status == "skip" and "did not record ssh -o BatchMode=yes -o ConnectTimeout=5 192.168.100.10 true" \
        in c.value


# ----------------------------------------------------------------------------- SSH, through a fake ssh
@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """An `ssh` first on PATH: logs its argv; `unreachable` hosts fail as OpenSSH does (exit 255), others run
    the command string here with sh (what sshd does with it on the peer)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "ssh.log"
    bin_dir.mkdir()
    script = bin_dir / "ssh"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$*" >> {log}
while [ "$1" = -o ]; do shift 2; done
host=$1; shift
case "$host" in
  *unreachable*) echo "ssh: connect to host ${{host#*@}} port 22: No route to host" >&2; exit 255;;
  *nokey*) echo "${{host}}: Permission denied (publickey,password)." >&2; exit 255;;
esac
exec sh -c "$*"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_ssh_source_reads_through_the_real_argv(fake_ssh, tmp_path):
    f = tmp_path / "a file"
    f.write_text("hello\n")
    src = pair.SshSource("me@box")
    assert src.read(str(f)) == "hello\n" and src.exists(str(f)) and not src.exists(str(tmp_path / "none"))
    assert src.run_full("sh", "-c", "exit 3") == (3, "")
    assert src.run("no-such-command-here") is None                     # 127 on the peer: not there
    assert src.file_size(str(f)) == 6
    log = fake_ssh.read_text().splitlines()
    assert log[0] == f"-o BatchMode=yes -o ConnectTimeout=5 me@box cat -- '{f}'"
    assert pair.ssh_argv("me@box", "ls", "~/x y") == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                                                     "me@box", "ls ~/'x y'"]


def test_an_unreachable_peer_fails_in_one_sentence_and_reads_nothing_more(fake_ssh):
    r = pair.preflight("me@spark-unreachable", "gpt-oss-120b", "vllm", head_source=snapshot.load(A))
    c = check(r, "SSH to the second box")
    assert c.status == "fail" and "did not answer over SSH (ssh: connect to host spark-unreachable port 22: " \
        "No route to host)" in c.value
    assert "ssh me@spark-unreachable true must answer" in c.fix
    assert r.status == "fail" and r.section()["transport"] == "ssh" and r.section()["host"] == "me@spark-unreachable"
    assert {x.status for x in r.checks if x.name not in ("SSH to the second box", "engine for two boxes")} == {"skip"}
    assert fake_ssh.read_text().splitlines() == ["-o BatchMode=yes -o ConnectTimeout=5 me@spark-unreachable true"]


def test_a_peer_without_this_boxs_key_is_told_ssh_copy_id(fake_ssh):
    c = check(pair.preflight("spark-nokey", "gpt-oss-120b", "llamacpp", head_source=snapshot.load(A)),
              "SSH to the second box")
    assert c.status == "fail" and "Permission denied" in c.value and c.fix.startswith("ssh-copy-id spark-nokey")


def test_a_live_peer_over_ssh_is_read_with_the_same_commands(fake_ssh):
    """The fake ssh runs each command here: the 'second box' is this machine seen through SSH (no ConnectX-7)."""
    r = pair.preflight("me@box", "gpt-oss-120b", "llamacpp", head_source=snapshot.load(A))
    assert check(r, "SSH to the second box").status == "pass"
    assert check(r, "ConnectX-7 link").status == "fail" and "the second box has no ConnectX-7 port" in \
        check(r, "ConnectX-7 link").value
    sent = fake_ssh.read_text()
    assert f"me@box {pair.shlex.join(pair.NET_ARGV[:2])} " in sent and "me@box ip -j -4 addr show" in sent


# ----------------------------------------------------------------------------- 01: loopback, state, record
def test_loopback_pair_through_01_writes_the_state_section(home, tmp_path):
    report, _ = host.run(peer="loopback:1")
    state = records.load_state()
    s = state["pair"]
    assert tuple(s) == CONTRACT and s == report.pair
    assert (s["transport"], s["head_addr"], s["peer_addr"], s["peer_gpu_index"]) == ("loopback", "127.0.0.1",
                                                                                     "127.0.0.1", 1)
    assert {c["name"]: c["status"] for c in s["checks"]}["SSH to the second box"] == "pass"
    assert "loopback" in {c["name"]: c["value"] for c in s["checks"]}["SSH to the second box"]
    assert "pair" not in state["host"]                             # one place for it
    assert report.pair_table() is not None and "pair with loopback:1" in report.headline
    v = records.finish("01-preflight", *report.record(), tmp_path / "run")   # the record follows the schema
    written = json.loads(v.record_path.read_text())
    assert written["results"]["pair"]["transport"] == "loopback" and not problems(written)
    host.run()                                                     # one box again: the stale pair is cleared
    assert "pair" not in records.load_state() and host.run()[0].pair_table() is None


def test_a_failing_pair_fails_01(tmp_path):
    report, _ = host.run(engine="vllm", host=str(A), peer=str(variant(tmp_path, _link_down)))
    assert report.verdict == "fail" and "pair: ConnectX-7 link" in report.headline
    assert not (tmp_path / "home" / "state.json").exists()        # a snapshot head writes no state


@pytest.mark.parametrize("bad,why", [("-oProxyCommand=x", ""), ("loopback:one", "GPU index"),
                                     ("me@host;reboot", ""), (3, "")])
def test_a_bad_peer_names_the_parameter(bad, why):
    with pytest.raises(ParameterError, match=r"parameter `peer`.*accepted: empty \(one box\), user@host") as e:
        host.run(peer=bad)
    assert why in str(e.value)


def test_a_directory_that_is_not_a_snapshot_names_peer(tmp_path):
    with pytest.raises(ParameterError, match=r"parameter `peer`.*has no SNAPSHOT file"):
        host.run(peer=str(tmp_path))


# ----------------------------------------------------------------------------- snapshots record the pair facts
def test_a_capture_records_what_the_pair_reads(tmp_path):
    snapshot.capture(tmp_path / "snap")
    live, recorded = pair.ports(host.HostSource()), pair.ports(snapshot.load(tmp_path / "snap"))
    assert live is not None and recorded == live
    for argv in pair.CAPTURE_COMMANDS:
        assert snapshot.load(tmp_path / "snap").recorded(pair.shlex.join(argv)), argv


def test_mac_addresses_are_redacted_and_ipv6_kept():
    text, n = snapshot.redact("link/ether 3c:6d:66:cc:b3:b7 brd ff:ff:ff:ff:ff:ff\ninet6 fe80::3e6d:66ff:fecc:b3b7/64\n")
    assert n == 2 and "3c:6d" not in text and "fe80::3e6d:66ff:fecc:b3b7" in text
