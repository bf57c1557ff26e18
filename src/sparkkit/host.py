"""What kind of box this is, and whether it can serve the model with the chosen engine (runbook 01).

Facts are read through a `HostSource`: the live host (`HostSource`, here) or a recorded host
snapshot (`sparkkit.snapshot.SnapshotSource`). Every read is total: a missing command, an
unreadable file or odd output gives None, and the check that needed it says `skip` (or `warn`)
with the reason. No check needs root. /etc/dgx-release holds the box's serial number: only its
release keys are parsed, never a key containing SERIAL. The HF token is only ever present/absent.

Checks (sources: research/spark.md, peers.md §1-2, engines.md): platform (GPU, maker from DGX_PLATFORM
or DMI, arch) · GPU driver (GB10: the 580 branch) · CUDA toolkit on PATH (nvcc >= 13.0 for sm_121) ·
DGX OS (the last DGX_OTA_VERSION, quoted or not; kernel) · firmware (fwupd) · usable memory
(MemAvailable + SwapFree; nvidia-smi says "Not Supported") · page cache (SGLang/vLLM) · swap (SGLang
with gpt-oss-120b wants 64 GiB) · disk (GGUF shards, root safetensors or the Ollama store) · HF token.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .box import GPU_QUERY, Facts, gather, gpu_info, meminfo  # noqa: F401  (meminfo: part of this API)
from .model import EMBEDDED, is_embedded
from .results import PairResults

GIB = 1024**3
STATUSES = ("pass", "warn", "fail", "skip")
from . import engines as _engines

ENGINES = _engines.ENGINES                                     # the registry: one list of engines
ENGINE_NAMES = {name: s.label for name, s in _engines.specs().items()}
# Desktop, page cache and the engine's own buffers need room besides the model (spark.md §2).
HEADROOM_BYTES = 4 * GIB
# What a model needs in memory beyond its weights (KV cache and compute buffers at a modest context).
MODEL_MARGIN = 2 * GIB
DRIVER_BRANCH = "580"            # spark.md §1: NVIDIA supports only the 580 branch on GB10
SWAP_MIN = 8 * GIB
# LMSYS: enable/enlarge swap before SGLang loads gpt-oss-120b; sglang#37931: 64 GB cured the load OOM.
SWAP_SGLANG_120B = 64 * GIB
# What each engine keeps on disk, and where: llama.cpp the catalogue's GGUF shards, SGLang/vLLM the root
# safetensors, Ollama its own store — sizes from sparkkit.model (CATALOGUE, ENGINE_WEIGHTS), so every
# catalogue model is one 01 can check.
WEIGHTS_HOME = {name: s.weights_home for name, s in _engines.specs().items()}
UPDATE = "sudo apt update && sudo apt dist-upgrade && sudo fwupdmgr refresh && sudo fwupdmgr upgrade && sudo reboot"
DROP_CACHES = "sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"
NVCC_DEFAULT = "/usr/local/cuda/bin/nvcc"


@dataclass(frozen=True)
class Check:
    name: str
    status: str      # pass | warn | fail | skip
    value: str       # what was measured, in words
    why: str         # why it matters
    fix: str = ""    # the exact command (or step) that fixes it

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status


class HostSource:
    """The live host. Every read is total: a missing file or command gives None, never raises."""

    label = "this machine"
    is_snapshot = False

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return None

    def run_full(self, *argv: str, timeout: float = 10.0) -> tuple[int | None, str]:
        """(exit status, stdout); (None, "") when the command is not there or does not answer."""
        if shutil.which(argv[0]) is None:
            return None, ""
        try:
            out = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None, ""
        return out.returncode, out.stdout

    def run(self, *argv: str, timeout: float = 10.0, ok: tuple[int, ...] = (0,)) -> str | None:
        rc, out = self.run_full(*argv, timeout=timeout)
        return out if rc in ok else None

    def recorded(self, key: str) -> bool:
        """Whether this source could know `key` (a path or a command line). The live host always can."""
        return True

    def machine(self) -> str:
        return platform.machine()

    def disk_free(self, path: str) -> int | None:
        p = Path(path).expanduser()
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            return shutil.disk_usage(p).free
        except OSError:
            return None

    def file_size(self, path: str) -> int | None:
        try:
            return Path(path).expanduser().stat().st_size
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return Path(path).expanduser().is_file()

    def env_has(self, name: str) -> bool:
        return bool(os.environ.get(name))

    def hf_token(self) -> bool | None:
        """Presence only: the token's value is never read into memory here, let alone printed."""
        hf_home = os.environ.get("HF_HOME") or "~/.cache/huggingface"
        return self.env_has("HF_TOKEN") or self.exists(os.path.join(hf_home, "token"))


def detect_gpus(src: HostSource) -> list[str]:
    return gpu_info(src).names


def _gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass
class Need:
    model: str
    engine: str
    weights_bytes: int
    weights_dir: str
    files: tuple[str, ...] = ()   # llama.cpp's shards: what is already there is not needed twice
    size_from: str = ""           # said when weights_bytes is a stand-in (the engine's own size is not known)

    @property
    def memory_bytes(self) -> int:
        return self.weights_bytes + MODEL_MARGIN

    @property
    def says(self) -> str:
        return f"{self.model} needs ≥ {_gib(self.memory_bytes)}" + \
            (f" ({self.size_from})" if self.size_from else "")


def _missing(src: HostSource, key: str, live: str) -> str:
    return live if src.recorded(key) else f"{key} is not in this snapshot"


# ----------------------------------------------------------------------------- the checks
def _check(name: str, why: str):
    return lambda status, value, fix="": Check(name, status, value, why, fix)


def _platform(f: Facts, n: Need) -> Check:
    c = _check("platform", "gpt-oss-120b needs the GB10's 128 GB of unified memory; only nvidia-smi names the GPU")
    arch = f.machine or "arch unknown"
    made = f"{f.box or 'maker not said'}" + (f" ({f.box_from})" if f.box_from else "")
    if f.is_gb10:
        mem = f" · nvidia-smi memory: {f.gpu.memory} (unified memory)" if f.gpu.memory == "Not Supported" else ""
        return c("pass", f"{f.gpu.names[0]} · {made} · {arch}{mem}")
    if f.gpu.names:
        return c("warn", f"{', '.join(f.gpu.names)} ({arch}) — not a GB10; the runbooks are tuned for GB10, other "
                 "NVIDIA GPUs take the same llama.cpp path", "nothing to fix; plans use this GPU's memory as reported")
    if not f.src.recorded(" ".join(GPU_QUERY)) and not f.src.recorded("nvidia-smi"):
        return c("skip", f"nvidia-smi is not in this snapshot; {made} · {arch}")
    if f.gb10_unanswered or f.dgx is not None:
        what = "a GB10 box" if f.gb10_unanswered else "a DGX OS box"
        return c("fail", f"{what} ({made}) but nvidia-smi lists no GPU: the driver does not reach the GPU, so "
                 "nothing can be served until it does", "sudo reboot, then nvidia-smi; if it still lists nothing: "
                 f"sudo apt install --reinstall nvidia-driver-{DRIVER_BRANCH}-open && sudo reboot "
                 "(docs.nvidia.com/dgx/dgx-spark/known-issues.html)")
    if n.engine == "llamacpp" and is_embedded(n.model):
        return c("skip", f"no NVIDIA GPU found ({arch}); using the embedded default (a tiny "
                 f"{EMBEDDED[n.model]}-architecture model on the CPU)", "run these runbooks on the Spark itself for "
                 "the real model")
    if n.engine == "llamacpp":
        return c("warn", f"no NVIDIA GPU found ({arch}); llama.cpp would serve {n.model} on the CPU: far too slow",
                 "run 01 on the GB10 box, or leave -p model unset for the embedded default here")
    slow = " (Ollama would fall back to the CPU: far too slow)" if n.engine == "ollama" else ""
    return c("warn" if slow else "fail", f"no NVIDIA GPU found ({arch}); {ENGINE_NAMES[n.engine]} serves {n.model} "
             f"on one{slow}", "run 01 on the GB10 box, or -p engine llamacpp for the embedded default here")


def _driver(f: Facts, n: Need) -> Check:
    c = _check("GPU driver", "NVIDIA supports only the 580 driver branch on DGX Spark (DGX OS pairs it with its "
               "kernel and firmware)")
    if not f.gpu.names or not f.gpu.driver:
        return c("skip", "nvidia-smi reported no driver version" if f.gpu.names else "no NVIDIA GPU to ask")
    value = f"{f.gpu.driver}" + (f" (CUDA {f.gpu.cuda})" if f.gpu.cuda else "")
    if not f.is_gb10 or f.gpu.driver.split(".")[0] == DRIVER_BRANCH:
        return c("pass", value)
    return c("warn", f"{value} — not on the {DRIVER_BRANCH} branch", f"sudo apt install nvidia-driver-"
             f"{DRIVER_BRANCH}-open linux-modules-nvidia-{DRIVER_BRANCH}-open-nvidia-hwe-24.04 && sudo reboot")


def _cuda(f: Facts, n: Need) -> Check:
    c = _check("CUDA toolkit on PATH", "04 builds llama.cpp with CUDA: it needs nvcc, 13.0 or later for the GB10 (sm_121)")
    install = "sudo apt install cuda-toolkit-13-0 && export PATH=/usr/local/cuda/bin:$PATH"
    if not f.is_gb10 and not f.gpu.names:
        return c("skip", "no NVIDIA GPU: llama.cpp is built for the CPU here, without CUDA")
    if n.engine != "llamacpp":
        return c("pass", f"not needed: {ENGINE_NAMES[n.engine]} ships its own CUDA runtime")
    on_path, at_default = f.src.run("nvcc", "--version"), f.src.run(NVCC_DEFAULT, "--version")
    if on_path is None and at_default is None:
        if not f.src.recorded("nvcc --version") and not f.src.recorded(f"{NVCC_DEFAULT} --version"):
            return c("skip", "nvcc --version is not in this snapshot")
        return c("warn", f"no nvcc on PATH or at {NVCC_DEFAULT}", install)
    m = re.search(r"release (\d+)\.(\d+)", on_path or at_default or "", re.A)
    release = f"{m.group(1)}.{m.group(2)}" if m else "(unknown release)"
    if m and int(m.group(1)) < 13 and f.is_gb10:   # another GPU's arch is older than sm_121
        return c("warn", f"nvcc {release}: too old for sm_121", install)
    if on_path is None:
        return c("warn", f"nvcc {release} is at {NVCC_DEFAULT} but not on PATH", "export PATH=/usr/local/cuda/bin:$PATH")
    return c("pass", f"nvcc {release} on PATH")


def _dgx_os(f: Facts, n: Need) -> Check:
    c = _check("DGX OS", "DGX OS updates bring the driver, kernel and firmware fixes GB10 boxes need")
    kernel = (f.src.run("uname", "-r") or "").strip()
    tail = "".join(f" · {s}" for s in (f.os_name, f"kernel {kernel}" if kernel else "") if s)
    if f.dgx is None:
        if not f.src.recorded("/etc/dgx-release"):
            return c("skip", f"/etc/dgx-release is not in this snapshot{tail}")
        if f.is_gb10:
            return c("warn", f"no /etc/dgx-release: not DGX OS{tail}", "reinstall DGX OS "
                     "(docs.nvidia.com/dgx/dgx-spark: system recovery)")
        return c("skip", f"not DGX OS (no /etc/dgx-release){tail}")
    ota, factory = f.dgx.get("DGX_OTA_VERSION", []), (f.dgx.get("DGX_SWBUILD_VERSION") or ["?"])[-1]
    if not any(k.startswith("DGX_") for k in f.dgx):
        return c("warn", f"/etc/dgx-release holds no DGX_* release keys{tail}", "cat /etc/dgx-release: it should "
                 "list DGX_SWBUILD_VERSION and DGX_OTA_VERSION; if it does not, ask NVIDIA support")
    if not ota:
        return c("warn", f"factory image {factory}, never updated{tail}", UPDATE)
    value = f"DGX OS {ota[-1]} (factory {factory}, {len(ota)} update{'s' * (len(ota) > 1)}){tail}"
    if kernel.startswith("7.0.0-1019-"):
        return c("warn", value + " — the kernel NVIDIA named for a CMA-accounting issue", UPDATE)
    return c("pass", value)


def _firmware(f: Facts, n: Need) -> Check:
    c = _check("firmware", "GB10 firmware (EC, UEFI) comes through fwupd; NVIDIA's update sequence ends with "
               "fwupdmgr upgrade")
    if not f.is_gb10:
        return c("skip", "no GB10")
    try:
        devices = json.loads(f.src.run("fwupdmgr", "get-devices", "--json", timeout=30) or "null")["Devices"]
        shown = [f"{d['Name']} {d['Version']}" for d in devices if d.get("Name") and d.get("Version")]
    except (ValueError, TypeError, KeyError, AttributeError):
        shown = []
    rc, out = f.src.run_full("fwupdmgr", "get-updates", "--json", timeout=30)
    pending: list[str] | None = [] if rc == 2 else None          # 2: fwupdmgr had nothing to do
    if rc == 0:
        try:
            pending = [d.get("Name", "?") for d in json.loads(out).get("Devices", []) if d.get("Releases")]
        except (ValueError, AttributeError):
            pending = None
    value = ", ".join(shown[:3]) or "devices unknown"
    if pending is None:
        if not shown and not f.src.recorded("fwupdmgr get-devices --json"):
            return c("skip", "fwupdmgr output is not in this snapshot")
        return c("skip", f"{value}; whether an update is pending is unknown",
                 "sudo fwupdmgr refresh && fwupdmgr get-updates")
    if pending:
        return c("warn", f"{value}; update pending for {', '.join(pending)}", "sudo fwupdmgr refresh && "
                 "sudo fwupdmgr upgrade")
    return c("pass", f"{value}; no update pending (as of fwupd's last refresh)")


def _memory(f: Facts, n: Need) -> tuple[Check, int]:
    c = _check("usable memory", "on GB10 nvidia-smi reports no memory (\"Not Supported\"); /proc/meminfo is the "
               "truth, MemTotal is ~121.6 GiB on a 128 GB box, and the page cache shares the unified memory")
    mem = f.mem
    vram = re.fullmatch(r"(\d+)MiB\s*/\s*(\d+)MiB", f.gpu.memory or "", re.A)
    if vram and not f.is_gb10 and not is_embedded(n.model):     # a discrete GPU: the weights live in its memory
        free, need = (int(vram.group(2)) - int(vram.group(1))) * 2**20, n.memory_bytes
        value = f"{_gib(free)} free of {f.gpu.names[0]}'s {_gib(int(vram.group(2)) * 2**20)}; {n.says}"
        return (c("pass", value) if free >= need else c("fail", value, _smaller(n, free))), free
    if "MemAvailable" not in mem:
        return c("skip", _missing(f.src, "/proc/meminfo", "/proc/meminfo unreadable or without MemAvailable")), 0
    usable, need = mem["MemAvailable"] + mem.get("SwapFree", 0) - HEADROOM_BYTES, n.memory_bytes
    value = (f"{_gib(usable)} (MemAvailable {_gib(mem['MemAvailable'])} + SwapFree "
             + (_gib(mem["SwapFree"]) if "SwapFree" in mem else "not recorded")
             + f" − {HEADROOM_BYTES // GIB} headroom; MemTotal {_gib(mem.get('MemTotal', 0))}); {n.says}")
    if f.is_gb10 and "MemTotal" in mem and need > mem["MemTotal"] - HEADROOM_BYTES:
        # the weights live in GPU memory, which swap does not extend: no freeing makes one box hold them
        return c("fail", value, "one GB10 cannot hold it, swap or not: " + _smaller(n, mem["MemTotal"] -
                                                                                      HEADROOM_BYTES)), usable
    if usable >= need:
        return c("pass", value), usable
    room = mem.get("MemTotal", 0) + mem.get("SwapTotal", 0) - HEADROOM_BYTES
    return c("fail", value, "this box is too small for it: " + _smaller(n, room) if room < need else
             f"stop what holds memory (other model servers: docker ps, ollama ps), then {DROP_CACHES}"), usable


def _smaller(n: Need, room: int) -> str:
    """The fix when `n.model` cannot fit in `room` bytes: the catalogue models that would, else a GB10 — or,
    for a model one GB10 cannot hold either (plan.GB10_TOTAL less the headroom), a pair of them first."""
    from .model import CATALOGUE
    from .plan import GB10_TOTAL
    fits = [m for m in CATALOGUE if m != n.model and weights_for(m, n.engine)[0] + MODEL_MARGIN <= room]
    if n.memory_bytes > GB10_TOTAL - HEADROOM_BYTES:
        pair = (f"serve {n.model} on a pair of GB10s, each holding half its layers ({_gib(n.weights_bytes / 2)} "
                f"of weights per box; one holds ~{_gib(GB10_TOTAL - HEADROOM_BYTES)})")
        return pair + (f", or use -p model {' or '.join(fits)} here" if fits else "")
    return f"use -p model {' or '.join(fits)}, or a GB10" if fits else "use a GB10 (128 GB of unified memory)"


def _page_cache(f: Facts, n: Need) -> Check:
    c = _check("page cache", "SGLang and vLLM before 0.24 size their memory from what CUDA reports free, which leaves "
               "out the page cache on unified memory (vllm#35313); llama.cpp counts it as available (llama.cpp #17368)")
    if not f.is_gb10:
        return c("skip", "no GB10: only unified memory shares the page cache with the GPU")
    mem = f.mem
    if "MemFree" not in mem or ("Cached" not in mem and "MemAvailable" not in mem):
        return c("skip", _missing(f.src, "/proc/meminfo", "/proc/meminfo has no MemFree or Cached line"))
    if "Cached" in mem:
        cache, how = mem["Cached"] + mem.get("Buffers", 0), "cached"
    else:                       # not recorded: what the kernel could reclaim beyond free memory
        cache, how = max(mem["MemAvailable"] - mem["MemFree"], 0), "reclaimable (MemAvailable − MemFree)"
    value = f"{_gib(cache)} {how}, {_gib(mem['MemFree'])} free"
    if n.engine in ("sglang", "vllm") and cache >= GIB and mem["MemFree"] - HEADROOM_BYTES < n.memory_bytes:
        who = "SGLang" if n.engine == "sglang" else "vLLM before 0.24"
        return c("warn", f"{value}; {who} would see only the free part", DROP_CACHES)
    return c("pass", value)


def _swap_fix(swaps: list[list[str]], total: int, need: int) -> str:
    """Commands that bring swap to `need`. The only swap is one file: grow it in place. Otherwise (no
    swap, a partition, several files): add a new file for the shortfall under a name no active swap
    uses. The fstab line is added only where it is not there yet."""
    files = [p[0] for p in swaps if p[1] == "file"]

    def fstab(path: str) -> str:
        return (f"(grep -qs '^{path}[[:space:]]' /etc/fstab || echo '{path} none swap sw 0 0' | "
                "sudo tee -a /etc/fstab)")
    if len(swaps) == 1 and files:
        s = files[0]
        return (f"sudo swapoff {s} && sudo fallocate -l {need // GIB}G {s} && sudo chmod 600 {s} && sudo mkswap {s} "
                f"&& sudo swapon {s} && {fstab(s)}")
    used = {p[0] for p in swaps}
    if total and not swaps:   # some swap, but not which (no /proc/swaps): a name no box uses by default
        s = "/swapfile-sparkkit"
    else:
        s = next(p for p in ("/swapfile", *(f"/swapfile{i}" for i in range(2, 100))) if p not in used)
    size = -(-(need - total) // GIB)
    return (f"sudo fallocate -l {size}G {s} && sudo chmod 600 {s} && sudo mkswap {s} && sudo swapon {s} && "
            f"{fstab(s)}")


def _swap(f: Facts, n: Need) -> Check:
    c = _check("swap", "a large model load spikes memory; swap keeps the box alive (running out of unified memory "
               "can wedge it)")
    total = f.mem.get("SwapTotal")
    if total is None:
        return c("skip", _missing(f.src, "/proc/meminfo", "/proc/meminfo has no SwapTotal line"))
    need = SWAP_SGLANG_120B if (n.engine == "sglang" and n.model == "gpt-oss-120b") else SWAP_MIN
    swaps = [ln.split() for ln in (f.src.read("/proc/swaps") or "").splitlines()[1:] if len(ln.split()) >= 3]
    files = [p[0] for p in swaps if p[1] == "file"]
    value = _gib(total) + (f" ({', '.join(files)})" if files else "")
    if total >= need or not f.is_gb10:
        return c("pass", value)
    fix = _swap_fix(swaps, total, need)
    who = "SGLang loading gpt-oss-120b" if need == SWAP_SGLANG_120B else ENGINE_NAMES[n.engine]
    return c("warn", f"{value}; {who} wants ≥ {_gib(need)}", fix)


def _already_there(src: HostSource, weights_dir: str, model: str, name: str) -> int:
    """Bytes of shard `name` 03 already holds: the finished file, or its partial (03 resumes it), in
    03's folder for the model (<model_dir>/<model>/) or straight in the model dir."""
    from .download import partial_path
    sizes = [src.file_size(str(p)) or 0 for p in (Path(weights_dir) / model / name, Path(weights_dir) / name,
                                                  partial_path(Path(weights_dir) / model, name))]
    return max(sizes)


def _disk(f: Facts, n: Need) -> Check:
    what = {"llamacpp": "GGUF shards", "ollama": "Ollama store"}.get(n.engine, "root safetensors")
    c = _check("disk", f"the {what} of {n.model} go here")
    free = f.src.disk_free(n.weights_dir)
    if free is None:
        return c("skip", f"cannot stat {n.weights_dir}" + ("" if f.src.recorded("df -P -k") else
                                                          " (df -P -k is not in this snapshot)"))
    have = sum(_already_there(f.src, n.weights_dir, n.model, p) for p in n.files)
    need = max(n.weights_bytes - have, 0) + GIB
    value = f"{_gib(free)} free at {n.weights_dir}; need {_gib(need)}" + (f" ({_gib(have)} already there)"
                                                                          if have else "")
    if free >= need:
        return c("pass", value)
    return c("fail", value, "free space there, or move the store: sudo systemctl edit ollama.service, add "
             "Environment=\"OLLAMA_MODELS=/bigger/disk\"" if n.engine == "ollama" else
             "free space there, or pass -p model_dir <a bigger disk>")


def _hf_token(f: Facts, n: Need) -> Check:
    c = _check("HF token", "the public model repos download without one, but rate limits are stricter")
    if n.engine == "ollama" or is_embedded(n.model):
        return c("pass", "not needed: " + ("Ollama pulls from its own registry" if n.engine == "ollama" else
                                           "the embedded model is generated here"))
    token = f.src.hf_token()
    if token is None:
        return c("skip", "not in this snapshot")
    if token or not f.is_gb10:
        return c("pass", "present" if token else "absent")
    return c("warn", "absent", "export HF_TOKEN=hf_... (or: hf auth login)")


@dataclass
class HostReport:
    is_gb10: bool
    target: str                 # "gb10" or "embedded"
    usable_bytes: int           # MemAvailable + SwapFree - headroom
    checks: list[Check]
    engine: str = "llamacpp"
    model: str = ""
    source: str = "this machine"
    box: str = ""
    notes: list[str] = field(default_factory=list)     # what a snapshot held that could not be used
    pair: PairResults | None = None     # with -p peer: the second box's checks, pair.PairReport.section()

    @property
    def verdict(self) -> str:
        statuses = {c.status for c in self.checks} | ({self.pair["status"]} if self.pair else set())
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    @property
    def headline(self) -> str:
        box = f"GB10 box ({self.box or 'maker not said'})" if self.is_gb10 else \
            "not a GB10 box — embedded default" if is_embedded(self.model) else "not a GB10 box"
        where = f"{self.source}: " if self.source != "this machine" else ""
        skipped = [c.name for c in self.checks if c.status == "skip"]
        usable = "usable memory unknown" if "usable memory" in skipped else f"{self.usable_bytes / GIB:.1f} GiB usable"
        tail = f"; could not check: {', '.join(skipped)}" if skipped else ""
        notes = f"; {'; '.join(self.notes)}" if self.notes else ""
        failed = [c.name for c in self.checks if c.status == "fail"]
        warned = [c.name for c in self.checks if c.status == "warn"]
        if self.pair:
            failed += [f"pair: {c['name']}" for c in self.pair["checks"] if c["status"] == "fail"]
            warned += [f"pair: {c['name']}" for c in self.pair["checks"] if c["status"] == "warn"]
        lead = (f"failed: {', '.join(failed)}" + (f"; warnings: {', '.join(warned)}" if warned else "") + " — "
                if failed else "")
        pair = f"; pair with {self.pair['peer']} ({self.pair['transport']}): {self.pair['status']}" if self.pair else ""
        return f"{lead}{where}{box}, {usable}{tail}{notes}{pair}"

    def table(self):
        """Every check, failing and warning ones first, each value, reason and fix whole."""
        from .tables import WholeTable
        order = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
        return WholeTable([asdict(c) for c in sorted(self.checks, key=lambda c: order[c.status])])

    def pair_table(self):
        """The pair's checks (with -p peer), as `table()` shows this box's; None for one box."""
        if not self.pair:
            return None
        from .tables import WholeTable
        order = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
        return WholeTable(sorted(self.pair["checks"], key=lambda c: order[c["status"]]))

    def statuses(self) -> dict[str, str]:
        return {c.name: c.status for c in self.checks}

    def record(self) -> tuple[str, str, dict[str, Any]]:
        return self.verdict, self.headline, self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {"is_gb10": self.is_gb10, "target": self.target, "usable_bytes": self.usable_bytes,
                "engine": self.engine, "model": self.model, "source": self.source, "box": self.box,
                "notes": self.notes, "checks": [asdict(c) for c in self.checks],
                **({"pair": self.pair} if self.pair is not None else {})}


def weights_for(model: str, engine: str) -> tuple[int, str]:
    """The bytes `engine` keeps of `model` (the embedded model or a catalogue one), and — when the
    engine's own size is not in sparkkit.model's sources — what stands in for it (the GGUF's size)."""
    from .model import CATALOGUE, architecture, engine_download_bytes
    if engine == "llamacpp" or is_embedded(model):
        return architecture(model).weights_bytes, ""
    size = engine_download_bytes(model, engine)
    if size:
        return size, ""
    return CATALOGUE[model].arch.weights_bytes, f"the GGUF's size: {ENGINE_NAMES[engine]}'s is not in our sources"


def need_for(model: str, engine: str, model_dir: str = "", source: HostSource | None = None) -> Need:
    """What serving `model` with `engine` takes on disk and in memory, and where its weights go."""
    from . import records
    from .model import CATALOGUE
    size, size_from = weights_for(model, engine)
    default = "~/.sparkkit/models" if source is not None and source.is_snapshot else str(records.home() / "models")
    if engine == "llamacpp" or is_embedded(model):
        files = CATALOGUE[model].hf_files if model in CATALOGUE else ()
        return Need(model, engine, size, model_dir or default, files=files)
    if WEIGHTS_HOME[engine].startswith("$SPARKKIT_HOME"):      # SGLang/vLLM: the safetensors 03 places
        from .model import WEIGHTS_SOURCES
        repo = WEIGHTS_SOURCES.get(model, {}).get("safetensors", model)
        return Need(model, engine, size, str(Path(model_dir or default) / repo.replace("/", "--")),
                    size_from=size_from)
    return Need(model, engine, size, model_dir or WEIGHTS_HOME[engine], size_from=size_from)


def preflight(model: str, engine: str = "llamacpp", model_dir: str = "",
              source: HostSource | None = None, facts: Facts | None = None) -> HostReport:
    """Run the host checks for serving `model` (a resolved name) with `engine`, weights in `model_dir`."""
    src = source or HostSource()
    f, n = facts or gather(src), need_for(model, engine, model_dir, src)
    memory, usable = _memory(f, n)
    checks = [_platform(f, n), _driver(f, n), _cuda(f, n), _dgx_os(f, n), _firmware(f, n), memory,
              _page_cache(f, n), _swap(f, n), _disk(f, n), _hf_token(f, n)]
    # a GB10 whose GPU does not answer is still a GB10: its owner wants the real model once the driver is back
    return HostReport(is_gb10=f.is_gb10, target="gb10" if f.is_gb10 or f.gb10_unanswered else "embedded",
                      usable_bytes=max(usable, 0),
                      checks=checks, engine=engine, model=model, source=src.label, box=f.box,
                      notes=list(getattr(src, "problems", [])))


def this_host() -> HostSource:
    """This machine — or, with SPARKKIT_HOST_SNAPSHOT set to a snapshot directory, that snapshot acting as
    this machine for every step (01 writes its state from it; 02 and 04 see its GPU and memory). It is how
    the tests walk an owner's GB10 path, 01 to 07, on a box without one."""
    acting = os.environ.get("SPARKKIT_HOST_SNAPSHOT", "")
    if not acting:
        return HostSource()
    from .snapshot import load
    src = load(acting)
    src.acting = True
    src.label = f"{src.label}, acting as this machine (SPARKKIT_HOST_SNAPSHOT)"
    return src


def run(model: str = "auto", engine: str = "llamacpp", model_dir: str = "",
        source: HostSource | None = None, host: str = "", peer: str = "") -> tuple[HostReport, str]:
    """Runbook 01: resolve `auto`, run the checks, and hand the results to later steps.

    With `host` (a snapshot directory) the checks read that snapshot instead of this machine, and
    nothing is written to the state file: later runbooks run here, so they must keep seeing this
    machine (a snapshot of a GB10 must not make them build for a GPU this machine lacks). The
    report still goes into 01's record, which names the snapshot as its source.

    With `peer` (the second GB10 of a pair: user@host, a snapshot directory or loopback[:GPU]) the pair
    checks (sparkkit.pair) run too: the report carries them, its verdict counts them, and the state's
    "pair" section holds pair.PairReport.section() — cleared (None) for one box, so no stale pair lingers."""
    from . import pair as pairs
    from . import records
    from .errors import ParameterError, check_choice
    from .model import MODEL_CHOICES, SERVABLE, resolve

    check_choice("engine", engine, ENGINES)
    check_choice("model", model, MODEL_CHOICES)
    pairs.parse(peer)                        # a bad peer is refused before anything is read
    if host:
        from .snapshot import load
        src: HostSource = load(host)
    else:
        src = source or this_host()
    facts = gather(src)
    chosen = resolve(model, "gb10" if facts.is_gb10 or facts.gb10_unanswered else "embedded")
    if is_embedded(chosen) and engine != "llamacpp":
        if is_embedded(model):
            raise ParameterError("model", model, f"{', '.join(SERVABLE)} with engine {engine} "
                                 "(the embedded model is served by llamacpp only)")
        chosen = "gpt-oss-120b"
    report = preflight(chosen, engine, model_dir, src, facts)
    paired = pairs.preflight(peer, chosen, engine, model_dir, head_source=src)
    report.pair = paired.section() if paired else None
    if not src.is_snapshot or getattr(src, "acting", False):
        mine = {k: v for k, v in report.to_dict().items() if k != "pair"}     # the pair has its own section
        records.update_state("host", {**mine, "checked_at": records.now()})
        records.update_state("pair", report.pair)
        records.update_state("choice", {"model": chosen, "engine": engine,
                                        "model_dir": need_for(chosen, engine, model_dir).weights_dir})
    return report, chosen
