"""Measure prefill, decode and time to first token the way llama-bench does (runbook 06, second half).

The tests are llama-bench's, so the numbers compare with published ones: `ppN @ dD` processes N new
prompt tokens and `tgM @ dD` generates M tokens, each with D tokens already in the context. A coding
agent reaches depth the same way: its earlier turns sit in the server's prompt cache. So each depth
starts with a *context* request of D tokens (timed too: that is a cold prompt's time to first
token), and the tests then extend that same conversation: the engine reports how many tokens it
took from its cache (`timings.cache_n`), which is recorded as the depth actually reached.

Speeds come from the engine's own `timings` (llama.cpp's prompt_per_second and
predicted_per_second) so HTTP and client overheads don't blur them; time to first token is
measured here, on streamed requests, because that is what a user waits for. Engines without
`timings` fall back to client-side figures, flagged in the `source` column.

Decode is measured twice. `tgM` asks for greedy top-1 sampling and no streaming, the closest a
client gets to llama-bench; `tgM … as an agent` streams with the server's default sampler chain, as
Claude Code's requests do (they set no sampling parameters). On the H100 the two agreed: what keeps
both ~1 ms a token behind llama-bench is llama-server handling every logit of the ~200k-token
vocabulary each token, whatever the sampler. Prefill carries llama.cpp's sliding-window checkpoints
near the end of every prompt (extra small batches), which is what lets an agent's next turn reuse
the cache. records/gpu-standin/NOTES.md has both measured against llama-bench.
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

from .errors import ParameterError, check_int

WORDS_PER_CALIBRATION = 400


def _words(n: int, start: int = 0) -> str:
    return " ".join(f"w{(start + i) % 97}" for i in range(n))


def tokens_per_word(c: httpx.Client) -> float:
    """How many tokens one filler word costs, from the server's /tokenize when it has one."""
    try:
        r = c.post("/tokenize", json={"content": " " + _words(WORDS_PER_CALIBRATION)})
        if r.status_code == 200:
            return max(len(r.json()["tokens"]) / WORDS_PER_CALIBRATION, 1e-3)
    except (httpx.HTTPError, ValueError, KeyError):
        pass
    return 1.0


def filler(tokens: int, per_word: float, start: int = 0) -> str:
    """About `tokens` tokens of filler text, rather under than over."""
    return _words(max(1, int(tokens / per_word)), start)


# Greedy, and only the top token kept before it: the cheapest sampling the OpenAI-style API can ask
# for, so the decode figure is the engine's (llama-bench samples nothing).
ENGINE_SAMPLING = {"temperature": 0, "top_k": 1}
PP_MARGIN = 3


def one_run(c: httpx.Client, model: str, prompt: str, gen_tokens: int, stream: bool = True,
            sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """One chat request; the engine's timings where it reports them, else the client's clock (which
    needs `stream` to tell prefill from decode)."""
    body = {"model": model, "max_tokens": gen_tokens, "stream": stream, "ignore_eos": True, "cache_prompt": True,
            "messages": [{"role": "user", "content": prompt}], **(sampling or {})}
    if stream:
        body["stream_options"] = {"include_usage": True}
    t0 = time.perf_counter()
    ttft = None
    timings: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    if not stream:
        r = c.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            raise httpx.HTTPStatusError(f"HTTP {r.status_code}: {r.text[:200]!r}", request=r.request, response=r)
        data = r.json()
        timings, usage = data.get("timings") or {}, data.get("usage") or {}
        return _row(timings, usage, None, time.perf_counter() - t0)
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
    return _row(timings, usage, ttft, time.perf_counter() - t0)


def _row(timings: dict[str, Any], usage: dict[str, Any], ttft: float | None, total: float) -> dict[str, Any]:
    ttft = ttft or total      # unstreamed, or a 1-token reply that streams no text: the whole wait
    if timings.get("prompt_per_second") is not None:
        return {"prompt tokens": timings.get("prompt_n"), "cached": timings.get("cache_n"),
                "generated": timings.get("predicted_n"), "prefill tok/s": timings.get("prompt_per_second"),
                "decode tok/s": timings.get("predicted_per_second") if (timings.get("predicted_n") or 0) > 1
                else None, "TTFT (s)": ttft, "total (s)": total, "source": "engine timings"}
    gen = usage.get("completion_tokens") or 0
    return {"prompt tokens": usage.get("prompt_tokens"), "cached": None, "generated": gen,
            "prefill tok/s": (usage.get("prompt_tokens") or 0) / ttft if ttft else None,
            "decode tok/s": (gen - 1) / (total - ttft) if gen > 1 and total > ttft else None,
            "TTFT (s)": ttft, "total (s)": total, "source": "client clock"}


def has_timings(row: dict[str, Any]) -> bool:
    return row["source"] == "engine timings"


def _depth_list(depths: Any) -> list[int]:
    """`depths` as papermill may hand it over: a list, one number (-p depths 8192), "0,8192" or "[0, 8192]"."""
    if depths is None:
        return [0]
    if isinstance(depths, int):
        return [depths]
    if isinstance(depths, str):
        try:
            return [int(x) for x in depths.replace(" ", "").strip("[]").split(",") if x]
        except ValueError:
            raise ParameterError("depths", depths, "context depths in tokens, e.g. -y 'depths: [0, 8192]' "
                                 "or -p depths 0,8192") from None
    return list(depths)


def measure(c: httpx.Client, model: str, pp_tokens: int = 2048, tg_tokens: int = 32,
            depths: list[int] | None = None, repeats: int = 3, progress: bool = True) -> pd.DataFrame:
    """One row per request: the context fill of each depth, then tgM and ppN at that depth."""
    depths = _depth_list(depths)
    check_int("pp_tokens", pp_tokens, 1, 1 << 20)
    check_int("tg_tokens", tg_tokens, 2, 32768)   # decode speed needs two tokens or more
    check_int("repeats", repeats, 1, 100)
    if not depths:
        raise ParameterError("depths", depths, "a list of context depths in tokens, e.g. [0, 8192]")
    for d in depths:
        check_int("depths", d, 0, 1 << 22)
    per_word = tokens_per_word(c)
    rows: list[dict[str, Any]] = []
    total = repeats * sum(4 if d else 3 for d in depths)
    engine_timed: bool | None = None   # does the engine report timings? (unstreamed decode needs them)
    pp_fix: dict[int, int] = {}  # per depth: filler tokens to add (or take) so ppN sends ~N new tokens

    def request(prompt: str, gen: int, stream: bool = False, sampling: dict[str, Any] | None = None):
        nonlocal engine_timed
        res = one_run(c, model, prompt, gen, stream=stream or engine_timed is False, sampling=sampling)
        if engine_timed is None:
            engine_timed = has_timings(res)
            if not engine_timed and not stream:   # unstreamed and untimed: no way to split prefill from decode
                res = one_run(c, model, prompt, gen, stream=True, sampling=sampling)
        return res

    def add(test: str, kind: str, depth: int, rep: int, res: dict[str, Any]) -> None:
        rate = res["decode tok/s"] if kind.startswith("tg") else res["prefill tok/s"]
        rows.append({"test": test, "kind": kind, "depth": depth, "repeat": rep, "tok/s": rate,
                     "new prompt tokens": res["prompt tokens"], "cached": res["cached"],
                     "generated": res["generated"], "TTFT (s)": res["TTFT (s)"], "total (s)": res["total (s)"],
                     "source": res["source"]})
        if progress:
            print(f"[{len(rows)}/{total}] {test}: {rate or 0:.1f} tok/s ({res['prompt tokens']} new prompt tokens, "
                  f"{res['cached'] if res['cached'] is not None else '?'} cached), TTFT {res['TTFT (s)']:.3f} s",
                  flush=True)

    for rep in range(1, repeats + 1):
        for depth in depths:
            # A nonce first: no run reuses another's cache beyond the chat template's own header.
            context = uuid.uuid4().hex
            if depth:
                context += " " + filler(depth, per_word)
                add(f"context d{depth}", "context", depth, rep, request(context, 1))
            # tg before pp: the pp request then rolls back only tg's few tokens, which every
            # cache (sliding-window ones too) can do without re-processing the context.
            add(f"tg{tg_tokens} @ d{depth}", "tg", depth, rep,
                request(context + " go", tg_tokens, sampling=ENGINE_SAMPLING))
            add(f"tg{tg_tokens} @ d{depth} as an agent", "tg agent", depth, rep,
                request(context + " go on", tg_tokens, stream=True))
            fix = pp_fix.setdefault(depth, 0)
            res = request(context + " " + filler(pp_tokens + fix, per_word, start=50), 1)
            add(f"pp{pp_tokens} @ d{depth}", "pp", depth, rep, res)
            if res["prompt tokens"] and res["cached"] is not None:
                # Steer the next ppN to N new tokens, template tail included, never over: one token more
                # than the batch size (-b) costs llama.cpp a whole extra batch (a full weight sweep).
                # The nonce's tokens vary by a couple, hence the small margin.
                pp_fix[depth] = fix + (pp_tokens - PP_MARGIN) - res["prompt tokens"]
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Median per test, in llama-bench's terms: what people compare."""
    order = {"pp": 0, "tg": 1, "tg agent": 2, "context": 3}
    g = runs.groupby(["kind", "depth", "test"], sort=False)
    s = pd.DataFrame({"tok/s": g["tok/s"].median().round(1), "± sd": g["tok/s"].std().round(1),
                      "new prompt tokens": g["new prompt tokens"].median(), "cached": g["cached"].median(),
                      "TTFT (s)": g["TTFT (s)"].median().round(4), "runs": g.size()}).reset_index()
    s["_o"] = s["kind"].map(order)
    from .tables import WholeTable
    return WholeTable(s.sort_values(["_o", "depth"]).drop(columns=["_o", "kind"]).reset_index(drop=True))


def figure(runs: pd.DataFrame) -> matplotlib.figure.Figure:
    """Prefill and decode speed against depth, and time to first token: an agent's turn (its context already
    cached, what 06's headline quotes) and a cold prompt (the whole context new, measured at depth > 0)."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    panels = ((("pp", "prefill"),), (("tg", "engine (greedy)"), ("tg agent", "as an agent (streamed)")),
              (("tg agent", "agent turn (context cached)"), ("context", "cold prompt (all new)")))
    titles = ("prefill tok/s", "decode tok/s", "time to first token (s)")
    for ax, kinds, title in zip(axes, panels, titles):
        ax.set_title(title)
        ax.set_xlabel("depth (tokens)")
        col = "TTFT (s)" if title.startswith("time to first token") else "tok/s"
        r = runs[runs["kind"].isin([k for k, _ in kinds])]
        if r.empty:
            ax.text(0.5, 0.5, "depth 0 only", ha="center", va="center", transform=ax.transAxes)
            continue
        for kind, label in kinds:
            rk = runs[runs["kind"] == kind]
            med = rk.groupby("depth")[col].median()
            line, = ax.plot(med.index, med.values, "-", label=label)
            ax.plot(rk["depth"], rk[col], "o", alpha=0.4, color=line.get_color())
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def headline(runs: pd.DataFrame) -> dict[str, float]:
    """The figures a verdict line quotes: at the shallowest depth measured. `ttft_s` is an agent's turn's
    time to first token (streamed, its context cached: what Claude Code waits on a later turn);
    `cold_ttft_s` a whole new context's, at the shallowest depth that has one (None without depth > 0)."""
    d0 = runs["depth"].min()
    at = runs[runs["depth"] == d0]

    def med(kind: str, col: str) -> float:
        xs = at.loc[at["kind"] == kind, col].dropna()
        return float(statistics.median(xs)) if len(xs) else float("nan")
    cold = runs[(runs["kind"] == "context") & runs["TTFT (s)"].notna()]
    cold_depth = int(cold["depth"].min()) if len(cold) else None
    cold_ttft = (float(statistics.median(cold.loc[cold["depth"] == cold_depth, "TTFT (s)"]))
                 if cold_depth is not None else None)
    return {"decode_tps": med("tg", "tok/s"), "agent_decode_tps": med("tg agent", "tok/s"),
            "prefill_tps": med("pp", "tok/s"), "ttft_s": med("tg agent", "TTFT (s)"), "depth": int(d0),
            "cold_ttft_s": cold_ttft, "cold_depth": cold_depth}


def run(base_url: str = "", api_key: str = "", pp_tokens: int = 2048, tg_tokens: int = 32,
        depths: list[int] | None = None, repeats: int = 3, api_key_file: str = "") -> pd.DataFrame:
    """Runbook 06, measurements: ppN and tgM at each depth."""
    from . import records
    from .verify import open_client, served_model
    server = {} if base_url else (records.load_state().get("server") or {})
    expected = server.get("served_model") or (server.get("launch") or {}).get("alias")
    with open_client(base_url, api_key, api_key_file) as c:
        return measure(c, served_model(c, expected), pp_tokens, tg_tokens, depths, repeats)
