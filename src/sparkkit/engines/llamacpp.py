"""llama.cpp on the Spark: the CUDA build, and which llama-server the runbooks will start.

The build is rendered as commands (04 shows them; `build()` runs them with live output).
GB10 needs `-DCMAKE_CUDA_ARCHITECTURES=121a-real` for the native MXFP4 tensor-core path
(llama.cpp PR #17906: pp2048 1937 → 2438 tok/s); other GPUs get their own compute capability.
"""
from __future__ import annotations

import shlex
import shutil
from dataclasses import asdict, dataclass
import subprocess
import sys
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
                   clone: bool = True) -> list[str]:
    """Shell commands that build llama-server and llama-bench with CUDA from `src_dir`."""
    src = _shell_path(str(src_dir))
    cmds = []
    if clone:
        cmds.append(f"test -d {src}/.git || git clone --depth 1 {LLAMA_CPP_REPO} {src}")
    cmds.append(f"cmake -S {src} -B {src}/build -DGGML_CUDA=ON -DGGML_NATIVE=ON "
                f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch} -DCMAKE_BUILD_TYPE=Release "
                f"-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF")
    cmds.append(f"cmake --build {src}/build --config Release --target llama-server llama-bench "
                f"-j {jobs or ''}".rstrip())
    return cmds


def _shell_path(path: str) -> str:
    """Quote for the shell but keep a leading ~/ expandable (commands are shown and run as text)."""
    return "~/" + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


def server_binary(src_dir: str) -> Path:
    return Path(src_dir).expanduser() / "build" / "bin" / "llama-server"


def build(commands: list[str], log: Path) -> None:
    """Run the build commands, echoing progress lines; on failure say which step and show the tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("nvcc") is None:
        raise SparkkitError("nvcc is not on PATH, so CMake cannot find CUDA: "
                            "export PATH=/usr/local/cuda/bin:$PATH and re-run 04")
    with open(log, "w") as out:
        for i, cmd in enumerate(commands, 1):
            print(f"[{i}/{len(commands)}] {cmd}", flush=True)
            proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            tail: list[str] = []
            for line in proc.stdout:  # type: ignore[union-attr]
                out.write(line)
                tail = (tail + [line.rstrip()])[-30:]
                if line.startswith("[") and "%]" in line[:8]:     # cmake's "[ 42%] Building ..." lines
                    print(line.rstrip(), flush=True)
            if proc.wait():
                raise SparkkitError(f"build step {i} failed ({cmd}); full log {log}. Last lines:\n" + "\n".join(tail))


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
        build_now: bool = False) -> dict[str, Any]:
    """Runbook 04: decide which llama.cpp serves, rendering (or running) the CUDA build on a GPU box."""
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
    commands = build_commands(src_dir, arch)
    built = server_binary(src_dir)
    if build_now:
        build(commands, records.home() / "build" / "llama-cpp-build.log")
    if not binary and built.is_file():
        binary = str(built)
    rt = runtime(target, binary)
    records.update_state("engine", {"engine": engine, "runtime": rt, "build_commands": commands,
                                    "cuda_arch": arch})
    return EngineReady(engine, rt, commands, arch)


@dataclass
class EngineReady:
    engine: str
    runtime: dict[str, Any]
    build_commands: list[str]
    cuda_arch: str

    def record(self) -> tuple[str, str, dict[str, Any]]:
        rt = self.runtime
        if rt["kind"] == "embedded":
            head = f"embedded llama.cpp (xllamacpp {rt['version']}, pinned {rt['pinned']}) ready on the CPU"
        elif rt.get("path"):
            head = f"llama-server at {rt['path']} ({rt['version'].splitlines()[-1] if rt['version'] else '?'})"
        else:
            return "warn", "llama-server not built yet: run the build commands (or -p build_now True)", asdict(self)
        return "pass", head, asdict(self)
