"""The bridge benchmark at a DGX Spark's decode speed: does LiteLLM slow decode when tokens come at ~50/s?

The tiny embedded model decodes hundreds of tokens a second in bursts, faster than LiteLLM can stream
chunks (a few hundred a second on a 2-core box), so on it the bridge's decode ratio measures LiteLLM's
ceiling, not what a Spark user sees. Here a pacing forwarder sits in front of llama.cpp and releases
the streamed tokens at a fixed rate (default 50 tok/s, ~20 ms a token: gpt-oss-120b's decode on a
DGX Spark), and BOTH paths go through it:

    direct:   bench client ──────────────────────► pacer ──► llama.cpp (tiny model)
    bridged:  bench client ──► LiteLLM (bridge) ──► pacer ──► llama.cpp

so the engine both sides see is the same 50 tok/s engine, and `sparkkit.bridge.bench` then reports
what the bridge adds: p50 added latency to the first token, and the decode ratio.

    .venv/bin/python tools/bridge_bench/paced.py                  # paced at 50 tok/s, 3 runs × 8 pairs
    .venv/bin/python tools/bridge_bench/paced.py --rate 0         # unpaced: the tiny model straight
    .venv/bin/python tools/bridge_bench/paced.py --max-tokens 128 --runs 5

The pacer: an event of a streamed response that carries generated text (an OpenAI chunk with a
content / reasoning_content / tool_calls delta; an Anthropic `content_block_delta`) leaves no sooner
than 1/rate after the previous such event; other events (role, block starts/stops, usage, [DONE])
follow at once. The first token leaves as soon as llama.cpp has it (prefill stays the engine's own).
A non-streamed response is held for (completion tokens − 1)/rate and that hold is added to llama.cpp's
`timings.predicted_ms`, so the bench's "overhead net of server time" still nets it out.

It starts the embedded llama.cpp (the tiny model, as tests/test_bridge.py does) and the bridge with
sparkkit's own `bridge.start` (the config in src/sparkkit/bridge.py) in a scratch SPARKKIT_HOME, and
stops both at the end. Needs the bridge venv (SPARKKIT_BRIDGE_VENV, default .sparkkit/bridge-venv).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def _carries_token(route: str, data: str) -> bool:
    """Does this SSE `data:` payload carry generated text (one decode step)?"""
    try:
        ev = json.loads(data)
    except ValueError:
        return False
    if route == "anthropic":
        return ev.get("type") == "content_block_delta"
    return any((ch.get("delta") or {}).get(k) for ch in ev.get("choices") or []
               for k in ("content", "reasoning_content", "tool_calls"))


class Pacer:
    """A forwarder in front of an OpenAI/Anthropic engine that releases streamed tokens at `rate` a
    second (0: no pacing, a plain forwarder). HTTP/1.0: each response ends when its connection closes,
    for direct and bridged clients alike."""

    def __init__(self, upstream: str, rate: float):
        self.upstream, self.rate = upstream.rstrip("/"), rate
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.late: list[float] = []          # how far behind schedule a token left (ms): the pacer's own lag
        pacer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "authorization", "x-api-key", "anthropic-version")}
                route = "anthropic" if self.path.startswith("/v1/messages") else "openai"
                with httpx.stream(self.command, pacer.upstream + self.path, content=body, headers=headers,
                                  timeout=900) as r:
                    ctype = r.headers.get("content-type", "application/json")
                    self.send_response(r.status_code)
                    self.send_header("Content-Type", ctype)
                    if "text/event-stream" in ctype:
                        self.send_header("Cache-Control", "no-cache")
                        self.end_headers()
                        pacer._stream(r, self.wfile, route)
                    else:
                        data = r.read()
                        data = pacer._hold(data) if r.status_code == 200 and self.command == "POST" else data
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _stream(self, r: httpx.Response, out, route: str) -> None:
        """Forward SSE events (blank-line separated), holding each token-carrying one to the schedule."""
        due = None                                  # when the next token may leave
        event: list[str] = []
        for line in r.iter_lines():
            if line:
                event.append(line)
                continue
            if not event:
                continue
            data = next((ln[5:].strip() for ln in event if ln.startswith("data:")), "")
            if self.interval and _carries_token(route, data):
                now = time.perf_counter()
                if due is None:
                    due = now                        # the first token: as soon as the engine has it
                elif now < due:
                    time.sleep(due - now)
                else:
                    self.late.append((now - due) * 1e3)
                due = max(due, now) + self.interval
            out.write(("\n".join(event) + "\n\n").encode())
            out.flush()
            event = []
        if event:
            out.write(("\n".join(event) + "\n\n").encode())
            out.flush()

    def _hold(self, data: bytes) -> bytes:
        """A non-streamed answer: held as long as its tokens would take at `rate`, the hold added to
        llama.cpp's own decode timing."""
        if not self.interval:
            return data
        try:
            d = json.loads(data)
        except ValueError:
            return data
        usage = d.get("usage") or {}
        n = usage.get("completion_tokens", usage.get("output_tokens")) or 0
        hold = max(n - 1, 0) * self.interval
        time.sleep(hold)
        if isinstance(d.get("timings"), dict) and d["timings"].get("predicted_ms") is not None:
            d["timings"]["predicted_ms"] += hold * 1e3
            d["timings"]["predicted_per_second"] = n / (d["timings"]["predicted_ms"] / 1e3) if n else None
        return json.dumps(d).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


KEYS = ("p50 added latency (ms)", "p50 added total (ms)", "p50 proxy overhead net of server time (ms)",
        "direct decode tok/s", "bridged decode tok/s", "decode ratio", "end-to-end tok/s ratio", "same output")


def table(summaries: list[dict]) -> str:
    """Median [min–max] over runs, per route, of each run's p50s and ratios."""
    lines = [f"| route | {' | '.join(KEYS)} |", "|---|" + "---|" * len(KEYS)]
    for route in summaries[0]:
        cells = []
        for k in KEYS:
            xs = [s[route].get(k) for s in summaries]
            if k == "same output":
                cells.append(f"{sum(bool(x) for x in xs)}/{len(xs)}")
                continue
            xs = [float(x) for x in xs if x is not None and x == x]
            cells.append(f"{statistics.median(xs):.3g} [{min(xs):.3g}–{max(xs):.3g}]" if xs else "—")
        lines.append(f"| {route} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=50.0, help="tokens/s the pacer releases (0: no pacer at all)")
    ap.add_argument("--runs", type=int, default=3, help="bench runs (each: `--pairs` pairs per route)")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    os.environ["SPARKKIT_HOME"] = str(home)
    os.environ.setdefault("SPARKKIT_BRIDGE_VENV", str(REPO / ".sparkkit" / "bridge-venv"))
    from sparkkit import bridge, serve
    from sparkkit.download import place_embedded
    from sparkkit.engines.launch import Launch

    model = place_embedded(home / "models").path
    launch = Launch(model=model, alias="gpt-oss-120b", context=131072, port=serve.free_port(), threads=args.threads)
    started = serve.start(launch, {"kind": "embedded"})
    pacer = Pacer(started.base_url, args.rate) if args.rate > 0 else None
    engine = pacer.url if pacer else started.base_url
    try:
        up = bridge.start(engine, launch.alias, port=serve.free_port(), out=None)
        summaries = []
        for i in range(args.runs):
            _, s = bridge.bench(engine, up["base_url"], launch.alias, requests=args.pairs, max_tokens=args.max_tokens)
            summaries.append(s)
            print(f"run {i + 1}/{args.runs}:\n{bridge.summary_table(s).to_string()}\n", flush=True)
        what = f"paced at {args.rate:g} tok/s (pacer in front of llama.cpp on both paths)" if pacer else \
            "unpaced (tiny model, llama.cpp direct vs bridge)"
        print(f"## {what}: median [min–max] over {args.runs} runs × {args.pairs} pairs, max_tokens "
              f"{args.max_tokens}\n")
        print(table(summaries))
        if pacer and pacer.late:
            print(f"\npacer: {len(pacer.late)} tokens left behind schedule (engine slower than {args.rate:g} tok/s "
                  f"at that moment), median {statistics.median(pacer.late):.1f} ms late")
    finally:
        bridge.stop()
        if pacer:
            pacer.close()
        serve.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
