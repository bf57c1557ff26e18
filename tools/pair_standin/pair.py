"""Two GB10s as one, stood in by one machine's two GPUs: the runbooks' own code serves a gpt-oss-120b-shaped
model split by llama.cpp's RPC backend, and the same model on one GPU, in one call.

  01 (-p peer loopback:1: GPU 1 is box B, reached over TCP on loopback)
  → 04 builds llama.cpp with CUDA and RPC (llama-server + rpc-server) from the pinned tree    ┐ in parallel
    03 generates the 59 GiB scripted stand-in                                                 ┘
  → 02 plans the pair: the layers, weights, KV and buffers of each box
  → 05 starts box B's rpc-server (GPU 1), then box A's llama-server (GPU 0) with --rpc and -ts
  → each box's buffers as llama.cpp logs them, against 02's per-box plan
  → 06 against the pair → sparkkit stop (both sides) → 01 without a peer, 02, 05, 06 on GPU 0 alone

Usage on the lent 2-GPU machine (carry .devcarry and .whl, as tools/gpu_standin/run.sh):
  BUDGET=570 bash tools/pair_standin/run.sh
Also runs without a GPU against stand-in binaries (--binary, --placed), which is how it is tried first.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "gpu_standin"))
sys.path.insert(0, str(ROOT / "src"))
from standin import MIB, Run, _finish, gpu_mem_used, medians_by_test, parse_buffers  # noqa: E402


def per_box_check(plan: dict[str, Any], logged: dict[str, float]) -> list[dict[str, Any]]:
    """02's per-box rows against the buffers llama.cpp logged for that box's device (MiB). The head's
    token embeddings are its CPU model buffer; its host compute buffer is CUDA_Host (or CPU)."""
    rows = []
    for box in plan.get("boxes") or []:
        dev = box["device"]
        planned = {r["component"]: r["bytes"] / MIB for r in box["rows"]}
        pairs = [("weights", f"model {dev}"), ("KV full attention", f"kv full {dev}"),
                 ("KV sliding window", f"kv swa {dev}"), ("compute buffer", f"compute {dev}")]
        if "token embeddings" in planned:      # the input layer: whatever host buffer type this build gives it
            devices = {f"model {b['device']}" for b in plan.get("boxes") or []}
            logged = {**logged, "model host": sum(v for k, v in logged.items()
                                                  if k.startswith("model ") and k not in devices) or None}
            pairs += [("token embeddings", "model host"), ("compute buffer (host)", "compute CUDA_Host")]
        p_sum = g_sum = 0.0
        for comp, key in pairs:
            if comp not in planned:
                continue
            got = logged.get(key)
            if got is None:
                rows.append({"box": box["name"], "component": comp, "planned MiB": round(planned[comp], 2),
                             "logged MiB": None, "delta %": None})
                continue
            p_sum += planned[comp]
            g_sum += got
            rows.append({"box": box["name"], "component": comp, "planned MiB": round(planned[comp], 2),
                         "logged MiB": round(got, 2),
                         "delta %": round(100 * (planned[comp] - got) / got, 2) if got else None})
        rows.append({"box": box["name"], "component": "all logged buffers", "planned MiB": round(p_sum, 2),
                     "logged MiB": round(g_sum, 2), "delta %": round(100 * (p_sum - g_sum) / g_sum, 2) if g_sum else None,
                     "within 5 %": bool(g_sum) and abs(p_sum - g_sum) <= 0.05 * g_sum})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", default="/tmp/pair")
    ap.add_argument("--budget", type=float, default=560)
    ap.add_argument("--src", default=str(ROOT / ".devcarry" / "llama.cpp"))
    ap.add_argument("--build-dir", default="/tmp/lb")
    ap.add_argument("--binary", default="", help="use this llama-server (rpc-server beside it) instead of building")
    ap.add_argument("--model", default="gpt-oss-120b")
    ap.add_argument("--model-dir", default="/dev/shm/sparkkit-models")
    ap.add_argument("--placed", default="", help="dry runs: record this GGUF as placed instead of running 03")
    ap.add_argument("--peer", default="loopback:1")
    ap.add_argument("--context", type=int, default=131072)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--pp", type=int, default=2048)
    ap.add_argument("--tg", type=int, default=32)
    ap.add_argument("--depths", default="0,8192")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--skip-single", action="store_true")
    ap.add_argument("--only-single", action="store_true", help="only the one-GPU half (01 without a peer, 03, 04, "
                    "02, 05, 06 on GPU 0)")
    a = ap.parse_args(argv)
    run = Run(Path(a.res), a.budget)
    R = run.results
    R["args"] = vars(a)
    depths = [int(x) for x in a.depths.split(",")]
    verify = {"pp_tokens": a.pp, "tg_tokens": a.tg, "depths": depths, "repeats": a.repeats}
    from sparkkit import records

    if a.only_single:
        a.peer = ""
    run.phase("01-preflight (pair)", 30, lambda: run.papermill("01-preflight", {
        "model": a.model, "model_dir": a.model_dir, "peer": a.peer}))
    if not run.state().get("pair") and a.peer.startswith("loopback") and not a.only_single:
        # an 01 without the peer parameter: the section it would write for loopback:N, so 02–05 can go on
        gpu = int(a.peer.split(":")[1]) if ":" in a.peer else None
        records.update_state("pair", {"peer": a.peer, "transport": "loopback", "host": "", "head_addr": "127.0.0.1",
                                      "peer_addr": "127.0.0.1", "peer_gpu_index": gpu, "peer_usable_bytes": None,
                                      "status": "pass", "checks": []})
        R["pair_fixup"] = True
        run.log("01 left no pair section: wrote the loopback one")
    R["pair_section"] = run.state().get("pair")
    engine: dict[str, Any] = {}
    params = {"binary": a.binary} if a.binary else {"src_dir": a.src, "build_dir": a.build_dir, "build_now": True}

    def build():
        try:
            engine["record"] = run.papermill("04-engine", params)
        except Exception as e:      # noqa: BLE001 — recorded, the run goes on to its records
            engine["error"] = e
    th = threading.Thread(target=build)
    t_build = time.monotonic()
    th.start()
    if a.placed:
        records.update_state("model", {"model": a.model, "path": a.placed, "size_bytes": Path(a.placed).stat().st_size,
                                       "source": "dry run", "seconds": 0, "alias": a.model})
    else:
        template = Path(a.src) / "models" / "templates" / "openai-gpt-oss-120b.jinja"
        run.phase("03-place-model", 120, lambda: run.papermill(
            "03-place-model", {"source": "generate", "chat_template": str(template) if template.is_file() else ""}))
    plan = run.phase("02-plan (pair)", 60, lambda: run.papermill("02-plan", {"context": a.context, "slots": a.slots}))
    th.join()
    R["phases"]["04-engine"] = {"status": "ok" if "record" in engine else f"failed: {engine.get('error')}",
                                "seconds": round(time.monotonic() - t_build, 1)}
    run.save()
    if "record" not in engine or not plan:
        run.log("no engine or no plan: stopping here")
        return _finish(run)
    if a.only_single:
        return _single(run, a, verify)
    R["plan_pair"] = {k: plan["results"].get(k) for k in ("verdict", "total_bytes", "usable_bytes", "serving", "boxes")}
    served = run.phase("05-serve (pair)", 240, lambda: run.papermill("05-serve", {"port": a.port}))
    if served is None:
        return _finish(run)
    st = run.state()
    srv = st["server"]
    R["server_pair"] = {"argv": srv["argv"], "load_seconds": srv.get("load_seconds"), "gpu_mem": gpu_mem_used(),
                        "rpc_servers": srv.get("rpc_servers")}
    v = run.phase("06-verify (pair)", 200, lambda: run.papermill("06-verify", verify, tag="pair"))
    if v:
        R["verify_pair"] = {"headline": v["headline"], "probes": v["results"].get("probes"),
                            "medians": medians_by_test(v["results"]["bench"])}
    pids = [r["pid"] for r in srv.get("rpc_servers") or []] + [srv["pid"]]
    out = subprocess.run([sys.executable, "-m", "sparkkit", "stop"], capture_output=True, text=True, timeout=120)
    def running(pid: int) -> bool:       # a zombie awaiting its reaper is not running
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    time.sleep(1)
    alive = [p for p in pids if running(p)]
    R["stop_pair"] = {"said": out.stdout.strip()[-500:], "pids": pids, "still_running": alive}
    run.log(f"stop: {out.stdout.strip()[-300:]}; still running: {alive}")
    if a.skip_single:
        return _finish(run)
    _single(run, a, verify)
    if R.get("verify_pair") and R.get("verify_single"):
        p, s = R["verify_pair"]["medians"], R["verify_single"]["medians"]
        R["pair_vs_single"] = {k: {"pair": p[k], "single": s.get(k), "ratio": round(p[k] / s[k], 3) if s.get(k) else None}
                               for k in p}
        run.log(f"pair vs one GPU: {json.dumps(R['pair_vs_single'])}")
    # The pair launched again with llama.cpp's buffer log (-lv 4 through its env variable; not during 06, whose
    # figures it could slow): each box's buffers against 02's per-box plan.
    run.phase("01-preflight (pair again)", 20, lambda: run.papermill("01-preflight", {
        "model": a.model, "model_dir": a.model_dir, "peer": a.peer}, tag="pair-lv4"))
    run.phase("02-plan (pair again)", 30, lambda: run.papermill("02-plan", {"context": a.context, "slots": a.slots},
                                                                  tag="pair-lv4"))
    os.environ["LLAMA_ARG_LOG_VERBOSITY"] = "4"
    again = run.phase("05-serve (pair again, at -lv 4)", 160, lambda: run.papermill(
        "05-serve", {"port": a.port}, tag="pair-lv4"))
    os.environ.pop("LLAMA_ARG_LOG_VERBOSITY", None)
    if again:
        srv2 = run.state()["server"]
        R["server_pair_lv4"] = {"load_seconds": srv2.get("load_seconds"), "argv": srv2["argv"]}
        logged = parse_buffers(Path(srv2["log"]).read_text(errors="replace"))
        R["logged_pair"] = logged
        R["per_box"] = per_box_check(plan["results"], logged)
        for row in R["per_box"]:
            run.log(f"  {row}")
        out = subprocess.run([sys.executable, "-m", "sparkkit", "stop"], capture_output=True, text=True, timeout=120)
        run.log(f"stop: {out.stdout.strip()[-300:]}")
    return _finish(run)


def _single(run: Run, a: argparse.Namespace, verify: dict[str, Any]) -> int:
    """The same model on one GPU (GPU 0 only: llama.cpp would otherwise split it over both local GPUs)."""
    from sparkkit import records
    R = run.results
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    run.phase("01-preflight (one box)", 20, lambda: run.papermill("01-preflight", {
        "model": a.model, "model_dir": a.model_dir}, tag="single"))
    if run.state().get("pair"):
        records.update_state("pair", None)
        run.log("01 without a peer left the pair section: cleared")
    one = run.phase("02-plan (one GPU)", 30, lambda: run.papermill("02-plan", {"context": a.context, "slots": a.slots},
                                                                   tag="single"))
    if one:
        R["plan_single"] = {k: one["results"].get(k) for k in ("verdict", "total_bytes", "usable_bytes", "serving")}
    s1 = run.phase("05-serve (one GPU)", 60, lambda: run.papermill("05-serve", {"port": a.port}, tag="single"))
    if s1:
        st = run.state()
        R["server_single"] = {"argv": st["server"]["argv"], "load_seconds": st["server"].get("load_seconds"),
                              "gpu_mem": gpu_mem_used()}
        v1 = run.phase("06-verify (one GPU)", 45, lambda: run.papermill("06-verify", verify, tag="single"))
        if v1:
            R["verify_single"] = {"headline": v1["headline"], "probes": v1["results"].get("probes"),
                                  "medians": medians_by_test(v1["results"]["bench"])}
        subprocess.run([sys.executable, "-m", "sparkkit", "stop"], capture_output=True, text=True, timeout=120)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    return _finish(run) if a.only_single else 0


if __name__ == "__main__":
    sys.exit(main())
