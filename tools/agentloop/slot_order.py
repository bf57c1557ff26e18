"""Does main's short turn wait for another slot's cold prefill? The race in Claude Code's agent loop, made
deterministic: the main conversation's next turn (its prompt cached but for a short tail) reaches the server a
moment before a new subagent's cold first request, so llama.cpp's LRU gives main the higher slot id — the case
where llama.cpp b11549 fills each batch with the subagent's prompt first (ggml-org/llama.cpp#6607).

    .venv/bin/python tools/agentloop/slot_order.py --binary /path/llama-server [--binary /path/patched …]

For each server (a fresh one each, 4 slots in one pool as 02 plans, the embedded model): a cold main turn,
then main's next turn and — 0.2 s later — the subagent's first request; prints main's time to first byte
alone (the same next turn on an idle server) and beside the subagent, and the ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def words(n: int, seed: int) -> str:
    from sparkkit.tinymodel import common_words
    vocab = common_words()
    return " ".join(vocab[(i * 7919 + seed * 104729) % len(vocab)] for i in range(n))


def first_byte(base: str, body: dict, out: dict, key: str, tokens: dict | None = None) -> None:
    t0 = time.monotonic()
    started = False
    with httpx.stream("POST", base + "/v1/messages", json={**body, "stream": True}, timeout=600) as r:
        for line in r.iter_lines():          # the first event, not the first byte: llama.cpp pings while it prefills
            if line.startswith("event: message_start"):
                out.setdefault(key, time.monotonic() - t0)
                started = True
            elif started and line.startswith("data:") and tokens is not None:
                usage = json.loads(line[5:]).get("message", {}).get("usage", {})
                tokens[key] = usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0), \
                    usage.get("cache_read_input_tokens", 0)
                started = False


def one(binary: str, home: Path, n_main: int, n_sub: int, threads: int = 2) -> dict:
    from sparkkit import serve
    from sparkkit.download import place_embedded
    from sparkkit.engines.launch import Launch
    os.environ["SPARKKIT_HOME"] = str(home)
    model = place_embedded(home / "models").path
    launch = Launch(model=str(model), alias="m", context=131072, slots=4, port=serve.free_port(), threads=threads)
    started = serve.start(launch, {"kind": "binary", "path": binary} if binary else {"kind": "embedded"})
    base = started.base_url
    main_sys, sub_sys = words(n_main, 1), words(n_sub, 2)
    turn1 = {"model": "m", "max_tokens": 8, "system": main_sys, "messages": [{"role": "user", "content": "go on"}]}
    turn2 = {**turn1, "messages": turn1["messages"] + [{"role": "assistant", "content": "done"},
                                                       {"role": "user", "content": words(600, 3)}]}
    sub = {"model": "m", "max_tokens": 8, "system": sub_sys, "messages": [{"role": "user", "content": "look"}]}
    got: dict = {}
    tokens: dict = {}
    try:
        first_byte(base, turn1, got, "main cold", tokens)
        first_byte(base, turn2, got, "main next turn, alone")        # its tail cached from now on, as a real turn
        turn3 = {**turn2, "messages": turn2["messages"] + [{"role": "assistant", "content": "ok"},
                                                           {"role": "user", "content": words(600, 4)}]}
        a = threading.Thread(target=first_byte, args=(base, turn3, got, "main next turn, beside a cold subagent"))
        b = threading.Thread(target=first_byte, args=(base, sub, got, "subagent cold"))
        a.start()
        time.sleep(0.2)
        b.start()
        a.join()
        b.join()
    finally:
        serve.stop()
    # one server step: a full prompt batch, timed on main's cold prefill (it ran alone). llama.cpp computes the
    # last n_ubatch + 4 tokens as two batches of their own (so a context checkpoint can be taken before them)
    prompt, cached = tokens["main cold"]
    tail = launch.ubatch + 4
    got["one server step"] = got["main cold"] / (math.ceil(max(prompt - cached - tail, 0) / launch.batch) + 2)
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", action="append", default=[], help="a llama-server (repeat); none: the embedded one")
    ap.add_argument("--main-words", type=int, default=9000)
    ap.add_argument("--sub-words", type=int, default=6000)
    ap.add_argument("--threads", type=int, default=2, help="compute threads (1 leaves a core for HTTP work here)")
    args = ap.parse_args()
    for binary in args.binary or [""]:
        with tempfile.TemporaryDirectory(prefix="slot-order-") as home:
            got = one(binary, Path(home), args.main_words, args.sub_words, args.threads)
        alone, beside = got["main next turn, alone"], got["main next turn, beside a cold subagent"]
        print(f"{binary or 'embedded'}: " + ", ".join(f"{k} {v:.2f} s" for k, v in got.items())
              + f" — main's next turn beside the subagent / alone = {beside / alone:.2f}; main waited "
              f"{beside - alone:.2f} s = {(beside - alone) / got['one server step']:.2f} server steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
