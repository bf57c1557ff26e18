"""The CUDA path at full scale: the runbooks' own code drives a gpt-oss-120b-shaped model on one GPU.

One call on a bare GPU machine (see run.sh beside this file, which installs the carried wheels):

  01 (model gpt-oss-120b) → 04 builds llama.cpp with CUDA from a pinned local tree   ┐ in parallel,
                            03 generates the 59 GiB scripted stand-in (source generate) │ with the
                            the GPU's copy bandwidth is measured (torch)               ┘ build
  → 02 plans it → 05 serves it with the plan's flags → 06 verifies and benchmarks it
    (llama-bench's tests through the server: pp2048 and tg32 at depth 0 and 8192)
  → llama-bench on the same file, same tests
  → 06's measurement again on 05's launch without context checkpoints (the per-prompt cost
    llama-bench skips), and on any `--variant LABEL=FLAGS`
  → the decode gap taken apart (decode_gap.py): a DEBUG_TIMINGS llama-server splits each token into
    batch building, the GPU's decode and sampling; llama-batched-bench runs llama_decode alone in
    05's context shape (also per `--split-variant`)
  → 02 at two contexts × two -ub, each against llama-server's own buffer log (-lv 4)
  → the same model under the seed guide's flags and under llama-server's defaults

`PACK_BIN=1` (run.sh) sends the CUDA build back in parts; a later call carries them as `.lbbin/` and
runs with `--binary /tmp/lb/bin/llama-server --debug-server /tmp/lb-debug-timings/llama-server`,
skipping the 5-minute build (records/gpu-standin/NOTES.md has the exact calls).

Every runbook runs under papermill; its executed notebook and JSON record land in RES/runs, the
comparisons in RES/results.json and RES/summary.txt. Phases check the time left (BUDGET seconds
from the start) and skip, saying so, rather than overrun the call.

Also runs on a machine without a GPU against stand-in binaries (`--binary`, `--bench`), which is
how the orchestration is tested before it costs device time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import decode_gap  # noqa: E402  (beside this file)
RUNBOOKS = ROOT / "runbooks"
MIB = 1024**2

# The seed guide's llama-server line (shared/seed/spark-guide.md §5), host/port aside.
GUIDE_FLAGS = ["-c", "16384", "-ngl", "999", "--flash-attn", "on", "--no-mmap", "--kv-unified", "--jinja",
               "-ub", "2048"]
# (context, ubatch) pairs for the plan check; the first two already span both contexts and both ubatches.
PLAN_CHECKS = [(131072, 2048), (32768, 512), (131072, 512), (32768, 2048)]


# ----------------------------------------------------------------------------- pure helpers (unit-tested)
def parse_buffers(log_text: str) -> dict[str, float]:
    """The buffer sizes (MiB) llama.cpp logs at -lv 4, keyed 'model CUDA0', 'kv full CUDA0', 'kv swa CUDA0',
    'compute CUDA_Host', 'output CUDA_Host' …; a later line for the same key wins (re-reservations)."""
    out: dict[str, float] = {}
    section = "kv full"
    for line in log_text.splitlines():
        if "creating non-SWA KV cache" in line:
            section = "kv full"
        elif re.search(r"creating\s+SWA KV cache", line):
            section = "kv swa"
        m = re.search(r"(\S+) model buffer size = +([\d.]+) MiB", line)
        if m:
            out[f"model {m[1]}"] = out.get(f"model {m[1]}", 0.0) + float(m[2])
            continue
        m = re.search(r"(\S+) KV buffer size = +([\d.]+) MiB", line)
        if m:
            out[f"{section} {m[1]}"] = float(m[2])
            continue
        m = re.search(r"(\S+) compute buffer size = +([\d.]+) MiB", line)
        if m:
            out[f"compute {m[1]}"] = float(m[2])
            continue
        m = re.search(r"(\S+) +output buffer size = +([\d.]+) MiB", line)
        if m:
            out[f"output {m[1]}"] = float(m[2])
    return out


def logged_components(buffers: dict[str, float]) -> dict[str, float]:
    """Logged MiB summed over backends per plan component (and the host-side part on its own)."""
    def total(prefix: str) -> float:
        return sum(v for k, v in buffers.items() if k.startswith(prefix + " "))
    host_compute = sum(v for k, v in buffers.items() if k.startswith("compute ") and k.endswith("_Host"))
    return {"weights": total("model"), "KV full attention": total("kv full"),
            "KV sliding window": total("kv swa"), "compute buffers": total("compute"),
            "compute buffer (GPU)": total("compute") - host_compute, "compute buffer (host)": host_compute,
            "output buffer": total("output"),
            "host (pinned) buffers": sum(v for k, v in buffers.items() if k.endswith("_Host"))}


def compare_plan(plan_rows: list[dict[str, Any]], logged: dict[str, float]) -> list[dict[str, Any]]:
    """Plan row (bytes) vs logged MiB, per component llama.cpp allocates at load."""
    planned = {r["component"]: r["bytes"] / MIB for r in plan_rows}
    split = [c for c in planned if c.startswith("compute buffer (")]
    if split and "compute buffers" not in planned:   # a plan that splits GPU and host compute: check the sum too
        planned["compute buffers"] = sum(planned[c] for c in split)
    rows = []
    for comp in ("weights", "KV full attention", "KV sliding window", *split, "compute buffers", "output buffer"):
        if comp not in planned:
            continue
        got = logged.get(comp, 0.0)
        err = (planned[comp] - got) / got * 100 if got else None
        rows.append({"component": comp, "plan MiB": round(planned[comp], 2), "logged MiB": round(got, 2),
                     "plan − logged %": None if err is None else round(err, 2),
                     "within 5 %": err is not None and abs(err) <= 5})
    return rows


def replace_flag(argv: list[str], flag: str, value: str | None, aliases: tuple[str, ...] = ()) -> list[str]:
    """argv with `flag VALUE` set to `value` (appended if absent, removed if value is None)."""
    names = (flag, *aliases)
    out, i, done = [], 0, False
    while i < len(argv):
        if argv[i] in names:
            if value is not None and not done:
                out += [flag, value]
                done = True
            i += 2
            continue
        out.append(argv[i])
        i += 1
    if value is not None and not done:
        out += [flag, value]
    return out


def with_flags(argv: list[str], flags: list[str]) -> list[str]:
    """argv with each `--flag value` set (replaced or appended) and each bare `--flag` added once."""
    out, i = list(argv), 0
    while i < len(flags):
        flag = flags[i]
        if i + 1 < len(flags) and (not flags[i + 1].startswith("-") or re.fullmatch(r"-[0-9.]+", flags[i + 1])):
            out = replace_flag(out, flag, flags[i + 1])
            i += 2
        else:
            if flag not in out:
                out.append(flag)
            i += 1
    return out


def guide_argv(binary: str, model: str, port: int, help_text: str) -> tuple[list[str], list[str], str]:
    """(verbatim argv, runnable argv, what changed): --no-mmap becomes this build's equivalent."""
    sys.path.insert(0, str(ROOT / "src"))
    from sparkkit.engines.launch import ServerFlags
    flags = ServerFlags.from_help(help_text)
    base = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port)]
    verbatim = base + GUIDE_FLAGS
    if flags.no_mmap or not flags.load_mode:
        return verbatim, verbatim, "none (this build has --no-mmap)"
    i = GUIDE_FLAGS.index("--no-mmap")
    runnable = base + GUIDE_FLAGS[:i] + ["-lm", "none"] + GUIDE_FLAGS[i + 1:]
    return verbatim, runnable, "--no-mmap → -lm none (this build has no --no-mmap; read from --help)"


def bench_rows(bench_json: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """llama-bench -o json → {'pp2048@d0': {'avg', 'sd'}, 'tg32@d8192': …}."""
    out = {}
    for r in bench_json:
        kind = f"pp{r['n_prompt']}" if r.get("n_prompt") else f"tg{r['n_gen']}"
        samples = r.get("samples_ts") or [r["avg_ts"]]
        out[f"{kind}@d{r.get('n_depth', 0)}"] = {"avg": r["avg_ts"], "sd": r.get("stddev_ts", 0.0),
                                                 "median": statistics.median(samples), "samples": samples}
    return out


def test_key(name: str) -> str:
    """'pp2048 @ d8192' (06) and 'pp2048@d8192' (llama-bench) name the same test."""
    return name.replace(" ", "")


def medians_by_test(runs: list[dict[str, Any]], kinds: tuple[str, ...] = ("pp", "tg")) -> dict[str, float]:
    """06's bench rows of these kinds → median tok/s per test, under llama-bench's names
    ('tg32 @ d0 as an agent' counts as tg32@d0 when kinds is ("tg agent",))."""
    by: dict[str, list[float]] = {}
    for r in runs:
        if r.get("kind") in kinds and r.get("tok/s") is not None:
            by.setdefault(test_key(r["test"].replace(" as an agent", "")), []).append(r["tok/s"])
    return {k: statistics.median(v) for k, v in by.items()}


def compare_bench(measured: dict[str, dict[str, float]], bench: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each launch's 06 medians ({launch: {test: tok/s}}) against llama-bench's median, test by test."""
    rows = []
    for test, ref in bench.items():
        base = ref.get("median", ref.get("avg"))   # a slow first sample skews llama-bench's avg
        row: dict[str, Any] = {"test": test, "llama-bench median tok/s": round(base, 1), "± sd": round(ref["sd"], 1)}
        for launch, by_test in measured.items():
            ours = by_test.get(test)
            err = (ours - base) / base * 100 if ours and base else None
            row[f"06 · {launch}"] = None if ours is None else round(ours, 1)
            row[f"Δ % · {launch}"] = None if err is None else round(err, 1)
            row[f"within 5 % · {launch}"] = err is not None and abs(err) <= 5
        rows.append(row)
    return rows


def active_bytes(tensors: list[tuple[str, int]], n_expert: int, n_used: int) -> dict[str, float]:
    """Bytes one decoded token reads: every tensor once, experts at n_used/n_expert, and only one row
    of token_embd (a lookup, not a matmul)."""
    parts = {"attention": 0.0, "experts": 0.0, "router": 0.0, "output head": 0.0, "other": 0.0}
    for name, nbytes in tensors:
        if name == "token_embd.weight":
            continue
        if "_norm" in name:
            parts["other"] += nbytes
        elif "_exps." in name:
            parts["experts"] += nbytes * n_used / n_expert
        elif ".attn_" in name:
            parts["attention"] += nbytes
        elif "ffn_gate_inp" in name:
            parts["router"] += nbytes
        elif name == "output.weight":
            parts["output head"] += nbytes
        else:
            parts["other"] += nbytes
    parts["total"] = sum(parts.values())
    return parts


def kv_read_bytes(depth: int, n_full: int, n_swa: int, window: int, n_head_kv: int, head_dim: int,
                  bytes_per_el: float = 2.0) -> float:
    per = 2 * n_head_kv * head_dim * bytes_per_el
    return per * (n_full * depth + n_swa * min(depth, window))


def table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-markdown table."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    fmt = lambda v: "" if v is None else (f"{v:,.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run
class Run:
    def __init__(self, res: Path, budget: float):
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget
        self.res = res
        self.runs = res / "runs"
        self.logs = res / "logs"
        for d in (self.runs, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.summary = open(res / "summary.txt", "a", buffering=1)
        self.results: dict[str, Any] = {"phases": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {msg}"
        print(line, flush=True)
        self.summary.write(line + "\n")

    def save(self) -> None:
        (self.res / "results.json").write_text(json.dumps(self.results, indent=2, default=str))

    def phase(self, name: str, need: float, fn: Callable[[], Any]) -> Any:
        if self.left() < need:
            self.log(f"## {name}: SKIPPED ({self.left():.0f} s left, needs ~{need:.0f} s)")
            self.results["phases"][name] = {"status": "skipped (time)"}
            self.save()
            return None
        self.log(f"## {name}")
        t = time.monotonic()
        try:
            out = fn()
            self.results["phases"][name] = {"status": "ok", "seconds": round(time.monotonic() - t, 1)}
            return out
        except Exception as e:   # one phase failing must not lose the others' records
            self.log(f"{name} FAILED: {type(e).__name__}: {str(e)[:2000]}")
            self.results["phases"][name] = {"status": f"failed: {type(e).__name__}: {str(e)[:500]}",
                                            "seconds": round(time.monotonic() - t, 1)}
            return None
        finally:
            self.save()

    # -- runbooks --
    # A hung runbook must not eat the call (an H100 run lost 460 s to one 02): per-runbook limits.
    LIMITS = {"01-preflight": 90, "02-plan": 60, "03-place-model": 300, "04-engine": 580, "05-serve": 240,
              "06-verify": 300}

    def papermill(self, notebook: str, params: dict[str, Any], tag: str = "", timeout: float = 0) -> dict:
        """Run one runbook as a user would (papermill CLI); return its record (or raise with the tail)."""
        out = self.runs / f"{notebook}{('-' + tag) if tag else ''}.ipynb"
        params = {**params, "run_dir": str(self.runs)}
        argv = [sys.executable, "-m", "papermill", str(RUNBOOKS / f"{notebook}.ipynb"), str(out), "-k", "python3",
                "--cwd", str(RUNBOOKS), "--no-progress-bar", "-y", json.dumps(params)]
        self.log(f"papermill {notebook} {json.dumps(params)}")
        t, t_wall = time.monotonic(), time.time()
        limit = timeout or self.LIMITS.get(notebook, 300)
        p = self._run_or_dump(argv, max(10, min(limit, self.left())), f"{notebook}{('-' + tag) if tag else ''}")
        rec_path = self.runs / f"{notebook}.json"
        fresh = rec_path.exists() and rec_path.stat().st_mtime >= t_wall   # not an earlier run's record
        rec = json.loads(rec_path.read_text()) if fresh else {}
        if tag and fresh:   # keep each tagged run's record under its own name too
            (self.runs / f"{notebook}-{tag}.json").write_text(rec_path.read_text())
        self.log(f"  → rc {p.returncode} in {time.monotonic() - t:.1f} s: {rec.get('verdict', '?')} — "
                 f"{rec.get('headline', '')[:300]}")
        if p.returncode:
            tail = "\n".join((p.stdout + p.stderr).splitlines()[-25:])
            raise RuntimeError(f"{notebook} failed (rc {p.returncode}); record: {rec.get('headline')}\n{tail}")
        return rec

    def _run_or_dump(self, argv: list[str], limit: float, name: str) -> subprocess.CompletedProcess:
        """subprocess.run, but a run past `limit` first has every Python process under it dump its
        threads' stacks (faulthandler on SIGUSR1, armed by hangdump/sitecustomize.py) into
        logs/hang-<name>-<pid>.txt, so a hang in a kernel says where it hung."""
        env = {**os.environ, "SPARKKIT_HANG_DUMP_DIR": str(self.logs), "SPARKKIT_HANG_DUMP_NAME": name,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HANGDUMP), os.environ.get("PYTHONPATH", "")]))}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=limit)
            for dump in self.logs.glob(f"hang-{name}-*.txt"):   # armed but never needed
                dump.unlink()
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            pids = descendants(proc.pid)
            for pid in [proc.pid, *pids]:
                try:
                    os.kill(pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
            time.sleep(3)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in pids:   # a kernel may sit in its own process group
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.communicate()
            for dump in sorted(self.logs.glob(f"hang-{name}-*.txt")):
                text = dump.read_text(errors="replace")
                self.log(f"stacks of {dump.name} (last 40 lines):\n" + "\n".join(text.splitlines()[-40:]))
            raise

    def state(self) -> dict[str, Any]:
        home = Path(os.environ["SPARKKIT_HOME"])
        return json.loads((home / "state.json").read_text())


HANGDUMP = Path(__file__).resolve().parent / "hangdump"


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def free_port() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from sparkkit.serve import free_port as sparkkit_free_port
    return sparkkit_free_port()


def gpu_mem_used() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


class Server:
    """A llama-server we start ourselves (port, log), stopped by pid — only this one."""

    def __init__(self, run: Run, argv: list[str], tag: str):
        self.run, self.argv, self.tag = run, argv, tag
        self.port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 8080
        self.logpath = run.logs / f"server-{tag}.log"

    def __enter__(self) -> "Server":
        self.run.log(f"start {self.tag}: {shlex.join(self.argv)}")
        self.out = open(self.logpath, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT)
        try:
            sys.path.insert(0, str(ROOT / "src"))
            from sparkkit.serve import wait_healthy
            self.load_s = wait_healthy(self.proc, f"http://127.0.0.1:{self.port}", self.logpath,
                                       min(300, max(5, self.run.left() - 10)))
        except Exception:
            self.__exit__()
            raise
        self.mem = gpu_mem_used()
        self.run.log(f"  healthy after {self.load_s:.1f} s; GPU memory {self.mem}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()

    def props(self) -> dict[str, Any]:
        import httpx
        try:
            p = httpx.get(f"http://127.0.0.1:{self.port}/props", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            return {}
        dgs = p.get("default_generation_settings", {})
        return {"total_slots": p.get("total_slots"), "n_ctx": dgs.get("n_ctx", p.get("n_ctx")),
                "build_info": p.get("build_info")}


def measure(port: int, pp: int, tg: int, depths: list[int], repeats: int) -> list[dict[str, Any]]:
    """06's own measurement (sparkkit.bench) against a server we started."""
    sys.path.insert(0, str(ROOT / "src"))
    from sparkkit import bench, verify
    with verify.client(f"http://127.0.0.1:{port}") as c:
        return bench.measure(c, verify.served_model(c), pp, tg, depths, repeats, progress=False).to_dict("records")


KEY_LINES = re.compile(r"buffer size|KV cache|offloaded|n_ctx|n_batch|n_ubatch|flash_attn|n_slots|kv_unified|"
                       r"load_mode|mmap|system_info|model loaded|error|failed|warn", re.I)


def excerpt(path: Path, head: int = 150, tail: int = 100) -> str:
    """The head, the key lines (buffers, context, flags, errors) and the tail of a long log."""
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) <= head + tail:
        return "\n".join(lines)
    key = [ln for ln in lines[head:-tail] if KEY_LINES.search(ln)][:400]
    return "\n".join(lines[:head] + [f"… key lines of the {len(lines) - head - tail} left out …"] + key
                     + ["… tail …"] + lines[-tail:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", default="/tmp/standin", help="results folder")
    ap.add_argument("--budget", type=float, default=560, help="seconds this run may take")
    ap.add_argument("--src", default=str(ROOT / ".devcarry" / "llama.cpp"), help="pinned llama.cpp tree")
    ap.add_argument("--build-dir", default="/tmp/lb")
    ap.add_argument("--binary", default="", help="use this llama-server instead of building (dry runs)")
    ap.add_argument("--bench", default="", help="llama-bench binary (default: next to llama-server)")
    ap.add_argument("--model", default="gpt-oss-120b")
    ap.add_argument("--port", type=int, default=8080, help="05's port")
    ap.add_argument("--model-dir", default="/dev/shm/sparkkit-models")
    ap.add_argument("--template", default="", help="chat template for 03 (default: the tree's gpt-oss one)")
    ap.add_argument("--pp", type=int, default=2048, help="06 and llama-bench: prompt tokens per prefill test")
    ap.add_argument("--tg", type=int, default=32, help="06 and llama-bench: tokens per decode test")
    ap.add_argument("--depths", default="0,8192", help="06 and llama-bench: context depths")
    ap.add_argument("--tg-long", type=int, default=128,
                    help="a longer decode test too (llama-bench's default 128; 0: none): a fixed per-request cost "
                         "weighs 4× less in it than in tg32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bench-reps", type=int, default=10)
    ap.add_argument("--plan-checks", default=";".join(f"{c},{u}" for c, u in PLAN_CHECKS))
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: 04, plan-checks, bench (llama-bench "
                    "and the engine-equivalent launch), compare, debug-timings, batched-bench")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                    help="also measure 05's launch with these flags set (repeatable), e.g. 'swa-full=--swa-full'")
    ap.add_argument("--split-variant", action="append", default=[], metavar="LABEL=FLAGS",
                    help="also split the decode time of 05's launch with these flags set (repeatable)")
    ap.add_argument("--batched-bench-bin", default="", help="a llama-batched-bench already built for this "
                    "llama.cpp (default: build it in --build-dir)")
    ap.add_argument("--debug-server", default="", help="a DEBUG_TIMINGS llama-server already built "
                    "(debug_timings.sh); default: build one beside --build-dir")
    ap.add_argument("--placed", default="", help="dry runs: record this GGUF as placed instead of running 03")
    a = ap.parse_args(argv)
    run = Run(Path(a.res), a.budget)
    skip = set(filter(None, a.skip.split(",")))
    depths = [int(x) for x in a.depths.split(",")]
    deep = max(depths)
    template = a.template or (str(Path(a.src) / "models" / "templates" / "openai-gpt-oss-120b.jinja")
                              if a.model.startswith("gpt-oss") else "")   # Qwen3-Coder's generator embeds its own
    R = run.results
    R["args"] = vars(a)

    run.phase("info", 0, lambda: R.update(info=_info()))
    run.phase("01-preflight", 30, lambda: run.papermill("01-preflight", {"model": a.model,
                                                                         "model_dir": a.model_dir}))

    _ensure_choice(run, a.model, a.model_dir)

    # 04 (build) in the background; 03 (generate) and the bandwidth probe meanwhile.
    build_params = ({"binary": a.binary} if a.binary else
                    {"src_dir": a.src, "build_dir": a.build_dir, "build_now": True})
    engine: dict[str, Any] = {}

    def build():
        try:
            engine["record"] = run.papermill("04-engine", build_params)
        except Exception as e:
            engine["error"] = e

    th = threading.Thread(target=build)
    if run.left() > 60 and "04" not in skip:
        run.log("## 04-engine (background)")
        t_build = time.monotonic()
        th.start()
    if a.placed:
        sys.path.insert(0, str(ROOT / "src"))
        from sparkkit import records
        records.update_state("model", {"model": a.model, "path": a.placed, "size_bytes": Path(a.placed).stat().st_size,
                                       "source": "dry run", "seconds": 0, "alias": a.model})
        run.log(f"dry run: {a.placed} recorded as placed (03 not run)")
    else:
        run.phase("03-place-model", 90, lambda: run.papermill(
            "03-place-model", {"source": "generate", "chat_template": template if template and Path(template).is_file() else ""}))
    run.phase("bandwidth", 30, lambda: R.update(bandwidth=_bandwidth()))
    checks = [tuple(int(x) for x in c.split(",")) for c in a.plan_checks.split(";") if c and "plan-checks" not in skip]
    plans: dict[tuple[int, int], dict] = {}
    model_path = run.state().get("model", {}).get("path", "")
    if model_path and Path(model_path).is_file():   # 02 needs no engine: plan while 04 compiles
        for ctx, ub in checks:
            if th.is_alive() and run.left() > 200:
                rec = run.phase(f"02-plan c={ctx} ub={ub} (during the build)", 60, lambda: run.papermill(
                    "02-plan", {"context": ctx, "ubatch": ub}, tag=f"c{ctx}-ub{ub}"))
                # a 02 that failed here is not run again after the build: its plan function is used then
                if not rec:
                    rec = run.phase(f"02's plan function c={ctx} ub={ub}", 10, lambda: _plan_in_process(run, ctx, ub))
                if rec:
                    plans[(ctx, ub)] = rec
        if th.is_alive():
            run.phase("roofline bytes (during the build)", 30, lambda: _roofline_bytes(run, model_path))
        if th.is_alive() and run.left() > 200:   # last, so the plan 05 serves is this one
            R["main_plan"] = run.phase("02-plan (during the build)", 60, lambda: run.papermill(
                "02-plan", {"context": 131072, "ubatch": 2048}))
    if th.is_alive() or th.ident:
        th.join()
        R["phases"]["04-engine"] = {"status": "ok" if "record" in engine else f"failed: {engine.get('error')}",
                                    "seconds": round(time.monotonic() - t_build, 1)}
        run.log(f"## 04-engine done: {engine.get('record', {}).get('headline') or engine.get('error')}")
        run.save()
    if "record" not in engine:
        run.log("no engine: stopping after the records so far")
        return _finish(run)

    if not R.get("main_plan"):
        run.phase("02-plan", 30, lambda: run.papermill("02-plan", {"context": 131072, "ubatch": 2048}))
    served = run.phase("05-serve", 120, lambda: run.papermill("05-serve", {"port": a.port}))
    if served is None:
        return _finish(run)
    st = run.state()
    R["server"] = {"argv": st["server"]["argv"], "load_seconds": st["server"].get("load_seconds"),
                   "gpu_mem": gpu_mem_used()}
    binary = st["engine"]["runtime"]["path"]
    model_path = st["model"]["path"]
    v = run.phase("06-verify", 150, lambda: run.papermill("06-verify", {
        "pp_tokens": a.pp, "tg_tokens": a.tg, "depths": depths, "repeats": a.repeats}))
    measured: dict[str, dict[str, float]] = {}
    R["compare"] = {}
    if v:
        R["verify"] = {"headline": v["headline"], "probes": v["results"]["probes"]}
        measured[LAUNCH_05] = medians_by_test(v["results"]["bench"])
        measured[LAUNCH_05_AGENT] = medians_by_test(v["results"]["bench"], ("tg agent",))
        R["compare"]["sparkkit"] = {"argv": st["server"]["argv"], "load_s": st["server"].get("load_seconds"),
                                    "gpu_mem": R["server"]["gpu_mem"], "runs": v["results"]["bench"]}
    subprocess.run([sys.executable, "-m", "sparkkit", "stop"], capture_output=True, text=True, timeout=60)
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60).stdout

    bench_bin = a.bench or str(Path(binary).with_name("llama-bench"))
    tgs = [a.tg] + ([a.tg_long] if a.tg_long else [])
    R["engine_equivalent"] = {}
    if "bench" not in skip:
        run.phase("llama-bench", 90, lambda: _llama_bench(run, bench_bin, model_path, a.bench_reps, a.pp, tgs,
                                                          depths))
        run.phase("06 on an engine-equivalent launch", 60, lambda: _engine_equivalent(
            run, st["server"]["argv"], a.pp, tgs, depths, measured))
    _log_bench_vs_06(run, measured)
    # 05's launch and each --split-variant: (label, flags, the phase's name for it)
    splits = [("05", [], "05")] + [(label, flags, "05 + " + shlex.join(flags))
                                   for label, flags in map(decode_gap.variant_flags, a.split_variant)]
    if "debug-timings" not in skip and (a.debug_server or not a.binary):   # built from the build tree
        debug_server = {"path": a.debug_server}
        for label, flags, name in splits:
            run.phase(f"decode split: {name} on a DEBUG_TIMINGS server", 75 if debug_server["path"] else 110,
                      lambda: _decode_split(run, a.build_dir, st["server"]["argv"], tgs[-1], debug_server, label,
                                            flags))
    if "batched-bench" not in skip and (a.batched_bench_bin or not a.binary):   # or built in the build tree
        bb = {"path": a.batched_bench_bin}
        for label, flags, name in splits:
            run.phase(f"llama-batched-bench in {name}'s context", 45, lambda: _batched_bench(
                run, a.build_dir, bb, model_path, with_flags(st["server"]["argv"], flags), [64, deep], tgs, label))
    for spec in a.variant:
        label, flags = decode_gap.variant_flags(spec)
        run.phase(f"06 on 05's launch + {label}", 60, lambda: _variant(
            run, st["server"]["argv"], label, flags, a.pp, tgs, depths, measured))
    if a.variant:
        _log_bench_vs_06(run, measured)
    if "bench" not in skip:
        run.phase("roofline", 10, lambda: _roofline(run, model_path, deep, measured, tgs))

    R["plan_vs_logged"] = []
    for ctx, ub in checks:
        run.phase(f"plan check c={ctx} ub={ub}", 20 if (ctx, ub) in plans else 45,
                  lambda: _plan_check(run, st["server"]["argv"], ctx, ub, plans.get((ctx, ub))))
    if "compare" not in skip:
        _comparisons(run, binary, model_path, help_text, a.pp, a.tg, depths)
    return _finish(run)


def _log_bench_vs_06(run: Run, measured: dict[str, dict[str, float]]) -> None:
    if measured and "llama_bench" in run.results:
        run.results["bench_vs_06"] = compare_bench(measured, run.results["llama_bench"]["rows"])
        run.log("06 vs llama-bench:\n" + table(run.results["bench_vs_06"]))
        run.save()


def _variant(run: Run, served: list[str], label: str, flags: list[str], pp: int, tgs: list[int],
             depths: list[int], measured: dict[str, dict[str, float]]) -> None:
    argv = with_flags(replace_flag(served, "--port", str(free_port())), flags)
    with Server(run, argv, f"variant-{label}") as s:
        runs = measure(s.port, pp, tgs[0], depths, 3)
    name = f"same + {shlex.join(flags)}"
    measured[name] = medians_by_test(runs)
    run.results.setdefault("variants", {})[label] = {"argv": argv, "load_s": s.load_s, "gpu_mem": s.mem,
                                                     "runs": runs, "medians": measured[name]}
    run.log(f"{name}: {json.dumps(measured[name])}")


def _greedy_decodes(port: int, tg: int, seconds: float) -> list[float | None]:
    """06's engine decode request (unstreamed, greedy top-1) on one cached prompt, again for `seconds`
    (at least 3 times): each one's ms per generated token (None for a 1-token reply)."""
    sys.path.insert(0, str(ROOT / "src"))
    from sparkkit import bench, verify
    out: list[float | None] = []
    t_end = time.monotonic() + seconds
    with verify.client(f"http://127.0.0.1:{port}") as c:
        model = verify.served_model(c)
        while len(out) < 3 or time.monotonic() < t_end:
            tps = bench.one_run(c, model, "Count slowly.", tg, stream=False,
                                sampling=bench.ENGINE_SAMPLING)["decode tok/s"]
            out.append(1000 / tps if tps else None)
    return out


def _decode_split(run: Run, build_dir: str, served: list[str], tg: int, debug_server: dict[str, str],
                  label: str = "05", flags: list[str] | None = None) -> None:
    """Per generated token: batch building, the GPU's decode, sampling — on 05's own launch (or with
    `flags` set)."""
    if not debug_server.get("path"):   # built once, kept for the next split
        debug_server["path"] = decode_gap.build_debug_server(build_dir, "/tmp/lb-debug-timings",
                                                             max(30, min(150, run.left() - 40)))
    argv = [debug_server["path"], *replace_flag(served, "--port", str(free_port()))[1:]]
    argv = with_flags(argv, flags or [])
    with Server(run, argv, f"debug-timings-{label}") as s:
        served_ms = _greedy_decodes(s.port, tg, 12)
        time.sleep(5.5)            # the timers print from the next update after 5 s
        _greedy_decodes(s.port, 1, 0)
        time.sleep(0.5)
    timers = decode_gap.parse_timers(s.logpath.read_text(errors="replace"))
    ref = run.results.get("llama_bench", {}).get("rows", {}).get(f"tg{tg}@d0", {}).get("median")
    rows = decode_gap.split_rows(timers, statistics.median(m for m in served_ms if m), 1000 / ref if ref else None)
    run.results.setdefault("decode_split", {})[label] = {"argv": argv, "tg": tg, "timers_ms": timers,
                                                        "served_ms": served_ms, "rows": rows}
    run.log(f"decode split, {label}, tg{tg} at depth 0 (server's DEBUG_TIMINGS averages):\n" + table(rows))


def _batched_bench(run: Run, build_dir: str, bb: dict[str, str], model: str, served: list[str], npp: list[int],
                   tgs: list[int], label: str) -> None:
    """llama_decode alone (no server, no sampling) in 05's context shape: npp prompt tokens, then each
    of tgs decoded at that depth."""
    if not bb.get("path"):
        p = subprocess.run(["cmake", "--build", build_dir, "--target", "llama-batched-bench", "-j",
                            str(os.cpu_count())], capture_output=True, text=True,
                           timeout=max(10, min(120, run.left() - 30)))
        if p.returncode:
            raise RuntimeError(f"building llama-batched-bench failed: {(p.stdout + p.stderr)[-1500:]}")
        bb["path"] = str(Path(build_dir) / "bin" / "llama-batched-bench")
    argv = decode_gap.batched_bench_argv(bb["path"], model, served, npp, tgs)
    run.log(shlex.join(argv))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=max(10, run.left() - 5))
    (run.logs / "llama-batched-bench.err").write_text(p.stderr)
    rows = decode_gap.parse_batched_bench(p.stdout)
    if not rows:
        raise RuntimeError(f"llama-batched-bench printed no rows (rc {p.returncode}): {p.stderr[-1500:]}")
    run.results.setdefault("batched_bench", {})[label] = {"argv": argv, "rows": rows}
    run.log(f"llama-batched-bench, {label} (pp tokens, then tg at that depth):\n" + table(
        [{**{k: r[k] for k in ("pp", "tg", "n_kv", "speed_pp", "speed_tg")},
          "tg ms/token": round(1000 / r["speed_tg"], 3) if r.get("speed_tg") else None} for r in rows]))


def _ensure_choice(run: Run, model: str, model_dir: str) -> None:
    """01 must leave `host` and `choice` (model) for 02–05; if it did not, say so and hand them over."""
    sys.path.insert(0, str(ROOT / "src"))
    from sparkkit import records
    st = records.load_state()
    if st.get("choice", {}).get("model") == model and "host" in st:
        return
    run.log(f"01 left no usable choice/host in the state ({st.get('choice')}); writing choice model={model} "
            "and host from /proc/meminfo so 02–05 can go on")
    if "host" not in st:
        mem = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.split()[1:2]}
        records.update_state("host", {"is_gb10": False, "target": "embedded", "checks": [],
                                      "usable_bytes": mem.get("MemAvailable", 0) + mem.get("SwapFree", 0) - 4 * 2**30})
    records.update_state("choice", {"model": model, "engine": "llamacpp", "model_dir": model_dir})
    run.results["state_fixup"] = True


LAUNCH_05 = "sparkkit launch (05)"
LAUNCH_05_AGENT = "05, as an agent (streamed, default sampling)"
LAUNCH_ENGINE = "same + --ctx-checkpoints 0"


def engine_equivalent_argv(served: list[str], port: int) -> list[str]:
    """05's launch without the per-request prefill work llama-bench does not do: llama.cpp's
    sliding-window context checkpoints (it splits each prompt's last 2048 + 4 tokens into extra
    batches and copies the window state out). Decode needs no such launch: 06's `tg` test already asks
    for greedy top-1 sampling without streaming. (--backend-sampling was tried on b11549 and made both
    worse: +0.5 s a request.)"""
    argv = replace_flag(served, "--port", str(port))
    return replace_flag(argv, "--ctx-checkpoints", "0", ("-ctxcp", "--swa-checkpoints"))


def _engine_equivalent(run: Run, served: list[str], pp: int, tgs: list[int], depths: list[int],
                       measured: dict[str, dict[str, float]]) -> None:
    argv = engine_equivalent_argv(served, free_port())
    with Server(run, argv, "engine-equivalent") as s:
        runs = measure(s.port, pp, tgs[0], depths, 3)
        for tg in tgs[1:]:   # the longer decode test: its pp rows repeat the first's, keep its tg rows only
            runs += [r for r in measure(s.port, pp, tg, depths, 2) if r["kind"].startswith("tg")]
    measured[LAUNCH_ENGINE] = medians_by_test(runs)
    run.results["engine_equivalent"] = {"argv": argv, "load_s": s.load_s, "runs": runs,
                                        "medians": measured[LAUNCH_ENGINE]}
    run.log(f"{LAUNCH_ENGINE}: {json.dumps(measured[LAUNCH_ENGINE])}")


def _comparisons(run: Run, binary: str, model: str, help_text: str, pp: int, tg: int, depths: list[int]) -> None:
    R = run.results

    def guide():
        port = free_port()
        verbatim, runnable, change = guide_argv(binary, model, port, help_text)
        if verbatim != runnable:   # show that the guide's own line fails on this build
            p = subprocess.run(verbatim, capture_output=True, text=True, timeout=60)
            R["compare"]["guide verbatim"] = {"argv": verbatim, "exit": p.returncode,
                                              "tail": "\n".join((p.stdout + p.stderr).splitlines()[-4:])}
            run.log(f"guide's line verbatim: exit {p.returncode}: {R['compare']['guide verbatim']['tail'][-300:]}")
        with Server(run, runnable, "guide") as s:
            R["compare"]["guide"] = {"argv": runnable, "change": change, "load_s": s.load_s, "gpu_mem": s.mem,
                                     "props": s.props(), "runs": measure(s.port, pp, tg, depths, 2)}

    def defaults():
        port = free_port()
        argv = [binary, "-m", model, "--port", str(port)]
        with Server(run, argv, "defaults") as s:
            R["compare"]["defaults"] = {"argv": argv, "load_s": s.load_s, "gpu_mem": s.mem, "props": s.props(),
                                        "runs": measure(s.port, pp, tg, depths, 2)}

    run.phase("compare guide flags", 60, guide)
    run.phase("compare llama-server defaults", 60, defaults)
    rows = []
    for name, d in R["compare"].items():
        if "runs" not in d:
            continue
        med = medians_by_test(d["runs"])
        rows.append({"launch": name, "load s": round(d.get("load_s") or 0, 1),
                     **{f"{t} tok/s": None if med.get(t) is None else round(med[t], 1)
                        for t in [f"pp{pp}@d{x}" for x in depths] + [f"tg{tg}@d{x}" for x in depths]},
                     "GPU memory": d.get("gpu_mem"), "flags": shlex.join(d["argv"][3:])[:160]})
    R["compare_table"] = rows
    run.log("launch comparison:\n" + table(rows))


def plan_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """02's record → its components, those counted against GPU memory and those set aside (host RAM)."""
    return list(rec["results"]["rows"]) + list(rec["results"].get("aside", []))


def _plan_in_process(run: Run, ctx: int, ub: int) -> dict[str, Any]:
    """02's own plan function, called here the way 02's cell calls it (for when 02's notebook failed)."""
    sys.path.insert(0, str(ROOT / "src"))
    from sparkkit import plan
    view = plan.run(ctx, 1, "f16", ub)
    verdict, headline, results = view.record()
    run.log(f"  02's plan.run in-process at c={ctx} ub={ub}: {headline}")
    return {"verdict": verdict, "headline": headline, "results": results, "source": "plan.run in-process"}


def _plan_check(run: Run, served_argv: list[str], ctx: int, ub: int, rec: dict | None = None) -> None:
    if rec is None:
        try:
            rec = run.papermill("02-plan", {"context": ctx, "ubatch": ub}, tag=f"c{ctx}-ub{ub}", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            run.log(f"  02 at c={ctx} ub={ub} did not finish ({type(e).__name__}); using its plan function")
            rec = _plan_in_process(run, ctx, ub)
    port = free_port()
    argv = replace_flag(served_argv, "-c", str(ctx), ("--ctx-size",))
    argv = replace_flag(argv, "-ub", str(ub), ("--ubatch-size",))
    argv = replace_flag(argv, "-b", str(max(ub, 2048)), ("--batch-size",))
    argv = replace_flag(argv, "--port", str(port))
    argv = replace_flag(argv, "-lv", "4", ("--verbosity", "--log-verbosity"))
    with Server(run, argv, f"lv4-c{ctx}-ub{ub}") as s:
        pass
    buffers = parse_buffers(s.logpath.read_text(errors="replace"))
    logged = logged_components(buffers)
    rows = compare_plan(plan_rows(rec), logged)
    run.results["plan_vs_logged"].append({"context": ctx, "ubatch": ub, "plan from": rec.get("source", "02 record"),
                                          "buffers MiB": buffers,
                                          "logged": logged, "rows": rows, "gpu_mem": s.mem,
                                          "load_s": round(s.load_s, 1)})
    run.log(f"plan vs logged at c={ctx} ub={ub}:\n" + table(rows))


def _llama_bench(run: Run, bench_bin: str, model: str, reps: int, pp: int, tgs: list[int], depths: list[int]) -> None:
    argv = [bench_bin, "-m", model, "-ngl", "99", "-fa", "1", "-ub", "2048", "-p", str(pp), "-n", ",".join(map(str, tgs)),
            "-d", ",".join(map(str, depths)), "-lm", "none", "-r", str(reps), "-o", "json"]
    run.log(shlex.join(argv))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=max(10, run.left() - 5))
    (run.logs / "llama-bench.err").write_text(p.stderr)
    (run.res / "llama-bench.json").write_text(p.stdout)
    data = json.loads(p.stdout)
    rows = bench_rows(data)
    run.results["llama_bench"] = {"argv": argv, "rows": rows,
                                  "build": {k: data[0].get(k) for k in ("build_commit", "build_number",
                                                                          "gpu_info", "model_type", "model_size",
                                                                          "model_n_params")} if data else {}}
    run.log("llama-bench: " + json.dumps(rows))


def _roofline_bytes(run: Run, model: str) -> None:
    import gguf
    r = gguf.GGUFReader(model)
    f = lambda k: r.fields[k].contents()   # noqa: E731
    n_expert, n_used = f("gpt-oss.expert_count"), f("gpt-oss.expert_used_count")
    run.results["roofline_shape"] = {
        "n_layer": f("gpt-oss.block_count"), "n_head_kv": f("gpt-oss.attention.head_count_kv"),
        "head_dim": f("gpt-oss.attention.key_length"), "window": f("gpt-oss.attention.sliding_window"),
        "parts": active_bytes([(t.name, int(t.n_bytes)) for t in r.tensors], n_expert, n_used)}


def _roofline(run: Run, model: str, deep: int, measured: dict[str, dict[str, float]], tgs: list[int]) -> None:
    """Decode speed as a fraction of what the measured bandwidth allows for the bytes a token reads."""
    if "roofline_shape" not in run.results:
        _roofline_bytes(run, model)
    sh = run.results["roofline_shape"]
    n_layer, n_head_kv, head_dim, window, parts = (sh[k] for k in ("n_layer", "n_head_kv", "head_dim", "window",
                                                                   "parts"))
    bw = (run.results.get("bandwidth") or {}).get("GB/s")
    lb = {k: v.get("median", v["avg"]) for k, v in ((run.results.get("llama_bench") or {}).get("rows", {})).items()}
    sources = {"llama-bench (median)": lb, **{f"06 · {name}": m for name, m in measured.items()}}
    rows = []
    for depth in (0, deep):
        b = parts["total"] + kv_read_bytes(depth, n_layer // 2, n_layer // 2, window, n_head_kv, head_dim)
        ceiling = bw * 1e9 / b if bw else None
        for tg in tgs:
            for src, by_test in sources.items():
                tps = by_test.get(f"tg{tg}@d{depth}")
                if tps is None:
                    continue
                rows.append({"depth": depth, "test": f"tg{tg}", "bytes/token GB": round(b / 1e9, 3),
                             "bandwidth GB/s": bw, "ceiling tok/s": None if ceiling is None else round(ceiling, 1),
                             "decode measured by": src, "tok/s": round(tps, 1),
                             "fraction of roofline": None if not ceiling else round(tps / ceiling, 3)})
    run.results["roofline"] = {"bytes_per_token_parts": parts, "rows": rows}
    run.log("roofline:\n" + table(rows))


def _info() -> dict[str, str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
        except subprocess.TimeoutExpired:
            return "timeout"
    return {"gpu": sh("nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader"),
            "nvcc": sh("nvcc --version | tail -2 | head -1"), "cmake": sh("cmake --version | head -1"),
            "ninja": sh("ninja --version"), "cpus": str(os.cpu_count()), "mem": sh("free -g | sed -n 2p"),
            "shm": sh("df -h /dev/shm | tail -1"), "python": sys.version.split()[0],
            "packages": sh(f"{sys.executable} -m pip list 2>/dev/null | grep -i -E "
                           "'^(pandas|matplotlib|numpy|ipywidgets|ipykernel|ipython|nbclient|traitlets|comm|papermill|httpx) '"),
            "gpu_used_at_start": gpu_mem_used(), "shm_files": sh("ls -la /dev/shm | head -20")}


def _bandwidth() -> dict[str, Any]:
    """Device-to-device copy of 4 GiB (read + write counted), median of 20 event-timed runs."""
    import torch
    if not torch.cuda.is_available():
        return {"GB/s": None, "note": "no CUDA device"}
    n = 4 * 1024**3
    x = torch.empty(n, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y.copy_(x)
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    m = statistics.median(ts)
    del x, y
    torch.cuda.empty_cache()
    return {"GB/s": round(2 * n / (m / 1e3) / 1e9, 1), "best GB/s": round(2 * n / (min(ts) / 1e3) / 1e9, 1),
            "median ms": round(m, 3), "device": torch.cuda.get_device_name()}


def _finish(run: Run) -> int:
    run.log(f"done at {time.monotonic() - run.t0:.0f} s")
    run.save()
    home = Path(os.environ.get("SPARKKIT_HOME", "/nonexistent"))
    extra = [home / "build" / "llama-cpp-build.log", *sorted((home / "server").glob("server-*.log"))]
    for p in extra:   # 04's build log and 05's server log, next to ours
        if p.is_file():
            (run.logs / f"sparkkit-{p.name}").write_text(p.read_text(errors="replace"))
    for p in sorted(run.logs.glob("*server-*.log")) + sorted(run.logs.glob("*build*.log")):
        (p.with_suffix(".excerpt.txt")).write_text(excerpt(p))   # the (large) -lv 4 logs travel as excerpts
    return 0


if __name__ == "__main__":
    sys.exit(main())
