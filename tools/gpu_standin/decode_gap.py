"""Where 06's rates fall behind llama-bench's, taken apart on the device (issue 5).

06 measures through llama-server; llama-bench calls llama_decode in a loop and samples nothing. Three
measurements split the difference:

- llama-batched-bench with 05's context shape (-c, -kvu, -b/-ub): llama_decode alone, in a context
  like the server's. Near llama-bench → the context is not the cause.
- a second llama-server built with the server's own per-step timers (server-context.cpp's
  DEBUG_TIMINGS, via debug_timings.sh): per generated token, pre_decode (batch building), decode
  (synchronized, so the GPU's time) and post_decode (sampling and handing the token on).
- 05's launch with changed flags (`--variant 'label=FLAGS'`), measured by 06's own code, e.g.
  `--swa-full`, which keeps the whole sliding-window cache so the server needs no checkpoints.

Pure helpers here are unit-tested; the phases that drive them live in standin.py.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

_TIMER = re.compile(r"avg (t_pre_decode|t_decode|t_post_decode|t_sampl)\s*=\s*([0-9.]+|nan|-?inf) ms")


def variant_flags(spec: str) -> tuple[str, list[str]]:
    """'swa-full=--swa-full --ctx-checkpoints 0' → ('swa-full', ['--swa-full', '--ctx-checkpoints', '0'])."""
    label, sep, flags = spec.partition("=")
    if not sep or not label.strip() or not flags.strip():
        raise ValueError(f"--variant {spec!r}: expected LABEL=FLAGS, e.g. 'swa-full=--swa-full'")
    return label.strip(), shlex.split(flags)


def parse_timers(log_text: str) -> dict[str, float]:
    """The last DEBUG_TIMINGS report in a server log → {'t_decode': ms, …} (cumulative averages)."""
    last: dict[str, float] = {}
    for name, value in _TIMER.findall(log_text):
        try:
            last[name] = float(value)
        except ValueError:
            continue
    return last


def parse_batched_bench(stdout: str) -> list[dict[str, Any]]:
    """llama-batched-bench --output-format jsonl → its rows (one per pp × tg × pl)."""
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            rows.append(json.loads(line))
    return rows


def split_rows(timers: dict[str, float], served_ms: float | None, bench_ms: float | None) -> list[dict[str, Any]]:
    """Per generated token: where the server's time goes, next to llama-bench's whole token."""
    rows = [{"step": "pre_decode (batch building)", "ms/token": timers.get("t_pre_decode")},
            {"step": "decode (llama_decode + synchronize: the GPU's time)", "ms/token": timers.get("t_decode")},
            {"step": "post_decode (sampling, handing the token on)", "ms/token": timers.get("t_post_decode")},
            {"step": "  of which sampling", "ms/token": timers.get("t_sampl")}]
    if served_ms is not None:
        rows.append({"step": "server's own figure (predicted_per_token_ms, median)", "ms/token": served_ms})
    if bench_ms is not None:
        rows.append({"step": "llama-bench, the same test (1000 / median tok/s)", "ms/token": bench_ms})
    for r in rows:
        if r["ms/token"] is not None:
            r["ms/token"] = round(r["ms/token"], 3)
    return rows


# ----------------------------------------------------------------------------- device-side builders
def build_debug_server(build_dir: str, out_dir: str, timeout: float) -> str:
    """debug_timings.sh: the same build's llama-server with DEBUG_TIMINGS, in out_dir."""
    p = subprocess.run(["bash", str(HERE / "debug_timings.sh"), build_dir, out_dir], capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"debug_timings.sh failed (rc {p.returncode}): {(p.stdout + p.stderr)[-1500:]}")
    return p.stdout.strip().splitlines()[-1]


def batched_bench_argv(binary: str, model: str, served: list[str], npp: list[int], ntg: list[int]) -> list[str]:
    """llama-batched-bench in 05's context shape: its -c, -b, -ub, -kvu, -fa, -lm taken from the launch."""
    def flag(names: tuple[str, ...], default: str) -> str:
        for n in names:
            if n in served:
                return served[served.index(n) + 1]
        return default
    argv = [binary, "-m", model, "-ngl", "99", "-fa", flag(("-fa", "--flash-attn"), "on"),
            "-c", flag(("-c", "--ctx-size"), "131072"), "-b", flag(("-b", "--batch-size"), "2048"),
            "-ub", flag(("-ub", "--ubatch-size"), "512"), "-lm", flag(("-lm", "--load-mode"), "none"),
            "-npp", ",".join(map(str, npp)), "-ntg", ",".join(map(str, ntg)), "-npl", "1",
            "--output-format", "jsonl"]
    if ("--kv-unified" in served or "-kvu" in served) and "--no-kv-unified" not in served:
        argv.append("-kvu")
    return argv
