"""Measure prefill, decode and time to first token (runbook 06, second half).

Speeds come from the engine's own `timings` (llama.cpp reports prompt_per_second and
predicted_per_second in every response) so HTTP and client overheads don't blur them; time to
first token is measured here, on a streamed request, because that is what a user waits for.
Engines without `timings` fall back to client-side figures, flagged in the `source` column.
"""
from __future__ import annotations

import json
import statistics
import time
import uuid
from typing import Any

import httpx
import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from .errors import check_int


def _words(n: int) -> str:
    # A nonce first, so no run can reuse another's prompt cache.
    return uuid.uuid4().hex + " " + " ".join(f"w{i % 97}" for i in range(n))


def prompt_of(c: httpx.Client, tokens: int) -> str:
    """A prompt of about `tokens` tokens, calibrated with the server's /tokenize when it has one."""
    sample = _words(400)
    try:
        r = c.post("/tokenize", json={"content": sample})
        per_word = len(r.json()["tokens"]) / 401 if r.status_code == 200 else 1.0
    except (httpx.HTTPError, ValueError, KeyError):
        per_word = 1.0
    return _words(max(1, int(tokens / max(per_word, 1e-3)) - 40))   # leave room for the chat template


def one_run(c: httpx.Client, model: str, prompt: str, gen_tokens: int) -> dict[str, Any]:
    body = {"model": model, "max_tokens": gen_tokens, "stream": True, "ignore_eos": True, "cache_prompt": False,
            "temperature": 0, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    ttft = None
    timings: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    with c.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise httpx.HTTPStatusError(f"HTTP {r.status_code}: {r.read()[:200]!r}", request=r.request, response=r)
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            for ch in ev.get("choices", []):
                delta = ch.get("delta", {})
                if ttft is None and (delta.get("content") or delta.get("reasoning_content")):
                    ttft = time.perf_counter() - t0
            timings = ev.get("timings") or timings
            usage = ev.get("usage") or usage
    total = time.perf_counter() - t0
    if timings.get("predicted_per_second"):
        return {"prompt tokens": timings.get("prompt_n"), "generated": timings.get("predicted_n"),
                "prefill tok/s": timings.get("prompt_per_second"), "decode tok/s": timings["predicted_per_second"],
                "TTFT (s)": ttft, "total (s)": total, "source": "engine timings"}
    gen = usage.get("completion_tokens") or 0
    return {"prompt tokens": usage.get("prompt_tokens"), "generated": gen,
            "prefill tok/s": (usage.get("prompt_tokens") or 0) / ttft if ttft else None,
            "decode tok/s": gen / (total - ttft) if ttft and total > ttft else None,
            "TTFT (s)": ttft, "total (s)": total, "source": "client clock"}


def measure(c: httpx.Client, model: str, prompt_tokens: list[int], gen_tokens: int = 128,
            repeats: int = 3, progress: bool = True) -> pd.DataFrame:
    """One row per run: prompt size, prefill and decode tok/s, TTFT."""
    check_int("gen_tokens", gen_tokens, 1, 32768)
    check_int("repeats", repeats, 1, 100)
    for n in prompt_tokens:
        check_int("prompt_tokens", n, 1)
    rows = []
    total_runs = len(prompt_tokens) * repeats
    for i, n in enumerate(prompt_tokens):
        for rep in range(repeats):
            row = {"target prompt": n, "repeat": rep + 1, **one_run(c, model, prompt_of(c, n), gen_tokens)}
            rows.append(row)
            if progress:
                print(f"[{len(rows)}/{total_runs}] prompt {row['prompt tokens']} tok: prefill "
                      f"{row['prefill tok/s'] or 0:.0f} tok/s, decode {row['decode tok/s'] or 0:.0f} tok/s, "
                      f"TTFT {row['TTFT (s)'] or 0:.3f} s", flush=True)
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Median per prompt size: what people compare."""
    g = runs.groupby("target prompt")
    return pd.DataFrame({"prompt tokens": g["prompt tokens"].median(),
                         "prefill tok/s": g["prefill tok/s"].median().round(1),
                         "decode tok/s": g["decode tok/s"].median().round(1),
                         "TTFT (s)": g["TTFT (s)"].median().round(4),
                         "runs": g.size()}).reset_index()


def figure(runs: pd.DataFrame) -> matplotlib.figure.Figure:
    s = summary(runs)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, col in zip(axes, ("prefill tok/s", "decode tok/s", "TTFT (s)")):
        ax.plot(runs["prompt tokens"], runs[col], "o", alpha=0.4, label="runs")
        ax.plot(s["prompt tokens"], s[col], "-", label="median")
        ax.set_xlabel("prompt tokens")
        ax.set_title(col)
        ax.set_xscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def headline(runs: pd.DataFrame) -> dict[str, float]:
    return {"decode_tps": float(statistics.median(runs["decode tok/s"].dropna())),
            "prefill_tps": float(statistics.median(runs["prefill tok/s"].dropna())),
            "ttft_s": float(statistics.median(runs["TTFT (s)"].dropna()))}


def run(base_url: str = "", api_key: str = "", prompt_tokens: list[int] | None = None, gen_tokens: int = 128,
        repeats: int = 3) -> pd.DataFrame:
    """Runbook 06, measurements: prefill/decode/TTFT at each prompt size."""
    from .verify import open_client, served_model
    with open_client(base_url, api_key) as c:
        return measure(c, served_model(c), prompt_tokens or [256, 1024, 4096], gen_tokens, repeats)
