"""llama.cpp on the Spark: the CUDA build, and which llama-server the runbooks will start.

The build is rendered as commands (04 shows them; `build()` runs them with live output).
GB10 needs `-DCMAKE_CUDA_ARCHITECTURES=121a-real` for the native MXFP4 tensor-core path
(llama.cpp PR #17906: pp2048 1937 → 2438 tok/s); other GPUs get their own compute capability.

The source is pinned: the llama.cpp tree vendored in the PyPI sdist of the pinned xllamacpp
(`thirdparty/llama.cpp`, which is llama.cpp release LLAMA_CPP_RELEASE, the build 02's memory
model replays and the embedded engine runs), fetched once, checked by its sha256 (SDISTS) and
extracted under `records.home()/build/`. It has no `.git`, so it is configured with
`GIT_DIR=/nonexistent` (else CMake stamps in the commit of whatever repository encloses it), with
the release number and commit passed in (-DLLAMA_BUILD_NUMBER/-DLLAMA_BUILD_COMMIT), and without
the web UI (its assets would be fetched); its `tools/ui/*.in` files must still be there.
An owner may bring a tree of their own (`src_dir`: a git checkout, whose commit is recorded, or a
local tree) or a built binary (`binary`).

A finished build leaves a stamp beside it (STAMP: source, CUDA arch, CMake flags, release,
commit); a later 04 whose stamp matches, with a binary that answers `--version`, reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ParameterError, SparkkitError
from . import EngineSpec
from .embedded import LLAMA_CPP_RELEASE, PINNED_XLLAMACPP
from .launch import KV_TYPES

SPEC = EngineSpec(
    name="llamacpp", label="llama.cpp", runs_as="process", weights="gguf", weights_home="$SPARKKIT_HOME/models",
    kv_types=KV_TYPES, default_port=8080, health="/health", served_name="--alias (the catalogue name)",
    install="04 builds the pinned llama-server (or serves the embedded llama.cpp off-GPU)", messages=True,
    # Claude Code's main conversation and each running subagent keep a slot of their own in one unified KV pool
    # (the same memory as one slot: a slot grows to the whole context, idle ones are cleared when it runs short).
    # With 1 slot a subagent's turn lost its whole prompt to the next one (records/agentloop/BENCH.md).
    slots=4)

# The PyPI sdist of each xllamacpp pin (its thirdparty/llama.cpp is the release the pin wraps), checked
# by hash: bumping PINNED_XLLAMACPP needs its row here (url, sha256 and size from
# https://pypi.org/simple/xllamacpp/ as JSON; `pip download` would run the sdist's build backend).
# commit: llama.cpp's git commit of that release. For b11549 it was not found (the sdist carries no
# .git, and the xorbitsai/xllamacpp history searchable when this was written ends at b8929, before its
# submodule moved to b11549), so the release tag stands in for it: `llama-server --version` then says
# "version: 11549 (b11549)", which names the source as exactly as the commit would.
SDISTS: dict[str, dict[str, Any]] = {
    "2026.10.11549": {
        "url": "https://files.pythonhosted.org/packages/87/62/b6dfaaf346d3d4fd0e2a2df755f2693b77673f2735da7ba0592af9d2f09e/"
               "xllamacpp-2026.10.11549.tar.gz",
        "sha256": "c17ee1163006f70726abb9f72137830818f3d8cb60bfc34cb232d08428eaa22b",
        "bytes": 37_722_765,
        "commit": "b11549",
    },
}
SDIST_TREE = ("thirdparty", "llama.cpp")   # where the sdist keeps llama.cpp, below its top folder
STAMP = "sparkkit-build.json"              # beside the build: what it was built from and how
MARKER = "SPARKKIT_SOURCE"                 # in an extracted (or carried) tree: which sdist it came from
BUILD_MODES = ("auto", "yes", "no")
# GPU name (nvidia-smi) → CMAKE_CUDA_ARCHITECTURES
CUDA_ARCHS = {"GB10": "121a-real", "H100": "90", "H200": "90", "GH200": "90", "B200": "100", "L40S": "89",
              "RTX 4090": "89", "A100": "80"}


def cuda_arch_for(gpu_name: str) -> str:
    for key, arch in CUDA_ARCHS.items():
        if key in gpu_name:
            return arch
    raise ParameterError("cuda_arch", gpu_name, f"one of {sorted(set(CUDA_ARCHS.values()))} "
                                                "(no default for this GPU; pass -p cuda_arch NN)")


def sdist(version: str = PINNED_XLLAMACPP) -> dict[str, Any]:
    """The pinned sdist: url, sha256, bytes, commit, plus its file name and the llama.cpp release."""
    if version not in SDISTS:
        raise SparkkitError(f"xllamacpp {version} is pinned but sparkkit.engines.llamacpp.SDISTS has no row for its "
                            "sdist: add its url, sha256 and size (from https://pypi.org/simple/xllamacpp/) and the "
                            "llama.cpp commit, so 04 builds the release the plan models")
    entry = SDISTS[version]
    return {**entry, "version": version, "name": entry["url"].rsplit("/", 1)[-1],
            "release": "b" + version.rsplit(".", 1)[-1]}


def pinned_tree(home: str | Path | None = None) -> Path:
    """Where 04 extracts the pinned llama.cpp (`home`: records.home() by default)."""
    if home is None:
        from .. import records
        home = records.home()
    return Path(home).expanduser() / "build" / f"llama.cpp-{LLAMA_CPP_RELEASE}"


def pinned_source_commands(home: str = "~/.sparkkit") -> list[str]:
    """Shell commands doing what 04 does in Python before the build: fetch the pinned sdist, check its
    sha256, extract its thirdparty/llama.cpp (shown to owners who build by hand; 04 does not run them)."""
    e = sdist()
    archive = _shell_path(f"{home}/build/sources/{e['name']}")
    tree = _shell_path(f"{home}/build/llama.cpp-{e['release']}")
    top = e["name"][:-len(".tar.gz")]
    return [f"test -f {archive} || curl -fL --create-dirs -o {archive} {e['url']}",
            f"printf '%s  %s\\n' {e['sha256']} {archive} | sha256sum -c",
            f"mkdir -p {tree} && tar xzf {archive} -C {tree} --strip-components={1 + len(SDIST_TREE)} "
            f"{top}/{'/'.join(SDIST_TREE)}",
            *(f"patch -p1 -d {tree} < {_shell_path(str(p))}" for p in patches())]


def pinned_build_commands(cuda_arch: str, home: str = "~/.sparkkit", jobs: int | None = None,
                          generator: str = "") -> list[str]:
    """The commands that build the pinned tree (as 04 shows them; `home` kept as written)."""
    e = sdist()
    return build_commands(f"{home}/build/llama.cpp-{e['release']}", cuda_arch, jobs=jobs, generator=generator,
                          offline=True, build_number=int(e["release"][1:]), commit=e["commit"])


def build_commands(src_dir: str, cuda_arch: str = "121a-real", jobs: int | None = None,
                   build_dir: str = "", generator: str = "", offline: bool = False,
                   build_number: int | None = None, commit: str = "") -> list[str]:
    """Shell commands that build llama-server and llama-bench with CUDA from the tree `src_dir`.

    `offline`: `src_dir` is a local tree without `.git` (no commit stamping from git, no web UI
    download); `build_number`/`commit`: what llama-server --version reports (the pinned tree's
    release); `build_dir` defaults to `src_dir/build`; `generator` e.g. "Ninja". Nothing is cloned:
    the tree is the pinned release 04 extracts, or one the owner brings."""
    src = _shell_path(str(src_dir))
    out = _shell_path(str(build_dir)) if build_dir else f"{src}/build"
    env = "GIT_DIR=/nonexistent " if offline else ""
    gen = f" -G {shlex.quote(generator)}" if generator else ""
    extra = (" -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF"
             " -DLLAMA_USE_PREBUILT_UI=OFF") if offline else ""
    if build_number is not None:
        extra += f" -DLLAMA_BUILD_NUMBER={int(build_number)}"
    if commit:
        extra += f" -DLLAMA_BUILD_COMMIT={shlex.quote(commit)}"
    # -DGGML_RPC=ON and ggml-rpc-server (llama.cpp's rpc-server, tools/rpc): the same build serves one box or, with rpc-server on the other box, a pair
    return [f"{env}cmake -S {src} -B {out}{gen} -DGGML_CUDA=ON -DGGML_RPC=ON -DGGML_NATIVE=ON "
            f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch} -DCMAKE_BUILD_TYPE=Release "
            f"-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF{extra}",
            f"cmake --build {out} --config Release --target llama-server llama-bench ggml-rpc-server -j {jobs or ''}".rstrip()]


# ----------------------------------------------------------------------------- the pinned source

class SourceHashMismatch(SparkkitError):
    """The archive is not the pinned sdist."""


class UnsafeArchive(SparkkitError):
    """A member would land outside the tree, or is a link or a device."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_cache() -> Path:
    from .. import records
    return records.home() / "build" / "sources"


def _mismatch(path: Path, entry: dict[str, Any], got: str, fate: str) -> SourceHashMismatch:
    return SourceHashMismatch(f"{path} has sha256 {got}, but {entry['name']} (xllamacpp {entry['version']}, llama.cpp "
                              f"{entry['release']}) has sha256 {entry['sha256']}: {fate}")


def fetch_source(source_archive: str = "", version: str = PINNED_XLLAMACPP) -> Path:
    """The pinned sdist, checked by hash: `source_archive` (the owner's copy), else the one in
    source_cache() (an offline box can be seeded by copying it there), else downloaded into it."""
    entry = sdist(version)
    if source_archive:
        path = Path(source_archive).expanduser()
        if not path.is_file():
            raise ParameterError("source_archive", source_archive,
                                 f"the path of {entry['name']} (sha256 {entry['sha256']}), or empty to fetch it")
        got = sha256_of(path)
        if got != entry["sha256"]:
            raise _mismatch(path, entry, got, "not used (left where it is)")
        print(f"using {path} (sha256 checked)", flush=True)
        return path
    cached = source_cache() / entry["name"]
    if cached.is_file():
        got = sha256_of(cached)
        if got == entry["sha256"]:
            print(f"using {cached} (sha256 checked)", flush=True)
            return cached
        bad = cached.with_name(cached.name + ".bad")
        cached.replace(bad)
        print(str(_mismatch(cached, entry, got, f"kept aside as {bad.name}, not used; fetching it again")), flush=True)
    return _download(entry, cached)


def _download(entry: dict[str, Any], dest: Path) -> Path:
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    size = entry.get("bytes") or 0
    print(f"fetching {entry['name']} ({size / 1e6:.1f} MB: llama.cpp {entry['release']}) from {entry['url']}", flush=True)
    h, done, shown = hashlib.sha256(), 0, 0
    try:
        with httpx.stream("GET", entry["url"], follow_redirects=True, timeout=httpx.Timeout(60.0, connect=30.0)) as r:
            r.raise_for_status()
            with open(partial, "wb") as out:
                for chunk in r.iter_bytes(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if size and done * 4 // size > shown:
                        shown = done * 4 // size
                        print(f"  {min(100, done * 100 // size)} % ({done / 1e6:.1f} MB)", flush=True)
    except (httpx.HTTPError, OSError) as e:
        raise SparkkitError(f"could not fetch {entry['url']} ({e.__class__.__name__}: {e}); on a box without network, "
                            f"copy {entry['name']} (sha256 {entry['sha256']}) into {dest.parent} or pass "
                            "-p source_archive PATH") from None
    got = h.hexdigest()
    if got != entry["sha256"]:
        bad = dest.with_name(dest.name + ".bad")
        partial.replace(bad)
        raise _mismatch(bad, entry, got, f"downloaded from {entry['url']}, kept aside as {bad.name} and not used")
    partial.replace(dest)
    return dest


def extract_source(archive: Path, dest: Path, sha256: str = "") -> Path:
    """Extract the sdist's thirdparty/llama.cpp/ (only that) into `dest`, refusing absolute paths,
    `..`, links and devices; into `dest.partial` first, renamed when complete. A `dest` already
    extracted from the archive with this sha256 (its MARKER says so) is kept as it is."""
    sha256 = sha256 or sha256_of(archive)
    marker = dest / MARKER
    if marker.is_file() and sha256 in marker.read_text(errors="replace"):
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"extracting {'/'.join(SDIST_TREE)}/ of {archive.name} into {dest}", flush=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            picked = []
            for m in tar.getmembers():
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts:
                    raise UnsafeArchive(f"{archive}: member {m.name!r} would land outside the tree; nothing extracted")
                if len(parts) <= 1 + len(SDIST_TREE) or parts[1:1 + len(SDIST_TREE)] != SDIST_TREE:
                    continue
                if not (m.isfile() or m.isdir()):
                    kind = "a symbolic link" if m.issym() else "a hard link" if m.islnk() else "not a file"
                    raise UnsafeArchive(f"{archive}: member {m.name!r} is {kind}; nothing extracted "
                                        "(the pinned sdist has only files and folders)")
                picked.append((m, PurePosixPath(*parts[1 + len(SDIST_TREE):])))
            if not picked:
                raise SparkkitError(f"{archive} has no {'/'.join(SDIST_TREE)}/: not an xllamacpp sdist")
            for m, rel in picked:
                out = tmp.joinpath(*rel.parts)
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as f, open(out, "wb") as o:   # type: ignore[union-attr]
                    shutil.copyfileobj(f, o, 1 << 20)
                out.chmod(0o755 if m.mode & 0o111 else 0o644)
        (tmp / MARKER).write_text(f"llama.cpp tree vendored in xllamacpp {_version_of(archive.name)} "
                                  f"({archive.name}, sha256 {sha256}, {'/'.join(SDIST_TREE)}), extracted by sparkkit 04\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return dest


def _version_of(name: str) -> str:
    stem = name[:-len(".tar.gz")] if name.endswith(".tar.gz") else name
    return stem.split("-", 1)[-1]


def tree_release(src: Path) -> str:
    """The pinned release, where `src`'s MARKER says it is the pinned sdist's tree (04's own extraction,
    or the GPU stand-in's trimmed carry); "" otherwise."""
    marker = Path(src).expanduser() / MARKER
    if marker.is_file() and f"xllamacpp {PINNED_XLLAMACPP} " in marker.read_text(errors="replace"):
        return LLAMA_CPP_RELEASE
    return ""


def git_commit(src: Path) -> str:
    try:
        p = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else "unknown"


def git_is_release(src: Path, release: str = LLAMA_CPP_RELEASE) -> bool:
    try:
        p = subprocess.run(["git", "-C", str(src), "tag", "--points-at", "HEAD"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return release in p.stdout.split()


# ----------------------------------------------------------------------------- sparkkit's patches

def patches() -> list[Path]:
    """sparkkit's patches for the pinned release (package data, applied in name order; each explains itself)."""
    from importlib.resources import files
    folder = Path(str(files("sparkkit").joinpath("data/llamacpp-patches")))
    return sorted(folder.glob("*.patch"))


def patch_ids() -> list[str]:
    """What the stamp and the record name: each patch and the start of its sha256."""
    return [f"{p.name} sha256:{sha256_of(p)[:16]}" for p in patches()]


def _hunks(text: str) -> list[tuple[str, str, str]]:
    """(file, old block, new block) of each hunk of a unified diff (text before the first --- is its prose)."""
    out, target, old, new, inside = [], "", [], [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("+++ "):
            target = line[4:].strip().split("/", 1)[1]
        elif line.startswith("@@"):
            if inside:
                out.append((target, "".join(old), "".join(new)))
            old, new, inside = [], [], True
        elif inside and line[:1] in (" ", "-", "+"):
            (old.append(line[1:]) if line[0] != "+" else None)
            (new.append(line[1:]) if line[0] != "-" else None)
        elif inside and line.startswith("--- "):
            out.append((target, "".join(old), "".join(new)))
            inside = False
    if inside:
        out.append((target, "".join(old), "".join(new)))
    return out


def apply_patches(tree: Path) -> list[str]:
    """Apply each patch to the extracted pinned tree: every hunk must match exactly once (or be applied already);
    anything else is one sentence naming the patch, and the file is left as it was."""
    done = []
    for patch in patches():
        edits: dict[Path, str] = {}
        for target, old, new in _hunks(patch.read_text(encoding="utf-8")):
            path = Path(tree) / target
            text = edits.get(path) or (path.read_text(encoding="utf-8") if path.is_file() else "")
            if text.count(old) == 1:
                edits[path] = text.replace(old, new)
            elif not (new and text.count(new) == 1):
                raise SparkkitError(f"sparkkit's patch {patch.name} does not fit {path} (was the tree changed?): "
                                    f"remove {tree} and re-run 04, which extracts the pinned release again")
        for path, text in edits.items():
            tmp = path.with_name(path.name + ".sparkkit-tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        done.append(patch.name)
    return done


# ----------------------------------------------------------------------------- the stamp

def stamp_path(binary: Path) -> Path:
    """The stamp sits in the build folder, beside bin/."""
    return Path(binary).parent.parent / STAMP


def cmake_flags(configure: str) -> list[str]:
    """The flags of the configure command that decide what is built (paths aside)."""
    words = shlex.split(configure)
    return [w for w in words if w.startswith("-D")] + [f"-G {words[i + 1]}" for i, w in enumerate(words[:-1]) if w == "-G"]


def stamp_key(source: str, cuda_arch: str, configure: str, release: str, commit: str,
              patched: tuple[str, ...] = ()) -> dict[str, Any]:
    key = {"source": source, "cuda_arch": cuda_arch, "cmake_flags": cmake_flags(configure),
           "release": release, "commit": commit}
    if patched:                    # a build from before a patch (or with another one) is not reused
        key["patches"] = list(patched)
    return key


def usable_build(binary: Path, key: dict[str, Any]) -> str | None:
    """The `--version` text of `binary` where it exists, its stamp matches `key` and it answers; else None."""
    stamp = stamp_path(binary)
    if not (Path(binary).is_file() and stamp.is_file()):
        return None
    try:
        written = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if {k: written.get(k) for k in key} != key:
        return None
    try:
        p = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (p.stdout + p.stderr).strip()[-200:] if p.returncode == 0 else None


def write_stamp(binary: Path, key: dict[str, Any], **more: Any) -> Path:
    from .. import records
    stamp = stamp_path(binary)
    stamp.write_text(json.dumps({**key, **more, "built_at": records.now()}, indent=1) + "\n")
    return stamp


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
        raise SparkkitError(f"{src} is not a llama.cpp source tree (no CMakeLists.txt); leave src_dir empty for the "
                            f"pinned llama.cpp {LLAMA_CPP_RELEASE}, which 04 fetches and checks itself")
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


def check_nvcc() -> None:
    if shutil.which("nvcc") is None:
        raise BuildFailed(0, "nvcc --version", "nvcc is not on PATH, so CMake cannot find CUDA: "
                          "export PATH=/usr/local/cuda/bin:$PATH and re-run 04", None, [])


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
    check_nvcc()
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


def run(engine: str = "llamacpp", binary: str = "", src_dir: str = "", cuda_arch: str = "auto",
        build: str = "auto", build_dir: str = "", source_archive: str = "", build_now: bool = False) -> "EngineReady":
    """Runbook 04: decide which llama.cpp serves; on a GPU box, build the pinned llama-server (or reuse it).

    `build`: "auto" builds where the host is a GPU box (01's target gb10, or an NVIDIA GPU seen here)
    and no usable build of the same source, arch and flags exists; "yes" builds (or reuses such a
    build) whatever the host; "no" only renders the commands. `build_now=True` is the old spelling
    of build="yes". Without `src_dir`, the source is the pinned release (SDISTS), fetched only when
    it is built: nothing touches the network otherwise.

    A failed build does not raise here: the returned EngineReady records which step failed and
    why, so 04 writes a `fail` record (with the log's tail) before it stops."""
    from .. import host, records
    from . import check_engine

    if check_engine(engine) != "llamacpp":
        raise ParameterError("engine", engine, "llamacpp here (engines.module(engine).prepare for the others)")
    mode = "yes" if build_now is True else build
    if isinstance(mode, bool):      # run(…, True) as build_now was once passed
        mode = "yes" if mode else "no"
    if mode not in BUILD_MODES:
        raise ParameterError("build", build, "auto (build on a GPU box unless a usable build is there), yes or no")
    state = records.load_state()
    if "host" not in state:
        host.run(engine=engine)
        state = records.load_state()
    target = records.section(state, "host", "target")["target"]
    gpus = host.detect_gpus(host.this_host())
    gpu_box = target == "gb10" or bool(gpus)
    arch = cuda_arch if cuda_arch != "auto" else (cuda_arch_for(gpus[0]) if gpus else "121a-real")
    generator = "Ninja" if shutil.which("ninja") else ""
    warnings: list[str] = []

    # The source: the pinned release (default), or the owner's tree. Nothing is fetched yet.
    if src_dir:
        src = Path(src_dir).expanduser()
        pinned = False
        if is_git_checkout(src):
            offline, release, commit = False, "", git_commit(src)
            if git_is_release(src):
                release = LLAMA_CPP_RELEASE
            else:
                warnings.append(f"src_dir {src} is llama.cpp at commit {commit[:12]}, not the pinned release "
                                f"{LLAMA_CPP_RELEASE} that 02's memory plan and the embedded engine follow")
            source: dict[str, Any] = {"git": str(src), "commit": commit}
            source_id = f"git {commit}"
        else:
            offline, release = True, tree_release(src)
            commit = sdist()["commit"] if release else "unknown"
            if not release and (src / "CMakeLists.txt").is_file():
                warnings.append(f"src_dir {src} is a llama.cpp tree of unknown release (no .git, no {MARKER} naming "
                                f"xllamacpp {PINNED_XLLAMACPP}); the plan follows {LLAMA_CPP_RELEASE}")
            source = {"tree": str(src)}
            source_id = f"tree {src}"
    else:
        entry = sdist()
        src, pinned, offline = pinned_tree(), True, True
        release, commit = entry["release"], entry["commit"]
        source = {"url": entry["url"], "sha256": entry["sha256"], "archive": source_archive or ""}
        source_id = f"sha256 {entry['sha256']}"
    number = int(release[1:]) if pinned or (offline and release) else None
    stamp_commit = commit if number is not None else ""

    def commands_for(jobs: int | None) -> list[str]:
        return build_commands(str(src), arch, jobs=jobs, offline=offline, build_dir=build_dir, generator=generator,
                              build_number=number, commit=stamp_commit)

    commands = commands_for(None)
    built = server_binary(str(src), build_dir)
    patched = tuple(patch_ids()) if pinned else ()
    key = stamp_key(source_id, arch, commands[0], release or "unknown", commit, patched)
    info: dict[str, Any] = {"release": release or "unknown", "commit": commit, "source": source, "cuda_arch": arch,
                            "tree": str(src), "binary": str(built), "stamp": str(stamp_path(built)),
                            "seconds": 0.0, "reused": False, "built": False, "mode": mode, "gpu_box": gpu_box}
    steps: list[dict[str, Any]] = []
    failure: dict[str, Any] | None = None
    if binary:
        info.update(binary=str(Path(binary).expanduser()), action="the owner's binary")
    elif (version := usable_build(built, key)) is not None:
        print(f"reusing the build at {built} ({version.splitlines()[-1] if version else '?'}): its stamp "
              f"matches llama.cpp {info['release']}, CUDA arch {arch} and the flags", flush=True)
        binary = str(built)
        info.update(reused=True, action="reused")
    elif mode == "auto" and gpu_box and target != "gb10" and shutil.which("nvcc") is None:
        # 05 can serve with the embedded engine here, so a missing toolkit is a warning, not a failure
        warnings.append(f"not building for this {gpus[0] if gpus else 'GPU'}: nvcc is not on PATH "
                        "(export PATH=/usr/local/cuda/bin:$PATH and re-run 04)")
        info["action"] = "rendered"
    elif mode == "yes" or (mode == "auto" and gpu_box):
        info["action"] = "built"
        print(f"building llama.cpp {info['release']} for CUDA arch {arch}: about 5–10 min on a GB10", flush=True)
        log = records.home() / "build" / "llama-cpp-build.log"
        t0 = time.monotonic()
        try:
            if not pinned:
                check_source(src)          # the owner's tree: refuse it before anything else
            check_nvcc()                   # before fetching 38 MB for nothing
            if pinned:
                archive = fetch_source(source_archive)
                extract_source(archive, src, sdist()["sha256"])
                check_source(src)
                info["patches"] = apply_patches(src)
            commands = commands_for(os.cpu_count())
            steps = globals()["build"](commands, log)    # the parameter `build` hides the function
            info.update(seconds=round(time.monotonic() - t0, 1), built=True)
            if built.is_file():
                write_stamp(built, key, seconds=info["seconds"], source_detail=source)
                binary = str(built)
        except BuildFailed as e:
            failure = {"step": e.step, "command": e.command, "reason": e.reason, "log": str(e.log or ""),
                       "tail": e.tail, "seconds": round(time.monotonic() - t0, 1)}
        except SparkkitError as e:
            failure = {"step": 0, "command": "fetch and check the source" if pinned else "check the source tree",
                       "reason": str(e), "log": "", "tail": [], "seconds": round(time.monotonic() - t0, 1)}
        info["seconds"] = round(time.monotonic() - t0, 1)
    else:
        info["action"] = "rendered"
    if info["action"] == "rendered":
        if pinned:
            info["source_commands"] = pinned_source_commands(str(records.home()))
        if built.is_file():              # a build made by hand (or before stamps): used as it is, as before
            binary = str(built)
            info["action"] = "found"
    rt = runtime(target, binary) if failure is None else {"kind": "binary", "path": "", "version": "build failed"}
    if failure is None:
        records.update_state("engine", {"engine": engine, "runtime": rt, "build_commands": commands,
                                        "cuda_arch": arch, "build": info})
    return EngineReady(engine, rt, commands, arch, gpus, steps, failure, info, warnings)


@dataclass
class EngineReady:
    engine: str
    runtime: dict[str, Any]
    build_commands: list[str]
    cuda_arch: str
    gpus: list[str] = field(default_factory=list)
    build_steps: list[dict[str, Any]] = field(default_factory=list)    # what ran, with seconds
    build_failure: dict[str, Any] | None = None                       # step, command, reason, log, tail
    build: dict[str, Any] = field(default_factory=dict)               # release, commit, source, arch, seconds, reused
    warnings: list[str] = field(default_factory=list)

    def record(self) -> tuple[str, str, dict[str, Any]]:
        rt, b = self.runtime, self.build
        if self.build_failure:
            f = self.build_failure
            last = next((ln for ln in reversed(f["tail"]) if ln.strip()), "")
            return ("fail", f"build step {f['step']} failed: {f['reason'][:200]}" + (f" — {last[:160]}" if last else ""),
                    asdict(self))
        if rt["kind"] == "embedded":
            head = f"embedded llama.cpp (xllamacpp {rt['version']}, pinned {rt['pinned']}) ready on the CPU"
        elif rt.get("path"):
            head = f"llama-server at {rt['path']} ({rt['version'].splitlines()[-1] if rt['version'] else '?'})"
            if b.get("reused"):
                head += f", reusing the build of llama.cpp {b['release']} for CUDA arch {self.cuda_arch}"
            elif self.build_steps:
                head += (f", llama.cpp {b.get('release', '?')} built for CUDA arch {self.cuda_arch} in "
                         f"{sum(s['seconds'] for s in self.build_steps):.0f} s")
        else:
            return ("warn", "llama-server not built yet: run the build commands (or -p build yes)", asdict(self))
        if self.warnings:
            return "warn", head + "; " + "; ".join(self.warnings), asdict(self)
        return "pass", head, asdict(self)


# ----------------------------------------------------------------------------- the engine protocol
def place(model: str, model_dir: str, hf_endpoint: str = "", revision: str = "main", *, source: str = "auto",
          chat_template: str = "", scan_roots: dict[str, Any] | None = None, **_: Any):
    """03: the catalogue's GGUF shards (or the embedded model, or a generated full-scale stand-in)."""
    from ..download import place as place_gguf
    return place_gguf(model, model_dir, hf_endpoint or None, source, chat_template, revision=revision,
                      scan_roots=scan_roots)


def prepare(**params: Any) -> "EngineReady":
    """04: which llama.cpp serves (see run); the other engines' parameters (pull) are not its own."""
    params.pop("pull", None)
    return run(**params)


def launch(serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None):
    """05: llama-server (or the embedded llama.cpp) with exactly 02's serving settings."""
    from .. import records, serve
    from ..errors import StateError
    from .launch import Launch
    runtime = records.section(records.load_state(), "engine", "runtime")["runtime"]
    if runtime["kind"] == "binary" and not runtime.get("path"):
        raise StateError("llama-server is not built yet: run 04-engine with -p build yes, "
                         "or pass -p binary /path/to/llama-server to 04")
    launch = Launch.from_serving(serving, model["path"], model["alias"], host, port, key_file,
                                 threads=os.cpu_count() if runtime["kind"] == "embedded" else None)
    if not serving.rpc:
        return serve.start(launch, runtime)
    # a pair (02 planned it from 01's `pair`): the rpc-servers first, then this box's llama-server
    from dataclasses import replace
    from . import rpc
    pair = records.load_state().get("pair") or {}
    from ..pair import refuse_unready
    refuse_unready(pair)                          # 01's checks failed, or the peer is only a snapshot
    rpc.binary_for(runtime)                       # the embedded engine cannot: one sentence, nothing started
    gpu = pair.get("peer_gpu_index") if pair.get("transport") == "loopback" else None
    if gpu is not None:                           # one machine's GPUs stand in for the boxes: the head keeps its own
        launch = replace(launch, cuda_devices="0" if int(gpu) != 0 else "1")
    started = serve.start(launch, runtime, before=lambda: rpc.start_all(serving.rpc, runtime, pair))
    for rec in (records.load_state().get("server") or {}).get("rpc_servers") or []:
        started.notes.append(f"rpc-server {rec['endpoint']} on {rec.get('host') or 'this machine'} (pid {rec['pid']}"
                             f"{', GPU ' + str(rec['gpu']) if rec.get('gpu') is not None else ''}), log {rec['log']}")
    return started


def is_running(server: dict[str, Any]) -> bool:
    from ..serve import is_ours
    return is_ours(server)


def stop(server: dict[str, Any], timeout: float = 15.0, remove: bool = True) -> bool:
    """A process leaves nothing to remove: `remove` is the containers' (a stopped one can be started again)."""
    from ..serve import stop_server
    from .rpc import stop_all
    forced = stop_server(server, timeout)
    stop_all(server.get("rpc_servers") or [])     # a pair: the other box's rpc-server, once the head is gone
    return forced


def command(serving: Any, model: dict[str, Any], host: str, port: int) -> list[str]:
    """The llama-server command line a GB10 runs for these settings."""
    from .launch import Launch, to_argv
    return to_argv(Launch.from_serving(serving, model.get("path", "MODEL.gguf"), model.get("alias", "gpt-oss-120b"),
                                       host, port))
