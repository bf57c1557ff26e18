"""The full-scale phases on the device (started detached by run.sh): python3 phases.py RES

1. set-up: the carried wheels, the pinned sdist seeded where 04 looks first (as on an offline box), the
   Claude Code CLI unpacked where sparkkit expects it (if it was carried); facts about the machine.
2. the Hub: gpt-oss-120b's scripted stand-in generated at its real shapes, split into the three shards
   ggml-org/gpt-oss-120b-GGUF has, served by tests/hubserver.py on loopback (the only stand-in).
3. the write rate of the disk 03 downloads to, and the read rate of the Hub's copy (dd).
4. a download killed with SIGKILL mid-shard (the whole process group, as a closed laptop lid would).
5. `sparkkit run` itself — the owner's command — with the owner's choices; it resumes the killed shard.
6. the Hub's byte counters: what the resume sent again.
Each phase's seconds go to RES/phases.tsv; RES/DONE marks the end.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RES = Path(sys.argv[1]).resolve()
REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".fullcarry"
HUB_PORT = int(os.environ.get("HUB_PORT", "18080"))
GIB = 1 << 30
LOGS = RES / "logs"
LOGS.mkdir(parents=True, exist_ok=True)

env = dict(os.environ)
env.update(PYTHONPATH=f"/tmp/site:{REPO / 'src'}", PYTHONUNBUFFERED="1", SPARKKIT_HOME=str(RES / "home"),
           SPARKKIT_RUNS=str(RES / "runs"), PATH=f"/usr/local/cuda/bin:{env.get('PATH', '')}",
           HF_HUB_DISABLE_TELEMETRY="1", MPLBACKEND="Agg")


def phase(name: str, t0: float, note: str = "") -> None:
    line = f"{name}\t{time.monotonic() - t0:.1f}\t{note}"
    print(f"== {line}", flush=True)
    with open(RES / "phases.tsv", "a") as f:
        f.write(line + "\n")


def sh(cmd: str) -> str:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env)
    return (p.stdout + p.stderr).strip()


def py(code: str, timeout: float = 900) -> str:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"python failed ({p.returncode}): {p.stderr[-3000:]}")
    return p.stdout.strip()


def free(path: str) -> int:
    return shutil.disk_usage(path).free


def dd_rate(path: Path, gib: int = 4, read: Path | None = None) -> float:
    """GB/s writing `gib` GiB to `path` (fdatasync'd), or reading `read` (first `gib` GiB)."""
    if read is not None:
        out = sh(f"dd if={read} of=/dev/null bs=64M count={gib * 16} 2>&1 | tail -1")
    else:
        out = sh(f"dd if=/dev/zero of={path} bs=64M count={gib * 16} conv=fdatasync 2>&1 | tail -1; rm -f {path}")
    # "4294967296 bytes (4.3 GB, 4.0 GiB) copied, 2.1 s, 2.0 GB/s"
    try:
        n, secs = int(out.split()[0]), float(out.split("copied,")[1].split()[0])
        return n / secs / 1e9
    except (IndexError, ValueError):
        print("dd said:", out, flush=True)
        return float("nan")


def hub_stats() -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{HUB_PORT}/_hubserver/stats", timeout=30) as r:
        return json.loads(r.read())


def main() -> None:
    t_all = time.monotonic()
    # ------------------------------------------------------------------ 1. set-up
    t0 = time.monotonic()
    wheels = sorted(str(p) for p in (CARRY / "whl").glob("*.whl"))
    if wheels and not os.environ.get("SKIP_WHEELS"):
        print(sh("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
                 "--target /tmp/site " + " ".join(wheels))[-2000:], flush=True)
    sources = RES / "home" / "build" / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    for sd in (CARRY / "sources").glob("*.tar.gz"):
        shutil.copy2(sd, sources / sd.name)
    # The Claude Code CLI (a 402 MB binary) is too big for one call's carry: later calls bring it in xz parts
    # and tools/fullscale/cli.sh unpacks it here, where 07 looks (SPARKKIT_CLAUDE_DIR), before 07 starts.
    cc = Path("/tmp/cc")
    (cc / "node_modules" / ".bin").mkdir(parents=True, exist_ok=True)
    link = cc / "node_modules" / ".bin" / "claude"
    if not link.is_symlink():
        link.symlink_to("../@anthropic-ai/claude-code/bin/claude.exe")
    env["SPARKKIT_CLAUDE_DIR"] = str(cc)
    facts = {"nvidia-smi": sh("nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader"),
             "nvcc": sh("nvcc --version | tail -2"), "cpus": os.cpu_count(), "free": sh("free -g | head -2"),
             "df": sh("df -h / /tmp /var/tmp /dev/shm"), "python": sys.version.split()[0],
             "claude_dir": env["SPARKKIT_CLAUDE_DIR"]}
    (RES / "facts.txt").write_text(json.dumps(facts, indent=1) + "\n")
    print(json.dumps(facts, indent=1), flush=True)
    phase("setup", t0, f"{len(wheels)} wheels")
    t0 = time.monotonic()

    # Where things go. The Hub's copy and 03's download are 59 GiB each: 03 downloads to the disk (as on an
    # owner's NVMe) and the Hub's copy sits in /dev/shm; the model is generated on the disk, split into the
    # Hub and removed, so neither holds two copies at once. A disk too small for one copy: both in /dev/shm
    # where it holds two with room to spare, else gpt-oss-20b (11 GiB, one file, as its real repo has it).
    disk, shm = Path(os.environ.get("DISK_DIR", "/var/tmp")), Path("/dev/shm")
    model = "gpt-oss-120b"
    if free(str(disk)) >= 62 * GIB and free(str(shm)) >= 62 * GIB:
        model_dir, hub_root, gen_dir = disk / "sparkkit-models", shm / "hub", disk / "gen"
    elif free(str(shm)) >= 150 * GIB:
        model_dir, hub_root, gen_dir = shm / "sparkkit-models", shm / "hub", shm / "gen"
    else:
        model = "gpt-oss-20b"
        where = disk if free(str(disk)) >= 14 * GIB else shm
        model_dir, hub_root, gen_dir = where / "sparkkit-models", shm / "hub", shm / "gen"
    model = os.environ.get("FULLSCALE_MODEL") or model
    model_dir = Path(os.environ.get("MODEL_DIR") or model_dir)
    hub_root = Path(os.environ.get("HUB_ROOT") or hub_root)
    gen_dir = Path(os.environ.get("GEN_DIR") or gen_dir)
    from_catalogue = py(f"from sparkkit.model import CATALOGUE\ne = CATALOGUE['{model}']\n"
                        "print(e.hf_repo); print(*e.hf_files, sep='\\n')").splitlines()
    repo_id, files = from_catalogue[0], from_catalogue[1:]
    print(f"{model}: model_dir {model_dir}, hub {hub_root}, generate in {gen_dir}", flush=True)
    phase("placement", t0, f"{model} → {model_dir}; hub {hub_root}")

    # ------------------------------------------------------------------ 2. the Hub
    t0 = time.monotonic()
    shards = hub_root / repo_id
    if not (shards / files[-1]).exists():
        # FULLSCALE_TINY=1: the embedded tiny model under the same names — a dry run of this script on a
        # machine without a GPU (tests/test_fullscale.py); 05 then refuses the 120b plan, as it should.
        place = ("place_embedded(Path('{0}'))" if os.environ.get("FULLSCALE_TINY") else
                 "place_generated('{1}', Path('{0}'))").format(gen_dir, model)
        code = (f"from pathlib import Path\nfrom sparkkit.download import place_embedded, place_generated\n"
                f"p = {place}\nprint(p.path, p.size_bytes)")
        print("generated:", py(code), flush=True)
        phase("hub: generate", t0)
        t1 = time.monotonic()
        if len(files) > 1:
            stem = files[0].rsplit("-00001-of-", 1)[0]
            code = (f"from sparkkit.tinymodel import split_gguf\nimport glob\n"
                    f"src = glob.glob('{gen_dir}/*.gguf')[0]\n"
                    f"print([str(p) for p in split_gguf(src, '{shards}', '{stem}', {len(files)})])")
            print("split:", py(code), flush=True)
        else:
            shards.mkdir(parents=True, exist_ok=True)
            shutil.move(next(gen_dir.glob("*.gguf")), shards / files[0])
        shutil.rmtree(gen_dir, ignore_errors=True)
        (shards / "README.md").write_text(f"{model}, scripted stand-in at its real shapes (sparkkit)\n")
        (shards / ".gitattributes").write_text("*.gguf filter=lfs diff=lfs merge=lfs -text\n")
        phase(f"hub: {len(files)} file(s)", t1)
    hub_log = open(LOGS / "hubserver.txt", "w")
    hub = subprocess.Popen([sys.executable, str(REPO / "tests" / "hubserver.py"), "--root", str(hub_root),
                            "--port", str(HUB_PORT)], env=env, stdout=hub_log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    import atexit
    atexit.register(lambda: hub.poll() is None and hub.terminate())   # also when a phase fails
    for _ in range(100):
        try:
            hub_stats()
            break
        except OSError:
            time.sleep(0.2)
    phase("hub: ready", t0, sh(f"du -sh {shards}"))

    # ------------------------------------------------------------------ 3. rates
    t0 = time.monotonic()
    model_dir.mkdir(parents=True, exist_ok=True)
    gib = 1 if os.environ.get("FULLSCALE_TINY") else 4
    rates = {"target_write_GBps": dd_rate(model_dir / "ddtest", gib),
             "hub_read_GBps": dd_rate(Path("x"), gib, read=shards / files[-1]),
             "sha256_GBps": float(py("import hashlib, time\nb = bytes(1 << 26)\nh = hashlib.sha256(); t = time.perf_counter()\n"
                                     "for _ in range(32): h.update(b)\nprint(32 * len(b) / (time.perf_counter() - t) / 1e9)"))}
    (LOGS / "rates.json").write_text(json.dumps(rates, indent=1))
    phase("rates", t0, json.dumps(rates))

    # ------------------------------------------------------------------ 4. a download killed mid-shard
    t0 = time.monotonic()
    endpoint = f"http://127.0.0.1:{HUB_PORT}"
    code = (f"from sparkkit import download\n"
            f"download.place('{model}', '{model_dir}', endpoint='{endpoint}')")
    killed = open(LOGS / "download-killed.txt", "w")
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=killed, stderr=subprocess.STDOUT,
                         start_new_session=True)
    target = 6 * GIB if not os.environ.get("FULLSCALE_TINY") else 1
    while p.poll() is None and time.monotonic() - t0 < 300:
        parts = list(model_dir.rglob("*.part"))
        if parts and max(f.stat().st_size for f in parts) >= target:
            break
        time.sleep(0.05)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:   # it finished first (the dry run's tiny shards)
        pass
    p.wait()
    parts = {str(f.relative_to(model_dir)): f.stat().st_size for f in model_dir.rglob("*.part")}
    before = hub_stats()
    (LOGS / "kill.json").write_text(json.dumps({"partials_after_kill": parts, "hub_before_resume": before}, indent=1))
    phase("download killed with SIGKILL", t0, json.dumps(parts))

    # ------------------------------------------------------------------ 5. the owner's command
    t0 = time.monotonic()
    print("claude CLI:", sh(f"{link} --version") if link.exists() else "not here yet (later calls bring it)", flush=True)
    argv = [sys.executable, "-m", "sparkkit", "run", "--model", model, "--hf-endpoint", endpoint,
            "--model-dir", str(model_dir), "--keep-serving", "no", "--run-dir", str(RES / "runs" / "full")]
    with open(LOGS / "sparkkit-run.txt", "w") as log:
        log.write("$ " + " ".join(argv[2:]) + "\n")
        log.flush()
        rc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO)).returncode
    phase("sparkkit run", t0, f"exit {rc}")

    # ------------------------------------------------------------------ 6. what the resume cost
    after = hub_stats()
    (LOGS / "hub-after.json").write_text(json.dumps(after, indent=1))
    for f in sorted((RES / "home" / "server").glob("*.log")) + sorted((RES / "home" / "build").glob("*.log")):
        lines = f.read_text(errors="replace").splitlines()
        (LOGS / (f.name + ".excerpt.txt")).write_text("\n".join(lines[:60] + ["…"] + lines[-60:]) + "\n")
    hub.terminate()
    phase("total", t_all)
    (RES / "DONE").write_text(f"exit {rc} after {time.monotonic() - t_all:.0f} s\n")


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:   # the call that waits still packs what exists
        import traceback
        traceback.print_exc()
        (RES / "DONE").write_text(f"failed: {e!r}\n")
