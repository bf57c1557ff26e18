"""How much of llama-server's decode gap to llama-bench is its per-token work over the vocabulary.

On the H100 the served gpt-oss-120b decoded ~15 % slower than llama-bench (records/gpu-standin/
NOTES.md), whether streamed or not and with greedy top-1 sampling too. This isolates the suspect on
any machine with a llama.cpp build: two tiny gpt-oss models that differ only in vocabulary size
(5,280 entries vs gpt-oss's 201,088), each decoded by llama-bench and by llama-server (unstreamed,
greedy top-1 and the server's default sampling), printed as ms/token and server ÷ bench ratios.

    python tools/gpu_standin/vocab_overhead.py --bin BUILD/bin [--threads 2] [--tokens 128]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))


def bench_ms(binary: Path, model: Path, tokens: int, threads: int, reps: int) -> float:
    out = subprocess.run([str(binary), "-m", str(model), "-p", "0", "-n", str(tokens), "-r", str(reps),
                          "-t", str(threads), "-o", "json"], capture_output=True, text=True, check=True).stdout
    return 1000 / json.loads(out)[0]["avg_ts"]


def server_ms(binary: Path, model: Path, tokens: int, threads: int, reps: int) -> dict[str, float]:
    from sparkkit import bench, serve, verify
    port = serve.free_port()
    proc = subprocess.Popen([str(binary), "-m", str(model), "--port", str(port), "-c", "4096", "--jinja",
                             "-t", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        serve.wait_healthy(proc, f"http://127.0.0.1:{port}", Path("/dev/null"), 120)
        res = {}
        with verify.client(f"http://127.0.0.1:{port}") as c:
            model = verify.served_model(c)
            for name, sampling in (("greedy top-1", bench.ENGINE_SAMPLING), ("default sampling", {})):
                ms = []
                for i in range(reps + 1):   # the first request warms up
                    row = bench.one_run(c, model, f"{i} {time.time()} go", tokens, stream=False, sampling=sampling)
                    ms.append(1000 / row["decode tok/s"])
                res[name] = statistics.median(ms[1:])
        return res
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="folder with llama-server and llama-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    from sparkkit.download import embedded_spec
    from sparkkit.tinymodel import generate
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_vocab in (0, 201088):   # 0: the embedded model's own vocabulary, unpadded
            spec = dataclasses.replace(embedded_spec(), n_vocab=n_vocab)
            model = generate(Path(tmp) / f"tiny-{n_vocab}.gguf", spec).path
            bench = bench_ms(Path(a.bin) / "llama-bench", model, a.tokens, a.threads, a.reps)
            served = server_ms(Path(a.bin) / "llama-server", model, a.tokens, a.threads, a.reps)
            for name, ms in served.items():
                rows.append((n_vocab or "5280 (tiny)", name, bench, ms))
    print(f"{'vocab':>14} | {'server sampling':>16} | bench ms/token | server ms/token | server − bench | ratio")
    for vocab, name, bench, ms in rows:
        print(f"{vocab!s:>14} | {name:>16} | {bench:14.3f} | {ms:15.3f} | {ms - bench:+14.3f} | {ms / bench:5.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
