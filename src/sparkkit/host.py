"""What kind of box this is, and whether it can serve the model (runbook 01).

Facts are read through `HostSource`, which reads files and runs commands on the live host. It
is the seam where recorded host snapshots plug in. No check needs root; none reads the serial
number in /etc/dgx-release; the HF token is only ever reported as present or absent.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

GIB = 1024**3
STATUSES = ("pass", "warn", "fail", "skip")
# Desktop, page cache and the engine's own buffers need room besides the model (spark.md §2).
HEADROOM_BYTES = 4 * GIB


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

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return None

    def run(self, *argv: str, timeout: float = 10.0) -> str | None:
        if shutil.which(argv[0]) is None:
            return None
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

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

    def exists(self, path: str) -> bool:
        return Path(path).expanduser().is_file()

    def env_has(self, name: str) -> bool:
        return bool(os.environ.get(name))


def meminfo(text: str | None) -> dict[str, int]:
    """/proc/meminfo → bytes per key."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def detect_gpus(src: HostSource) -> list[str]:
    csv = src.run("nvidia-smi", "--query-gpu=name", "--format=csv,noheader")
    return [ln.strip() for ln in (csv or "").splitlines() if ln.strip()]


@dataclass
class HostReport:
    is_gb10: bool
    target: str                 # "gb10" or "embedded"
    usable_bytes: int           # MemAvailable + SwapFree - headroom
    checks: list[Check]

    @property
    def verdict(self) -> str:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    @property
    def headline(self) -> str:
        box = "GB10 box" if self.is_gb10 else "not a GB10 box — embedded default"
        skipped = [c.name for c in self.checks if c.status == "skip"]
        tail = f"; could not check: {', '.join(skipped)}" if skipped else ""
        return f"{box}, {self.usable_bytes / GIB:.1f} GiB usable{tail}"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.checks])

    def record(self) -> tuple[str, str, dict[str, Any]]:
        return self.verdict, self.headline, self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {"is_gb10": self.is_gb10, "target": self.target, "usable_bytes": self.usable_bytes,
                "checks": [asdict(c) for c in self.checks]}


def preflight(model_bytes: int, model_dir: str, source: HostSource | None = None) -> HostReport:
    """Run the host checks for serving a model of `model_bytes` from `model_dir`."""
    src = source or HostSource()
    checks: list[Check] = []

    gpus = detect_gpus(src)
    is_gb10 = any("GB10" in g for g in gpus)
    if is_gb10:
        checks.append(Check("platform", "pass", f"{gpus[0]} ({src.machine()})",
                            "gpt-oss-120b needs the GB10's 128 GB of unified memory"))
    elif gpus:
        checks.append(Check("platform", "warn", f"{', '.join(gpus)} ({src.machine()}) — not a GB10",
                            "the runbooks are tuned for GB10; other NVIDIA GPUs work with the same llama.cpp path",
                            "nothing to fix; plans use this GPU's memory as reported"))
    else:
        checks.append(Check("platform", "skip", f"no NVIDIA GPU found ({src.machine()}); using the embedded default",
                            "without a GB10 the runbooks serve a tiny gpt-oss-architecture model on the CPU",
                            "run these runbooks on the Spark itself for the real model"))

    mem = meminfo(src.read("/proc/meminfo"))
    if "MemAvailable" in mem:
        usable = mem["MemAvailable"] + mem.get("SwapFree", 0) - HEADROOM_BYTES
        need = model_bytes + 2 * GIB
        status = "pass" if usable >= need else "fail"
        checks.append(Check("usable memory", status,
                            f"{usable / GIB:.1f} GiB (MemAvailable {mem['MemAvailable'] / GIB:.1f} + SwapFree "
                            f"{mem.get('SwapFree', 0) / GIB:.1f} − {HEADROOM_BYTES // GIB} headroom; "
                            f"MemTotal {mem.get('MemTotal', 0) / GIB:.1f} GiB); model needs ≥ {need / GIB:.1f}",
                            "on GB10 nvidia-smi reports no memory; /proc/meminfo is the truth, and the page "
                            "cache competes with the model for unified memory",
                            "" if status == "pass" else "sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"))
    else:
        usable = 0
        checks.append(Check("usable memory", "skip", "/proc/meminfo unreadable", "needed to plan memory"))

    swap_total = mem.get("SwapTotal")
    if swap_total is None:
        checks.append(Check("swap", "skip", "unknown", "swap keeps a load spike from killing the server"))
    else:
        checks.append(Check("swap", "pass" if swap_total >= 8 * GIB or not is_gb10 else "warn",
                            f"{swap_total / GIB:.1f} GiB",
                            "a large model load can spike memory; swap keeps the box alive",
                            "" if swap_total >= 8 * GIB else
                            "sudo fallocate -l 16G /swapfile && sudo chmod 600 /swapfile && sudo mkswap /swapfile "
                            "&& sudo swapon /swapfile"))

    free = src.disk_free(model_dir)
    need_disk = model_bytes + GIB
    if free is None:
        checks.append(Check("disk", "skip", f"cannot stat {model_dir}", "the weights must fit on disk"))
    else:
        checks.append(Check("disk", "pass" if free >= need_disk else "fail",
                            f"{free / GIB:.1f} GiB free at {model_dir}; need {need_disk / GIB:.1f}",
                            "the weights are downloaded here",
                            "" if free >= need_disk else "free space, or pass -p model_dir <a bigger disk>"))

    # Presence only: the token's value is never read into memory here, let alone printed.
    token = src.env_has("HF_TOKEN") or src.exists("~/.cache/huggingface/token")
    checks.append(Check("HF token", "pass" if token or not is_gb10 else "warn",
                        "present" if token else "absent",
                        "public gpt-oss repos download without one, but rate limits are stricter",
                        "" if token else "export HF_TOKEN=hf_... (or: hf auth login)"))

    if is_gb10:
        nvcc = src.run("nvcc", "--version")
        checks.append(Check("CUDA toolkit on PATH", "pass" if nvcc else "warn",
                            "nvcc found" if nvcc else "nvcc not on PATH",
                            "building llama.cpp with CUDA needs nvcc",
                            "" if nvcc else "export PATH=/usr/local/cuda/bin:$PATH"))

    return HostReport(is_gb10=is_gb10, target="gb10" if is_gb10 else "embedded", usable_bytes=max(usable, 0),
                      checks=checks)


def run(model: str = "auto", engine: str = "llamacpp", model_dir: str = "",
        source: HostSource | None = None) -> tuple[HostReport, str]:
    """Runbook 01: resolve `auto`, run the checks, and hand the results to later steps."""
    from . import records
    from .engines import check_engine
    from .model import architecture, resolve

    check_engine(engine)
    src = source or HostSource()
    target = "gb10" if any("GB10" in g for g in detect_gpus(src)) else "embedded"
    chosen = resolve(model, target)
    directory = model_dir or str(records.home() / "models")
    report = preflight(architecture(chosen).weights_bytes, directory, src)
    records.update_state("host", {**report.to_dict(), "checked_at": records.now()})
    records.update_state("choice", {"model": chosen, "engine": engine, "model_dir": directory})
    return report, chosen
