"""Two GB10s serving as one over their ConnectX-7 link: what runbook 01 checks on the second box.

01's parameter `peer` names the second box of a pair:

``""``                  one box: nothing here runs, and 01 clears the state's "pair" section;
``user@host`` / ``host``  a live second box, read over SSH (`SshSource`, every read total);
a directory             a host snapshot of the second box (`sparkkit.snapshot.load`); what it did not
                        record (SSH both ways, a ping) says `skip` with the reason;
``loopback[:N]``        this machine stands in for the second box (GPU index N serves as box B;
                        addresses 127.0.0.1): the tests' pair, and a 2-GPU proof on one host.

`preflight()` returns a `PairReport`: its checks (host.Check, one sentence and one fix each) and
`section()`, the state file's "pair" section that 02–05 read (the contract: see `PairReport.section`).

Sources for the facts checked (cited where used below):
  - NVIDIA/dgx-spark-playbooks nvidia/connect-two-sparks/README.md: the ConnectX-7 ports `enp1s0f0np0`,
    `enp1s0f1np1`, `enP2p1s0f0np0`, `enP2p1s0f1np1` (each physical port has two logical interfaces),
    `ibdev2netdev` shows them (Up)/(Down); the netplan file /etc/netplan/40-cx7.yaml with
    192.168.100.10/24 on node 1 and 192.168.100.11/24 on node 2 (192.168.101.x on the twin interface);
    the same username on both boxes; passwordless SSH both ways (discover-sparks, or ssh-copy-id). It sets
    no MTU: its `ip addr show enp1s0f1np1` prints `mtu 1500`.
  - the same repo's nvidia/connect-two-sparks/assets/check-connectx-bandwidth: a healthy rail is a
    "200 Gb/s Ethernet link" (`ethtool` Speed 200000Mb/s) on PCIe Gen5 x4; a lower result: reboot both,
    then power-cycle both (AC off 60 s) without moving the QSFP cables.
  - nvidia/multi-sparks-through-switch/.../detect_and_configure_cluster_networking.py: carrier from
    /sys/class/net/<iface>/carrier, the same four interface names.
  - spark-arena/sparkrun src/sparkrun/scripts/cx7_detect.sh (CX-7 ports, their operstate, MTU and IPv4)
    and orchestration/networking.py (DEFAULT_MTU = 9000, and "interface %s has MTU %d, need %d" when a host
    differs): both ends must agree; 1500 (NVIDIA) and 9000 (sparkrun) both work when they do.
  - Ollama has no multi-node serving (ollama/ollama#9147: "ollama doesn't currently support distributed
    inference"; the RPC work in #4643/#10844/#16137 is unmerged).
  - vLLM/SGLang multi-node: every node loads the weights from its own disk; llama.cpp RPC: the head sends
    the tensors to the peer's rpc-server, which needs no model file.
"""
from __future__ import annotations

import ipaddress
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .box import gather, release_keys
from .host import DRIVER_BRANCH, ENGINE_NAMES, GIB, UPDATE, Check, HostSource

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5")
LINK_MBPS = 200_000            # the GB10's ConnectX-7: 200GbE per QSFP port (connect-two-sparks; check-connectx-bandwidth)
CX7_DRIVER = "mlx5_core"       # the kernel driver of every ConnectX port
CX7_NAMES = ("enp1s0f0np0", "enp1s0f1np1", "enP2p1s0f0np0", "enP2p1s0f1np1")   # their names on a Spark
NETPLAN = "/etc/netplan/40-cx7.yaml"
PLAYBOOK = "NVIDIA's connect-two-sparks playbook"
# Where sparkkit keeps its files on a box, as its shell sees it (SPARKKIT_HOME, else ~/.sparkkit: records.home()).
SPARKKIT_HOME_SH = '"${SPARKKIT_HOME:-$HOME/.sparkkit}"'
# One line per network interface: name, driver, operstate, carrier, speed (Mb/s), MTU — read from sysfs, no
# root; an interface without a device (lo, bridges) has no driver; a down port has no speed (cat fails).
NET_SCRIPT = ('for d in /sys/class/net/*; do n=${d##*/}; [ "$n" = lo ] && continue; '
              'printf "%s driver=%s operstate=%s carrier=%s speed=%s mtu=%s\\n" "$n" '
              '"$(basename "$(readlink "$d/device/driver" 2>/dev/null)" 2>/dev/null)" '
              '"$(cat "$d/operstate" 2>/dev/null)" "$(cat "$d/carrier" 2>/dev/null)" '
              '"$(cat "$d/speed" 2>/dev/null)" "$(cat "$d/mtu" 2>/dev/null)"; done')
NET_ARGV = ("sh", "-c", NET_SCRIPT)
ADDR_ARGV = ("ip", "-j", "-4", "addr", "show")          # IPv4 only: no MAC, no EUI-64 IPv6 address recorded
ACCEPTED = ("empty (one box), user@host or host (the second GB10 over SSH), a host snapshot directory of "
            "the second box, or loopback[:GPU] (this machine stands in for it)")
TRANSPORTS = ("ssh", "snapshot", "loopback")


def _remote_word(arg: str) -> str:
    """One argument as the remote shell must see it: quoted, except a leading ~/ (the peer's home)."""
    return "~/" + shlex.quote(arg[2:]) if arg.startswith("~/") and len(arg) > 2 else shlex.quote(arg)


def ssh_argv(host: str, *argv: str) -> list[str]:
    """The argv that runs `argv` on `host` through ssh, never asking for a password (BatchMode) and giving
    up after 5 s (ConnectTimeout). ssh hands its command to the remote shell as one string, so each word is
    quoted here; a word starting with ~/ stays relative to the peer's home. Used by 01 and by 05 (rpc-server)."""
    return ["ssh", *SSH_OPTIONS, host, " ".join(_remote_word(a) for a in argv)] if argv else \
        ["ssh", *SSH_OPTIONS, host]


class SshSource(HostSource):
    """The second box, read over SSH. Every read is total: an unreachable box, a refused key or a missing
    command gives None, never raises. `last_error` keeps ssh's own words for the check that reports it."""

    is_snapshot = False

    def __init__(self, host: str, timeout: float = 20.0):
        self.host, self.timeout = host, timeout
        self.label = f"peer {host} (over SSH)"
        self.last_error = ""

    def probe(self, *argv: str, timeout: float | None = None) -> tuple[int | None, str, str]:
        """(exit status, stdout, stderr) of `argv` on the peer; (None, "", why) when ssh is not installed."""
        if shutil.which("ssh") is None:
            return None, "", "ssh is not installed here"
        try:
            out = subprocess.run(ssh_argv(self.host, *argv), capture_output=True, text=True, errors="replace",
                                 timeout=timeout or self.timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            return None, "", f"ssh did not finish: {e}"
        return out.returncode, out.stdout, out.stderr

    def run_full(self, *argv: str, timeout: float = 10.0) -> tuple[int | None, str]:
        rc, out, err = self.probe(*argv, timeout=timeout + 10)    # ssh's own connect time on top
        if rc == 255 or rc is None:           # ssh itself failed: the peer did not answer
            self.last_error = err.strip()
            return None, ""
        return (None, "") if rc == 127 else (rc, out)

    def read(self, path: str) -> str | None:
        return self.run("cat", "--", path)

    def machine(self) -> str:
        return (self.run("uname", "-m") or "").strip()

    def disk_free(self, path: str) -> int | None:
        lines = (self.run("df", "-P", "-k", path) or "").splitlines()[1:]
        parts = lines[0].split() if lines else []
        return int(parts[3]) * 1024 if len(parts) >= 4 and parts[3].isdigit() else None

    def file_size(self, path: str) -> int | None:
        out = (self.run("stat", "-c", "%s", path) or "").strip()
        return int(out) if out.isdigit() else None

    def exists(self, path: str) -> bool:
        return self.run_full("test", "-f", path)[0] == 0

    def env_has(self, name: str) -> bool:
        return False

    def hf_token(self) -> bool | None:
        return None


class LoopbackSource(HostSource):
    """This machine, standing in for the second box (GPU index `gpu`, when given, serves as box B)."""

    def __init__(self, gpu: int | None):
        self.gpu = gpu
        self.label = "this machine standing in for the second box (loopback" + (f":{gpu})" if gpu is not None
                                                                                 else ")")


# ----------------------------------------------------------------------------- the peer parameter
@dataclass
class Peer:
    spec: str
    transport: str                 # ssh | snapshot | loopback
    host: str = ""                 # ssh: user@host or host
    gpu: int | None = None         # loopback:N


def parse(peer: str) -> Peer | None:
    """01's `peer` → what it names; None for one box. A bad value is a ParameterError naming `peer`."""
    if not isinstance(peer, str):
        from .errors import ParameterError
        raise ParameterError("peer", peer, ACCEPTED)
    spec = peer.strip()
    if not spec:
        return None
    if spec == "loopback" or spec.startswith("loopback:"):
        n = spec.partition(":")[2]
        if spec != "loopback" and not (n.isascii() and n.isdigit()):
            from .errors import ParameterError
            raise ParameterError("peer", peer, ACCEPTED + f" — after loopback: comes a GPU index (0, 1, …), not {n!r}")
        return Peer(peer, "loopback", gpu=int(n) if n else None)
    if "/" in spec or spec.startswith(("~", ".")) or Path(spec).expanduser().is_dir():
        return Peer(peer, "snapshot")
    if not re.fullmatch(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9_\[][A-Za-z0-9._:%\]-]*", spec, re.A):
        from .errors import ParameterError
        raise ParameterError("peer", peer, ACCEPTED)
    return Peer(peer, "ssh", host=spec)


# ----------------------------------------------------------------------------- network facts
@dataclass
class Port:
    name: str
    driver: str = ""
    state: str = ""                # operstate: up | down | unknown …
    carrier: str = ""
    speed: int | None = None       # Mb/s; None when down (sysfs refuses) or unknown
    mtu: int | None = None
    addrs: list[tuple[str, int]] = field(default_factory=list)    # IPv4 (address, prefix length)

    @property
    def cx7(self) -> bool:
        return self.driver == CX7_DRIVER or self.name in CX7_NAMES

    @property
    def up(self) -> bool:
        return self.state.lower() == "up" or (self.state.lower() in ("", "unknown") and self.carrier == "1")


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if re.fullmatch(r"-?\d+", text, re.A) else None


def ports(src: HostSource) -> list[Port] | None:
    """Every interface `src` reports (sysfs lines and `ip -j -4 addr`), or None when it reported neither."""
    net, addr = src.run(*NET_ARGV), src.run(*ADDR_ARGV)
    if net is None and addr is None:
        return None
    found: dict[str, Port] = {}
    for line in (net or "").splitlines():
        name, *pairs = line.split()
        if not name:
            continue
        kv = dict(p.partition("=")[::2] for p in pairs)
        speed = _int(kv.get("speed"))
        found[name] = Port(name, kv.get("driver", ""), kv.get("operstate", ""), kv.get("carrier", ""),
                           speed if speed and speed > 0 else None, _int(kv.get("mtu")))
    try:
        listed = json.loads(addr or "[]")
    except ValueError:
        listed = []
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("ifname"), str) or entry["ifname"] == "lo":
            continue
        p = found.setdefault(entry["ifname"], Port(entry["ifname"]))
        p.state = p.state or str(entry.get("operstate", "")).lower()
        p.mtu = p.mtu if p.mtu is not None else (entry["mtu"] if isinstance(entry.get("mtu"), int) else None)
        for a in entry.get("addr_info") or []:
            if isinstance(a, dict) and a.get("family") == "inet" and isinstance(a.get("prefixlen"), int):
                try:
                    p.addrs.append((str(ipaddress.IPv4Address(a.get("local"))), a["prefixlen"]))
                except ValueError:
                    pass
    return list(found.values())


def _net(a: tuple[str, int]) -> ipaddress.IPv4Network:
    return ipaddress.ip_interface(f"{a[0]}/{a[1]}").network


@dataclass
class Link:
    head: Port | None = None
    peer: Port | None = None
    head_addr: tuple[str, int] | None = None
    peer_addr: tuple[str, int] | None = None

    @property
    def same_subnet(self) -> bool:
        return bool(self.head_addr and self.peer_addr and _net(self.head_addr) == _net(self.peer_addr))


def pick_link(head: list[Port], peer: list[Port]) -> Link:
    """The head's and the peer's ConnectX-7 ports that face each other: up ports with addresses in one
    subnet first; else the best each side has (up, addressed, fastest) so the checks can say what is wrong."""
    def rank(p: Port):       # the playbook's own names first: enp1s0f1np1 before its twin enP2p1s0f1np1
        return (not p.up, not p.addrs, -(p.speed or 0), CX7_NAMES.index(p.name) if p.name in CX7_NAMES else 9, p.name)
    hs, ps = sorted((p for p in head if p.cx7), key=rank), sorted((p for p in peer if p.cx7), key=rank)
    for h in hs:
        for q in ps:
            for a in h.addrs:
                for b in q.addrs:
                    if _net(a) == _net(b) and a[0] != b[0]:
                        return Link(h, q, a, b)
    h, q = (hs[0] if hs else None), (ps[0] if ps else None)
    return Link(h, q, h.addrs[0] if h and h.addrs else None, q.addrs[0] if q and q.addrs else None)


# ----------------------------------------------------------------------------- versions and weights
def dgx_os(src: HostSource) -> str | None:
    """The running DGX OS release: the last DGX_OTA_VERSION, else the factory DGX_SWBUILD_VERSION."""
    text = src.read("/etc/dgx-release")
    if text is None:
        return None
    keys = release_keys(text)
    found = keys.get("DGX_OTA_VERSION") or keys.get("DGX_SWBUILD_VERSION") or []
    return found[-1] if found else None


def engine_probe(engine: str) -> tuple[str, ...]:
    """The one command whose answer names the engine build a box would serve with: llama.cpp the stamp
    04 writes beside its build (engines.llamacpp.STAMP), vLLM/SGLang the image id of the pinned image,
    Ollama its --version."""
    from .engines import container, module
    if engine == "llamacpp":
        from .engines.llamacpp import LLAMA_CPP_RELEASE, STAMP
        return ("sh", "-c", f"cat {SPARKKIT_HOME_SH}/build/llama.cpp-{LLAMA_CPP_RELEASE}/build/{STAMP}")
    if engine in ("vllm", "sglang"):
        return ("docker", "image", "inspect", "--format", "{{.Id}}", container.pinned_ref(module(engine).IMAGE))
    return ("ollama", "--version")


# What a box records for the pair checks (sparkkit.snapshot.capture adds these to its command list).
CAPTURE_COMMANDS = (NET_ARGV, ADDR_ARGV, *(engine_probe(e) for e in ("llamacpp", "vllm", "sglang", "ollama")))
STAMP_KEYS = ("release", "commit", "cuda_arch", "cmake_flags", "patches")


def engine_version(src: HostSource, engine: str) -> str | None:
    """The engine build `src` has, in words comparable across boxes; "" when it has none; None unknown."""
    rc, out = src.run_full(*engine_probe(engine))
    if rc is None:
        return None if engine != "ollama" or not src.recorded("ollama --version") else ""
    if rc != 0:
        return ""
    if engine == "llamacpp":
        try:
            stamp = json.loads(out)
        except ValueError:
            return None
        if not isinstance(stamp, dict):
            return None
        got = {k: stamp[k] for k in STAMP_KEYS if k in stamp}
        flags = " ".join(got.pop("cmake_flags", []) or [])
        return " ".join(f"{k} {v}" for k, v in got.items()) + (f" flags {flags}" if flags else "")
    text = out.strip().splitlines()
    return text[-1].strip() if text else ""


def weights_dir(model: str, engine: str, model_dir: str, shell: bool = True) -> str:
    """Where `engine` loads `model` from on each box (the same path on both: vLLM and SGLang nodes each load
    the path the head names): a shell word, or (shell=False) as people write it."""
    from .model import WEIGHTS_SOURCES
    repo = WEIGHTS_SOURCES.get(model, {}).get("safetensors", model).replace("/", "--")
    if model_dir:
        return shlex.quote(str(Path(model_dir) / repo)) if shell else str(Path(model_dir) / repo)
    return f"{SPARKKIT_HOME_SH}/models/{repo}" if shell else f"~/.sparkkit/models/{repo}"


def weights_probe(model: str, engine: str, model_dir: str) -> tuple[str, ...]:
    return ("sh", "-c", f"ls -1 {weights_dir(model, engine, model_dir)}")


def weights_present(src: HostSource, model: str, engine: str, model_dir: str) -> bool | None:
    """Whether `src` holds `model`'s safetensors (config.json and at least one .safetensors); None unknown."""
    rc, out = src.run_full(*weights_probe(model, engine, model_dir))
    if rc is None:
        return None
    names = out.split()
    return rc == 0 and "config.json" in names and any(n.endswith(".safetensors") for n in names)


# ----------------------------------------------------------------------------- the report
@dataclass
class PairReport:
    peer: Peer
    checks: list[Check]
    head_addr: str = ""
    peer_addr: str = ""
    iface: str = ""
    peer_iface: str = ""
    link_mbps: int | None = None
    mtu: int | None = None
    peer_usable_bytes: int | None = None
    peer_gpu: str | None = None
    source: str = ""

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    def section(self) -> dict[str, Any]:
        """The state file's "pair" section (01 writes it; 02–05 read it). Keys are a contract: keep them."""
        return {"peer": self.peer.spec, "transport": self.peer.transport, "host": self.peer.host,
                "head_addr": self.head_addr, "peer_addr": self.peer_addr, "iface": self.iface,
                "peer_iface": self.peer_iface, "link_mbps": self.link_mbps, "mtu": self.mtu,
                "peer_gpu_index": self.peer.gpu, "peer_usable_bytes": self.peer_usable_bytes,
                "peer_gpu": self.peer_gpu, "status": self.status, "checks": [asdict(c) for c in self.checks]}

    @property
    def headline(self) -> str:
        bad = [c.name for c in self.checks if c.status in ("fail", "warn")]
        return f"pair with {self.peer.spec} ({self.peer.transport}): {self.status}" + \
            (f" ({', '.join(bad)})" if bad else "")

    def table(self):
        from .tables import WholeTable
        order = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
        return WholeTable([asdict(c) for c in sorted(self.checks, key=lambda c: order[c.status])])


def _check(name: str, why: str):
    return lambda status, value, fix="": Check(name, status, value, why, fix)


def _on_peer(peer: Peer, command: str) -> str:
    """`command` as the owner types it for the second box."""
    if peer.transport == "ssh":
        return f"ssh {peer.host} {shlex.quote(command)}"
    return f"on the second box: {command}"


def _ssh_fix(host: str, err: str) -> str:
    if "Host key verification failed" in err:
        return f"accept its host key once: ssh {host} true (answer yes), then re-run 01"
    if "Permission denied" in err:
        return (f"ssh-copy-id {host} (and from the second box back to this one), or run {PLAYBOOK}'s "
                "discover-sparks; the same username on both boxes")
    return (f"check that {host} is on, on the network and runs sshd (ssh {host} true must answer), or pass its "
            "host snapshot as -p peer DIR")


def preflight(peer: str, model: str, engine: str, model_dir: str = "",
              head_source: HostSource | None = None) -> PairReport | None:
    """The pair checks for serving `model` with `engine` on this box (or `head_source`) and `peer`."""
    from . import host as host_mod
    p = parse(peer)
    if p is None:
        return None
    head = head_source or host_mod.this_host()
    checks: list[Check] = []
    if p.transport == "snapshot":
        from .snapshot import load
        src: HostSource = load(p.spec, parameter="peer")
    elif p.transport == "loopback":
        src = LoopbackSource(p.gpu)
    else:
        src = SshSource(p.host)

    # 1. SSH, head → peer (a live peer is asked first: nothing else can be read from one that does not answer)
    c_to = _check("SSH to the second box", "every launch on the second box (vLLM/SGLang node, llama.cpp "
                  "rpc-server) goes through passwordless SSH (ssh -o BatchMode=yes)")
    reached, to_peer = True, None
    if p.transport == "loopback":
        to_peer = c_to("pass", "loopback: the second box is this machine; no SSH needed")
    elif p.transport == "ssh":
        rc, _, err = src.probe("true")   # type: ignore[attr-defined]
        reached = rc == 0
        if reached:
            to_peer = c_to("pass", f"ssh {p.host} true answered without a password")
        else:
            said = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
            to_peer = c_to("fail", f"the second box {p.host} did not answer over SSH ({said})",
                           _ssh_fix(p.host, err))
    unreachable = "" if reached else f"not checked: the second box {p.host} did not answer over SSH"

    # network facts
    hp: list[Port] | None = None
    pp: list[Port] | None = None
    if p.transport == "loopback":
        link = Link()
        head_addr, peer_addr = "127.0.0.1", "127.0.0.1"
    else:
        hp, pp = ports(head), (ports(src) if reached else None)
        link = pick_link(hp or [], pp or [])
        head_addr = link.head_addr[0] if link.head_addr else ""
        peer_addr = link.peer_addr[0] if link.peer_addr else ""
    if to_peer is None:                  # a snapshot: what the head recorded, if it did (a snapshot of this box)
        to_peer = _recorded_ssh(c_to, head, peer_addr, "this box", "the second box", p)
    checks.append(to_peer)

    # 2. SSH, peer → head
    c = _check("SSH back to this box", f"{PLAYBOOK} sets up passwordless SSH both ways; multi-node launchers "
               "reach the head from the second box")
    if p.transport == "loopback":
        checks.append(c("pass", "loopback: the second box is this machine; no SSH needed"))
    elif not reached:
        checks.append(c("skip", unreachable))
    elif isinstance(src, SshSource) and head_addr:
        inner = ssh_argv(head_addr, "true")
        rc, _, err = src.probe(*inner)
        if rc == 0:
            checks.append(c("pass", f"the second box reaches this one: {shlex.join(inner)} answered there"))
        else:
            checks.append(c("fail", f"the second box cannot SSH back to this box at {head_addr} without a password "
                            f"({err.strip().splitlines()[-1] if err.strip() else f'exit {rc}'})",
                            _on_peer(p, f"ssh-copy-id {head_addr}") + f" (or {PLAYBOOK}'s discover-sparks)"))
    else:
        checks.append(_recorded_ssh(c, src, head_addr, "the second box", "this box", p))

    # 3. the link: up, and at what speed
    c = _check("ConnectX-7 link", f"the pair moves activations (llama.cpp RPC: tensors) over the QSFP link; "
               f"a GB10's ConnectX-7 gives {LINK_MBPS // 1000}G per port ({PLAYBOOK})")
    mbps: int | None = None
    if p.transport == "loopback":
        checks.append(c("skip", "loopback: both boxes are this machine; no link between them"))
    elif not reached:
        checks.append(c("skip", unreachable))
    else:
        checks.append(_link_check(c, p, head, src, link, hp, pp))
        speeds = [s for s in (link.head.speed if link.head and link.head.up else None,
                              link.peer.speed if link.peer and link.peer.up else None) if s]
        mbps = min(speeds) if speeds else None

    # 4. MTU
    c = _check("MTU", "both ends of the link must agree: a frame larger than the other end's MTU is dropped, which "
               "stalls NCCL and RPC transfers (NVIDIA's playbook leaves 1500; sparkrun sets 9000; either works on "
               "both ends)")
    mtu: int | None = None
    if p.transport == "loopback":
        checks.append(c("skip", "loopback: no link between the boxes"))
    elif not reached:
        checks.append(c("skip", unreachable))
    elif not (link.head and link.peer and link.head.mtu and link.peer.mtu):
        checks.append(c("skip", "no ConnectX-7 port with an MTU on " + ("this box" if not (link.head and link.head.mtu)
                                                                        else "the second box")))
    elif link.head.mtu == link.peer.mtu:
        mtu = link.head.mtu
        checks.append(c("pass", f"{mtu} on both ({link.head.name} here, {link.peer.name} there)"))
    else:
        mtu = min(link.head.mtu, link.peer.mtu)
        hi = max(link.head.mtu, link.peer.mtu)
        low_here = link.head.mtu < link.peer.mtu
        low = link.head if low_here else link.peer
        cmd = f"sudo ip link set {low.name} mtu {hi}"
        checks.append(c("fail", f"MTU {link.head.mtu} on this box's {link.head.name} but {link.peer.mtu} on the "
                        f"second box's {link.peer.name}: the ends differ",
                        (cmd if low_here else _on_peer(p, cmd)) + f", and add mtu: {hi} under {low.name} in "
                        f"{NETPLAN} so it survives a reboot (sudo netplan apply)"))

    # 5. addresses: one subnet, and the peer answers there
    c = _check("link addresses", f"each box needs an IPv4 address on its ConnectX-7 port, both in one subnet "
               f"({PLAYBOOK}: 192.168.100.10/24 and 192.168.100.11/24 in {NETPLAN})")
    if p.transport == "loopback":
        checks.append(c("pass", "loopback: 127.0.0.1 on both (this machine stands in for the second box)"))
    elif not reached:
        checks.append(c("skip", unreachable))
    else:
        checks.append(_address_check(c, p, head, link, hp, pp))

    # 6-8. the same DGX OS, driver and engine on both
    head_facts = gather(head)
    peer_facts = gather(src) if reached else None
    checks.append(_same(_check("same DGX OS", "two boxes on different DGX OS releases run different kernels, "
                               "drivers and NCCL/CUDA stacks; a pair needs one release"),
                        p, reached and p.transport != "loopback", dgx_os(head),
                        dgx_os(src) if reached else None, "DGX OS",
                        f"update the older box to the newer release: {UPDATE}"))
    checks.append(_same(_check("same GPU driver", "NCCL and llama.cpp RPC need the same CUDA driver on both ends"),
                        p, reached and p.transport != "loopback", head_facts.gpu.driver,
                        peer_facts.gpu.driver if peer_facts else None, "driver",
                        f"bring both to the same {DRIVER_BRANCH}-branch driver: the DGX OS update ({UPDATE}) on the "
                        "older box; nvidia-smi must then print the same Driver Version on both"))
    checks.append(_engine_check(p, engine, head, src, reached))
    checks.append(_engine_pair(engine))
    checks.append(_weights_check(p, model, engine, model_dir, head, src, reached))

    # 9. the second box's GPU and memory (02 plans with them)
    c = _check("second box GPU and memory", "02 splits the model by what each box can hold")
    peer_gpu, usable = None, None
    if not reached:
        checks.append(c("skip", unreachable))
    else:
        peer_gpu, usable, chk = _peer_box(c, p, model, engine, model_dir, src, peer_facts)
        checks.append(chk)

    return PairReport(p, checks, head_addr=head_addr, peer_addr=peer_addr,
                      iface=link.head.name if link.head else "", peer_iface=link.peer.name if link.peer else "",
                      link_mbps=mbps, mtu=mtu, peer_usable_bytes=usable, peer_gpu=peer_gpu, source=src.label)


def _recorded_ssh(c, src: HostSource, addr: str, frm: str, to: str, p: Peer) -> Check:
    """An SSH check from what a snapshot recorded (`ssh -o BatchMode=yes -o ConnectTimeout=5 ADDR true`)."""
    if not addr:
        return c("skip", f"no address of {to} on the link to try from {frm}")
    inner = ssh_argv(addr, "true")
    if not src.is_snapshot:
        return c("skip", f"{to} is a snapshot: {frm} does not try SSH to it")
    if not src.recorded(shlex.join(inner)):
        return c("skip", f"{src.label} did not record {shlex.join(inner)}")
    rc, _ = src.run_full(*inner)
    if rc == 0:
        return c("pass", f"{frm} reached {to}: {shlex.join(inner)} answered ({src.label})")
    return c("fail", f"{frm} cannot SSH to {to} at {addr} without a password ({shlex.join(inner)}: "
             f"exit {rc}, {src.label})", f"on {frm}: ssh-copy-id {addr} (or {PLAYBOOK}'s discover-sparks)")


def _ports_missing(src: HostSource, where: str) -> str:
    return (f"{' '.join(NET_ARGV[:2])} … / {shlex.join(ADDR_ARGV)} is not in {src.label}" if src.is_snapshot else
            f"{where} reported no network interfaces")


def _link_check(c, p: Peer, head: HostSource, src: HostSource, link: Link,
                hp: list[Port] | None, pp: list[Port] | None) -> Check:
    if hp is None or pp is None:
        return c("skip", _ports_missing(head if hp is None else src, "this box" if hp is None else "the second box"))
    cable = ("connect the QSFP cable between the two boxes' ConnectX-7 ports (the same port on each), then "
             f"ibdev2netdev must show (Up) on both; if it does not, reboot both ({PLAYBOOK}, step 2)")
    for port, where, other in ((link.head, "this box", hp), (link.peer, "the second box", pp)):
        if port is None:
            return c("fail", f"{where} has no ConnectX-7 port (driver {CX7_DRIVER}; on a Spark "
                     f"{', '.join(CX7_NAMES[:2])}, …)", "a pair needs two GB10 boxes linked by QSFP: " + cable)
        if not port.up:
            return c("fail", f"the link is down: {where}'s ConnectX-7 ports are all down "
                     f"({', '.join(q.name + ' ' + (q.state or q.carrier or '?') for q in other if q.cx7)})", cable)
    assert link.head and link.peer
    speeds = {"this box": link.head.speed, "the second box": link.peer.speed}
    value = f"{link.head.name} up here, {link.peer.name} up there"
    known = {k: v for k, v in speeds.items() if v}
    if not known:
        return c("skip", value + "; neither box reported the link speed (/sys/class/net/<port>/speed)")
    slow = min(known.values())
    value += ", " + " / ".join(f"{v} Mb/s" for v in known.values())
    if slow >= LINK_MBPS:
        return c("pass", value)
    where = [k for k, v in known.items() if v == slow]
    return c("warn", f"{value}: the link runs at {slow // 1000}G, not {LINK_MBPS // 1000}G ({' and '.join(where)}), so "
             f"every transfer between the boxes takes {LINK_MBPS / slow:.0f}× as long (slower prompt processing "
             "and decode for a model split across them)",
             "use a 200G QSFP cable in the same port on both boxes, reboot both and check ethtool <port> says "
             "Speed: 200000Mb/s; if it still does not, shut both down, unplug them from AC for 60 s and retest "
             "(NVIDIA's check-connectx-bandwidth)")


def _address_check(c, p: Peer, head: HostSource, link: Link, hp, pp) -> Check:
    if hp is None or pp is None or link.head is None or link.peer is None:
        return c("skip", "no ConnectX-7 ports to read addresses from (see ConnectX-7 link)")
    netplan = (f"give it a static address in {NETPLAN} ({PLAYBOOK}, step 3: 192.168.100.10/24 on this box, "
               "192.168.100.11/24 on the second), then sudo netplan apply")
    if not link.head_addr:
        return c("fail", f"this box has no IPv4 address on {link.head.name}", netplan)
    if not link.peer_addr:
        return c("fail", f"the second box has no IPv4 address on {link.peer.name}",
                 f"on the second box{f' ({p.host})' if p.host else ''}: {netplan}")
    h, q = f"{link.head_addr[0]}/{link.head_addr[1]}", f"{link.peer_addr[0]}/{link.peer_addr[1]}"
    if not link.same_subnet:
        return c("fail", f"{h} on this box's {link.head.name} and {q} on the second box's {link.peer.name} are in "
                 "different subnets", f"put both in one subnet: {netplan}")
    if link.head_addr[0] == link.peer_addr[0]:
        return c("fail", f"both boxes use {link.head_addr[0]}", f"give each box its own address: {netplan}")
    value = f"{h} here ({link.head.name}), {q} there ({link.peer.name})"
    ping = ("ping", "-c", "1", "-W", "2", link.peer_addr[0])
    rc, _ = head.run_full(*ping, timeout=10)
    if rc is None:
        return c("pass", value + (f"; {shlex.join(ping)} not recorded" if head.is_snapshot else
                                  "; not pinged (no ping here)"))
    if rc != 0:
        return c("fail", f"{value}, but the second box does not answer at {link.peer_addr[0]} ({shlex.join(ping)} "
                 "got no reply)", f"check the cable and both {NETPLAN} files (ip addr show {link.head.name} here, "
                 f"ip addr show {link.peer.name} there); a firewall must let the link's subnet through")
    return c("pass", value + f"; the second box answers at {link.peer_addr[0]} (ping)")


def _same(c, p: Peer, compare: bool, here: str | None, there: str | None, what: str, fix: str) -> Check:
    if p.transport == "loopback":
        return c("pass", f"loopback: one machine, one {what}" + (f" ({here})" if here else ""))
    if not compare:
        return c("skip", "not checked: the second box did not answer over SSH")
    if here is None or there is None:
        return c("skip", f"{what} unknown on " + ("this box" if here is None else "the second box") +
                 (f" ({here or there} on the other)" if here or there else ""))
    if here == there:
        return c("pass", f"{what} {here} on both")
    return c("fail", f"this box has {what} {here}, the second box {what} {there}: the versions differ", fix)


def _engine_check(p: Peer, engine: str, head: HostSource, src: HostSource, reached: bool) -> Check:
    name = ENGINE_NAMES[engine]
    c = _check("same engine version", f"both boxes must run the same {name} build: its wire protocol and kernels "
               "change between builds")
    if p.transport == "loopback":
        return c("pass", f"loopback: one machine, one {name} build")
    if not reached:
        return c("skip", "not checked: the second box did not answer over SSH")
    what = {"llamacpp": "the llama.cpp build 04 stamps (sparkkit-build.json)",
            "ollama": "ollama --version"}.get(engine, "the pinned image's id")
    here, there = engine_version(head, engine), engine_version(src, engine)
    image = shlex.join(engine_probe(engine)[-1:])
    fix = {"llamacpp": "run 04 on each box: it builds the pinned llama.cpp release there",
           "ollama": "install the same Ollama on both: curl -fsSL https://ollama.com/install.sh | sh"}.get(
        engine, f"docker pull {image} on both boxes")
    peer_fix = {"llamacpp": "run 04 on the second box too (it builds the same pinned release)",
                "ollama": _on_peer(p, "curl -fsSL https://ollama.com/install.sh | sh")}.get(
        engine, _on_peer(p, f"docker pull {image}"))
    if here is None or there is None:
        return c("skip", f"{what}: unknown on " + ("this box" if here is None else "the second box"))
    if not here and not there:
        return c("skip", f"no {name} on either box yet ({what}); 04 installs it here", fix)
    if not there:
        return c("warn", f"{name} is not on the second box yet ({what}); this box has {here}", peer_fix)
    if not here:
        return c("warn", f"{name} is on the second box ({there}) but not here yet", fix)
    if here == there:
        return c("pass", f"{here} on both")
    return c("fail", f"the {name} builds differ: {here} here, {there} on the second box", fix)


def _engine_pair(engine: str) -> Check:
    c = _check("engine for two boxes", "only some engines spread one model over two boxes")
    if engine == "ollama":
        return c("fail", "Ollama serves a model on one box only: it has no multi-node serving (ollama/ollama#9147)",
                 "use -p engine llamacpp (llama.cpp RPC), vllm or sglang for a pair, or leave -p peer empty")
    how = {"llamacpp": "llama.cpp RPC: the second box runs rpc-server, this one llama-server --rpc",
           "vllm": "vLLM multi-node (a Ray cluster across both boxes)",
           "sglang": "SGLang multi-node (--nnodes 2)"}[engine]
    return c("pass", how)


def _weights_check(p: Peer, model: str, engine: str, model_dir: str, head: HostSource, src: HostSource,
                   reached: bool) -> Check:
    c = _check("model on both boxes", "vLLM and SGLang load the weights on every node from its own disk; "
               "llama.cpp RPC sends the tensors to the second box, which needs no copy")
    if engine in ("llamacpp", "ollama"):
        return c("pass", "not needed: " + ("the second box's rpc-server receives the tensors from this box"
                                           if engine == "llamacpp" else "Ollama does not serve across boxes"))
    if p.transport == "loopback":
        return c("pass", "loopback: one machine, one copy of the weights")
    if not reached:
        return c("skip", "not checked: the second box did not answer over SSH")
    where = weights_dir(model, engine, model_dir, shell=False)
    here, there = weights_present(head, model, engine, model_dir), weights_present(src, model, engine, model_dir)
    if there is None:
        return c("skip", f"whether the second box holds {where} is unknown (" +
                 (f"{src.label} did not record it)" if src.is_snapshot else "it did not answer)"))
    if there:
        return c("pass", f"{model}'s safetensors are in {where} on the second box" +
                 ("" if here else " (03 places them here)"))
    copy = (f"copy them over the link: rsync -a {where}/ {p.host or '<second box>'}:{where}/ (the same path on "
            "both), or run 03 on the second box")
    if here:
        return c("fail", f"{model}'s safetensors are here but not on the second box ({where})", copy)
    return c("warn", f"{model}'s safetensors are on neither box yet ({where}); 03 places them here only", copy)


def _peer_box(c, p: Peer, model: str, engine: str, model_dir: str, src: HostSource, facts):
    """(GPU name, usable bytes, check) for the second box; usable memory measured as 01 measures one box."""
    from . import host as host_mod
    if p.transport == "loopback" and p.gpu is not None:
        listed = src.run("nvidia-smi", "-L")
        if listed is None:
            return None, None, c("skip", f"loopback:{p.gpu}: no nvidia-smi on this machine to ask for GPU {p.gpu}")
        row = [x.strip() for x in (src.run("nvidia-smi", "-i", str(p.gpu), "--query-gpu=name,memory.total,"
                                           "memory.used", "--format=csv,noheader,nounits") or "").split(",")]
        if len(row) != 3 or not row[0]:
            return None, None, c("fail", f"loopback:{p.gpu}: nvidia-smi lists no GPU {p.gpu} on this machine",
                                 "pass -p peer loopback:N with N an index nvidia-smi -L lists, or plain loopback")
        if row[1].isdigit() and row[2].isdigit():       # a discrete GPU: its own memory is what box B holds
            free = (int(row[1]) - int(row[2])) * 2**20
            return row[0], free, c("pass", f"GPU {p.gpu}: {row[0]}, {free / GIB:.1f} GiB free of "
                                            f"{int(row[1]) / 1024:.1f} GiB")
    # 01's own usable-memory check on the second box's facts (only that check: each read is an SSH round trip)
    mem, usable = host_mod._memory(facts, host_mod.need_for(model, engine, model_dir, src))
    usable = max(usable, 0) if mem.status != "skip" else None
    gpu = facts.gpu.names[0] if facts.gpu.names else None
    if p.transport == "loopback" and p.gpu is not None:
        gpu = row[0]
    value = f"{gpu or 'no GPU listed'}; usable memory " + (f"{usable / GIB:.1f} GiB" if usable is not None else
                                                           "unknown")
    if gpu is None and p.transport != "loopback" and src.recorded(" ".join(host_mod.GPU_QUERY)) \
            and src.run(*host_mod.GPU_QUERY) is not None:
        return None, usable, c("fail", f"the second box lists no NVIDIA GPU ({value})",
                               "reboot the second box, then nvidia-smi there must list the NVIDIA GB10")
    return gpu, usable, c("pass" if gpu or usable is not None else "skip", value)


def refuse_unready(pair: dict[str, Any]) -> None:
    """05 on a pair: one sentence, before anything starts, when 01's pair is a recorded snapshot (no live box to
    start anything on) or failed one of its checks (the second box unreachable, other versions, the link down,
    the model missing where the engine needs it)."""
    from .errors import ServeError
    peer = pair.get("peer") or "user@host"
    if pair.get("transport") == "snapshot":
        raise ServeError(f"the pair in the state is a recorded snapshot ({peer}), not a live box, so 05 cannot start "
                         "anything there: re-run 01-preflight with -p peer user@host")
    failed = [c for c in pair.get("checks") or [] if c.get("status") == "fail"]
    if pair.get("status") == "fail" or failed:
        first = failed[0] if failed else {}
        raise ServeError(f"01 found the pair not ready ({', '.join(c.get('name', '?') for c in failed) or 'failed'})"
                         + (f": {first.get('value')} — {first.get('fix')}" if first.get("fix") else "")
                         + f"; fix it and re-run 01-preflight with -p peer {peer}, nothing was started")

