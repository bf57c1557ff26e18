"""llama.cpp on the Spark: the CUDA build, and which llama-server the runbooks will start.

The build is rendered as commands (04 shows them; `build()` runs them with live output).
GB10 needs `-DCMAKE_CUDA_ARCHITECTURES=121a-real` for the native MXFP4 tensor-core path
(llama.cpp PR #17906: pp2048 1937 → 2438 tok/s); other GPUs get their own compute capability.

The source is a git clone, or a pinned local tree without `.git` (e.g. the llama.cpp vendored in
the llama-cpp-python sdist, for machines without network). A local tree is configured with
`GIT_DIR=/nonexistent` (else CMake stamps in the commit of whatever repository encloses it) and
without the web UI (its assets would be fetched); its `tools/ui/*.in` files must still be there.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParameterError, SparkkitError

LLAMA_CPP_REPO = "https://github.com/ggml-org/llama.cpp"
# GPU name (nvidia-smi) → CMAKE_CUDA_ARCHITECTURES
CUDA_ARCHS = {"GB10": "121a-real", "H100": "90", "H200": "90", "GH200": "90", "B200": "100", "L40S": "89",
              "RTX 4090": "89", "A100": "80"}


def cuda_arch_for(gpu_name: str) -> str:
    for key, arch in CUDA_ARCHS.items():
        if key in gpu_name:
            return arch
    raise ParameterError("cuda_arch", gpu_name, f"one of {sorted(set(CUDA_ARCHS.values()))} "
                                                "(no default for this GPU; pass -p cuda_arch NN)")


def build_commands(src_dir: str, cuda_arch: str = "121a-real", jobs: int | None = None,
                   clone: bool = True, build_dir: str = "", generator: str = "", offline: bool = False) -> list[str]:
    """Shell commands that build llama-server and llama-bench with CUDA from `src_dir`.

    `offline`: `src_dir` is a local tree without `.git` (no clone, no commit stamping, no web UI
    download); `build_dir` defaults to `src_dir/build`; `generator` e.g. "Ninja"."""
    src = _shell_path(str(src_dir))
    out = _shell_path(str(build_dir)) if build_dir else f"{src}/build"
    cmds = []
    if clone and not offline:
        cmds.append(f"test -d {src}/.git || git clone --depth 1 {LLAMA_CPP_REPO} {src}")
    env = "GIT_DIR=/nonexistent " if offline else ""
    gen = f" -G {shlex.quote(generator)}" if generator else ""
    extra = (" -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF"
             " -DLLAMA_USE_PREBUILT_UI=OFF") if offline else ""
    cmds.append(f"{env}cmake -S {src} -B {out}{gen} -DGGML_CUDA=ON -DGGML_NATIVE=ON "
                f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch} -DCMAKE_BUILD_TYPE=Release "
                f"-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF{extra}")
    cmds.append(f"cmake --build {out} --config Release --target llama-server llama-bench "
                f"-j {jobs or ''}".rstrip())
    return cmds


def is_git_checkout(src: Path) -> bool:
    """A .git directory, or a .git file whose gitdir exists. Trees vendored in an sdist keep a
    dangling `.git` file ("gitdir: ../../.git/modules/…"), on which git fails: not a checkout."""
    dotgit = Path(src).expanduser() / ".git"
    if dotgit.is_dir():
        return True
    if dotgit.is_file():
        text = dotgit.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text.split(":", 1)[1].strip())
            return (target if target.is_absolute() else dotgit.parent / target).is_dir()
    return False


def check_source(src_dir: str | Path) -> None:
    """Refuse a local tree the build would fail on late (after minutes of compiling)."""
    src = Path(src_dir).expanduser()
    if not (src / "CMakeLists.txt").is_file():
        raise SparkkitError(f"{src} is not a llama.cpp source tree (no CMakeLists.txt)")
    ui = src / "tools" / "ui"
    missing = [n for n in ("ui.h.in", "ui.cpp.in") if (ui / "CMakeLists.txt").is_file() and not (ui / n).is_file()]
    if missing:   # the UI-assets step reads them even with -DLLAMA_BUILD_UI=OFF (gpu-standin.md §1)
        raise SparkkitError(f"{ui} lacks {', '.join(missing)}: the build would fail at its UI-assets step; "
                            "keep tools/ui/CMakeLists.txt, ui.h.in and ui.cpp.in when trimming the tree")


def _shell_path(path: str) -> str:
    """Quote for the shell but keep a leading ~/ expandable (commands are shown and run as text)."""
    return "~/" + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


def server_binary(src_dir: str, build_dir: str = "") -> Path:
    root = Path(build_dir).expanduser() if build_dir else Path(src_dir).expanduser() / "build"
    return root / "bin" / "llama-server"


class BuildFailed(SparkkitError):
    """A build step failed; says which, why, and the log's last lines."""

    def __init__(self, step: int, command: str, reason: str, log: Path | None, tail: list[str]):
        self.step, self.command, self.reason, self.log, self.tail = step, command, reason, log, tail
        where = f"; full log {log}" if log else ""
        super().__init__(f"build step {step} failed: {reason} ({command}){where}. Last lines:\n" + "\n".join(tail))


def build(commands: list[str], log: Path) -> list[dict[str, Any]]:
    """Run the build commands, echoing progress lines; on failure raise BuildFailed (which step, the tail).

    Returns one {"step", "command", "seconds"} per command."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("nvcc") is None:
        raise BuildFailed(0, "nvcc --version", "nvcc is not on PATH, so CMake cannot find CUDA: "
                          "export PATH=/usr/local/cuda/bin:$PATH and re-run 04", None, [])
    steps = []
    with open(log, "w") as out:
        for i, cmd in enumerate(commands, 1):
            print(f"[{i}/{len(commands)}] {cmd}", flush=True)
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            tail: list[str] = []
            for line in proc.stdout:  # type: ignore[union-attr]
                out.write(line)
                out.flush()
                tail = (tail + [line.rstrip()])[-30:]
                if (line.startswith("[") and "%]" in line[:8]) or _ninja_milestone(line):
                    print(line.rstrip(), flush=True)       # cmake's "[ 42%] ..." / every 10 % of ninja's steps
            rc = proc.wait()
            if rc:
                raise BuildFailed(i, cmd, f"exit code {rc}", log, tail)
            steps.append({"step": i, "command": cmd, "seconds": round(time.monotonic() - t0, 1)})
    return steps


def _ninja_milestone(line: str) -> bool:
    """ninja prints "[k/n] ..." for every step; show about every tenth."""
    if not line.startswith("[") or "/" not in line[:12]:
        return False
    try:
        k, n = (int(x) for x in line[1:line.index("]")].split("/"))
    except ValueError:
        return False
    return k == n or k % max(1, n // 10) == 0


def runtime(target: str, binary: str = "") -> dict[str, Any]:
    """Which llama.cpp the server step runs: a llama-server binary, or the embedded one."""
    if binary:
        path = Path(binary).expanduser()
        if not path.is_file():
            raise ParameterError("binary", binary, "the path of a built llama-server (e.g. ~/llama.cpp/build/bin/"
                                                   "llama-server), or empty for the default")
        version = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
        return {"kind": "binary", "path": str(path), "version": (version.stdout + version.stderr).strip()[-200:]}
    if target == "gb10":
        return {"kind": "binary", "path": "", "version": "not built yet"}
    from .embedded import runtime_info
    return {"kind": "embedded", "python": sys.executable, **runtime_info()}


def run(engine: str = "llamacpp", binary: str = "", src_dir: str = "~/llama.cpp", cuda_arch: str = "auto",
        build_now: bool = False, build_dir: str = "") -> "EngineReady":
    """Runbook 04: decide which llama.cpp serves, rendering (or running) the CUDA build on a GPU box.

    A failed build does not raise here: the returned EngineReady records which step failed and
    why, so 04 writes a `fail` record (with the log's tail) before it stops."""
    from .. import host, records
    from . import check_engine

    check_engine(engine)
    state = records.load_state()
    if "host" not in state:
        host.run(engine=engine)
        state = records.load_state()
    target = state["host"]["target"]
    gpus = host.detect_gpus(host.HostSource())
    arch = cuda_arch if cuda_arch != "auto" else (cuda_arch_for(gpus[0]) if gpus else "121a-real")
    src = Path(src_dir).expanduser()
    offline = (src / "CMakeLists.txt").is_file() and not is_git_checkout(src)   # a pinned local tree
    generator = "Ninja" if shutil.which("ninja") else ""
    commands = build_commands(src_dir, arch, jobs=os.cpu_count() if build_now else None, offline=offline,
                              build_dir=build_dir, generator=generator)
    built = server_binary(src_dir, build_dir)
    steps: list[dict[str, Any]] = []
    failure: dict[str, Any] | None = None
    if build_now:
        log = records.home() / "build" / "llama-cpp-build.log"
        t0 = time.monotonic()
        try:
            if offline:
                check_source(src)
            steps = build(commands, log)
        except BuildFailed as e:
            failure = {"step": e.step, "command": e.command, "reason": e.reason, "log": str(e.log or ""),
                       "tail": e.tail, "seconds": round(time.monotonic() - t0, 1)}
        except SparkkitError as e:
            failure = {"step": 0, "command": "check the source tree", "reason": str(e), "log": "", "tail": [],
                       "seconds": round(time.monotonic() - t0, 1)}
    if failure is None and not binary and built.is_file():
        binary = str(built)
    rt = runtime(target, binary) if failure is None else {"kind": "binary", "path": "", "version": "build failed"}
    if failure is None:
        records.update_state("engine", {"engine": engine, "runtime": rt, "build_commands": commands,
                                        "cuda_arch": arch})
    return EngineReady(engine, rt, commands, arch, gpus, steps, failure)


@dataclass
class EngineReady:
    engine: str
    runtime: dict[str, Any]
    build_commands: list[str]
    cuda_arch: str
    gpus: list[str] = field(default_factory=list)
    build_steps: list[dict[str, Any]] = field(default_factory=list)    # what ran, with seconds
    build_failure: dict[str, Any] | None = None                       # step, command, reason, log, tail

    def record(self) -> tuple[str, str, dict[str, Any]]:
        rt = self.runtime
        if self.build_failure:
            f = self.build_failure
            last = next((ln for ln in reversed(f["tail"]) if ln.strip()), "")
            return ("fail", f"build step {f['step']} failed: {f['reason'][:200]}" + (f" — {last[:160]}" if last else ""),
                    asdict(self))
        if rt["kind"] == "embedded":
            head = f"embedded llama.cpp (xllamacpp {rt['version']}, pinned {rt['pinned']}) ready on the CPU"
        elif rt.get("path"):
            head = f"llama-server at {rt['path']} ({rt['version'].splitlines()[-1] if rt['version'] else '?'})"
            if self.build_steps:
                head += f", built for CUDA arch {self.cuda_arch} in {sum(s['seconds'] for s in self.build_steps):.0f} s"
        else:
            return "warn", "llama-server not built yet: run the build commands (or -p build_now True)", asdict(self)
        return "pass", head, asdict(self)
