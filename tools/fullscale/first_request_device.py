"""Device side of tools/fullscale/first_request.py: one call, from a bare GPU machine.

    run(command="bash tools/fullscale/first_request.sh", carry=[".fullcarry"], timeout_s=600)

1. the pinned llama.cpp b11549 (xllamacpp sdist in .fullcarry/sources) built for CUDA (llama-server only,
   04's offline CMake flags), and beside it the gpt-oss-120b-shaped scripted model (tinymodel, 59 GiB) written
   to /dev/shm with the real gpt-oss chat template embedded (the one ggml-org's release carries: llama.cpp's
   models/templates/openai-gpt-oss-120b.jinja).
2. for each launch setting (CONFIGS): llama-server with the owner's 05 command line plus the setting, a
   warm-up turn (06 has run before an owner's first request), then the captured Claude Code first requests in
   SEQUENCES[config]; each answer's usage (prompt tokens, cached tokens), TTFT and wall seconds.
Everything lands in $OUT as it happens (results.jsonl, progress.log) and in one tgz of logs at the end.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

T0 = time.monotonic()
DEADLINE = float(os.environ.get("DEADLINE_S", "575"))
REPO = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("OUT", "/tmp/fr-out"))
WORK = Path(os.environ.get("WORK", "/tmp/fr"))
TREE = WORK / "llama"
MODEL = Path("/dev/shm/gen/gpt-oss-120b-scripted.gguf")   # /var/tmp when /dev/shm cannot hold 59 GiB
REC = REPO / "records" / "fullscale" / "first-request"
PORT = 8080
URL = f"http://127.0.0.1:{PORT}"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import first_request as fr  # noqa: E402

# The owner's 05 line (records/fullscale/h200-run1, sparkkit run --model gpt-oss-120b), model path aside.
OWNER = ["--alias", "gpt-oss-120b", "--host", "127.0.0.1", "--port", str(PORT), "-c", "131072", "-np", "1",
         "-ngl", "999", "-fa", "on", "-lm", "none", "-ub", "2048", "-b", "2048", "--kv-unified", "--jinja", "--metrics"]
CONFIGS = {"default": [], "swa-full": ["--swa-full"],
           "swa-full+cache-reuse-256": ["--swa-full", "--cache-reuse", "256"],
           "cache-reuse-256": ["--cache-reuse", "256"]}
SEQUENCES = {"default": ["A", "A", "A2", "B", "A"], "swa-full": ["A", "B", "A"],
             "swa-full+cache-reuse-256": ["A", "B"], "cache-reuse-256": ["A", "B"]}
MODE = os.environ.get("MODE", "configs")   # configs: every launch setting; sweep: default only, A cold, then SWEEP
if MODE == "sweep":
    CONFIGS = {"default": []}
    SEQUENCES = {"default": ["A", "A"]}
ENV = dict(os.environ, PATH=f"/usr/local/cuda/bin:{os.environ.get('PATH', '')}",
           PYTHONPATH=f"/tmp/site:{REPO / 'src'}", PYTHONUNBUFFERED="1")


def log(msg: str) -> None:
    line = f"[{time.monotonic() - T0:7.1f} s] {msg}"
    print(line, flush=True)
    with open(OUT / "progress.log", "a") as f:
        f.write(line + "\n")


def sh(cmd: str) -> str:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=ENV)
    return (p.stdout + p.stderr).strip()


def record(row: dict) -> None:
    with open(OUT / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def start_build() -> subprocess.Popen:
    sdist = next((REPO / ".fullcarry" / "sources").glob("xllamacpp-*.tar.gz"))
    TREE.mkdir(parents=True, exist_ok=True)
    top = sdist.name[:-len(".tar.gz")]
    sh(f"tar xzf {sdist} -C {TREE} --strip-components=3 {top}/thirdparty/llama.cpp")
    cmake = (f"GIT_DIR=/nonexistent cmake -S {TREE} -B {TREE}/build -G Ninja -DGGML_CUDA=ON -DGGML_NATIVE=ON "
             "-DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF "
             "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON "
             "-DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_NUMBER=11549 "
             f"-DLLAMA_BUILD_COMMIT=b11549 && cmake --build {TREE}/build --config Release --target llama-server "
             f"-j {os.cpu_count()}")
    return subprocess.Popen(cmake, shell=True, env=ENV, stdout=open(WORK / "build.log", "w"), stderr=subprocess.STDOUT)


def start_generate() -> subprocess.Popen:
    code = f"""
import time
from pathlib import Path
from sparkkit.tinymodel import common_words, generate, gpt_oss_spec
t = time.monotonic()
spec = gpt_oss_spec("gpt-oss-120b", tool_name="Read", tool_args='{{"file_path": "x"}}', vocab_words=common_words(),
                    chat_template=Path({str(TREE / 'models/templates/openai-gpt-oss-120b.jinja')!r}).read_text())
g = generate({str(MODEL)!r}, spec)
print("generated", g.path, g.size_bytes, "bytes in", round(time.monotonic() - t, 1), "s", flush=True)
"""
    return subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=open(WORK / "generate.log", "w"),
                            stderr=subprocess.STDOUT)


def healthy() -> bool:
    try:
        with urllib.request.urlopen(URL + "/health", timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def warm_up() -> dict:
    body = {"model": "gpt-oss-120b", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return fr.post_messages(URL, body)


SWEEP = [2048, 4096, 8192, 13822, 16384, 24576, 32835]   # 13822: the real tokenizer's count of A


def completion(ids: list[int]) -> dict:
    """One cold prefill of `ids` through /completion (cache_prompt false): the server's own prompt timer."""
    req = urllib.request.Request(URL + "/completion", method="POST", headers={"content-type": "application/json"},
                                 data=json.dumps({"prompt": ids, "n_predict": 1, "cache_prompt": False,
                                                  "temperature": 0}).encode())
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        res = json.loads(r.read())
    return {"wall_s": round(time.perf_counter() - t, 3), "prompt_n": res["timings"]["prompt_n"],
            "prompt_ms": round(res["timings"]["prompt_ms"], 1)}


def sweep(label: str) -> None:
    """Cold prefill time by prompt length: the first L tokens of A's real prompt, three times each."""
    text = (REC / "rendered" / "A.real.txt").read_text()
    req = urllib.request.Request(URL + "/tokenize", method="POST", headers={"content-type": "application/json"},
                                 data=json.dumps({"content": text, "add_special": False, "parse_special": True}).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        ids = json.loads(r.read())["tokens"]
    for n in SWEEP:
        for rep in range(3):
            row = {"config": label, "event": "sweep", "tokens": n, "rep": rep + 1, **completion(ids[:n])}
            record(row)
            log(f"{label}: sweep {n} tokens: {row['prompt_ms']} ms (wall {row['wall_s']} s)")


def serve(label: str, extra: list[str]) -> None:
    argv = [str(TREE / "build" / "bin" / "llama-server"), "-m", str(MODEL), *OWNER, *extra]
    logf = WORK / f"server-{label}.log"
    log(f"{label}: {' '.join(argv[1:])}")
    t = time.monotonic()
    proc = subprocess.Popen(argv, env=ENV, stdout=open(logf, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not healthy():
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited {proc.returncode} (log {logf.name})")
            if time.monotonic() - t > 240:
                raise RuntimeError("not healthy after 240 s")
            time.sleep(0.5)
        ready = time.monotonic() - t
        mem = sh("nvidia-smi --query-gpu=memory.used --format=csv,noheader")
        record({"config": label, "event": "ready", "ready_s": round(ready, 1), "gpu_memory_used": mem,
                "argv": argv[1:]})
        log(f"{label}: ready in {ready:.1f} s, GPU memory used {mem}")
        record({"config": label, "event": "warm-up", **warm_up()})
        rows = fr.replay(URL, REC / "bodies", OUT / "results.jsonl", SEQUENCES[label], label)
        for r in rows:
            log(f"{label}: {r['body']}: prompt {r.get('prompt_tokens')} cached {r.get('cached_tokens')} "
                f"({r.get('reuse_pct')} %), TTFT {r.get('ttft_s')} s, wall {r.get('wall_s')} s, error {r.get('error')}")
        if label == "default" and MODE == "configs":
            fr.check_rendering(URL, REC, OUT / "results.jsonl", "real", label)
        if MODE == "sweep":
            sweep(label)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    global MODEL
    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    import shutil
    if shutil.disk_usage("/dev/shm").free < 62 * 2**30:
        MODEL = Path("/var/tmp/gen/gpt-oss-120b-scripted.gguf")
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    whl = sorted((REPO / ".fullcarry" / "whl").glob("gguf-*.whl"))
    sh("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site " + " ".join(map(str, whl)))
    facts = {"nvidia-smi": sh("nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader"),
             "nvcc": sh("nvcc --version | tail -1"), "cpus": os.cpu_count(), "free": sh("free -g | sed -n 2p"),
             "shm": sh("df -h /dev/shm | tail -1"), "python": sys.version.split()[0], "model": str(MODEL)}
    (OUT / "facts.json").write_text(json.dumps(facts, indent=1) + "\n")
    log(f"facts {json.dumps(facts)}")
    tb = time.monotonic()
    build = start_build()          # after tar: the template the generator embeds is in the tree
    gen = start_generate()
    log("build and generation started")
    rc_gen = gen.wait()
    log(f"generation exit {rc_gen} after {time.monotonic() - tb:.1f} s: {sh(f'tail -2 {WORK}/generate.log')}")
    rc_build = build.wait()
    log(f"build exit {rc_build} after {time.monotonic() - tb:.1f} s: {sh(f'tail -1 {WORK}/build.log')}")
    record({"event": "prepare", "build_s": round(time.monotonic() - tb, 1), "rc_build": rc_build, "rc_gen": rc_gen,
            "version": sh(f"{TREE}/build/bin/llama-server --version 2>&1 | tail -2")})
    if rc_gen or rc_build:
        raise SystemExit("prepare failed")
    for label, extra in CONFIGS.items():
        left = DEADLINE - (time.monotonic() - T0)
        if left < 75:
            log(f"{label}: skipped, {left:.0f} s left")
            record({"config": label, "event": "skipped", "seconds_left": round(left)})
            continue
        try:
            serve(label, extra)
        except Exception as e:
            log(f"{label}: failed: {e!r}")
            record({"config": label, "event": "failed", "error": repr(e)})


if __name__ == "__main__":
    try:
        main()
    finally:
        sh(f"cd {WORK} && tar czf {OUT}/logs.tgz build.log generate.log server-*.log 2>/dev/null")
        log("done")
