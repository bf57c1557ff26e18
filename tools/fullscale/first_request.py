"""What Claude Code's FIRST request in a new project costs on gpt-oss-120b under llama.cpp b11549.

Subcommands (run here unless marked "device"); REC is records/fullscale/first-request:

  bodies REC/bodies the request bodies, from Claude Code 2.1.332's captured first request with the wired
                    settings (ENABLE_TOOL_SEARCH=false: 21 tools; CLAUDE_CODE_ATTRIBUTION_HEADER=0: the
                    capture's billing-header system block dropped, as run4_attr0 shows the CLI does), with
                    the sanitised placeholders filled for two projects of one owner, max_tokens 16:
                      A.json      /home/owner/projects/alpha, "say hi"
                      A2.json     the same directory, a new session and another first prompt
                      B.json      /home/owner/projects/bravo-service, "say hi" (a second project)
  tokens REC OUT    each body as llama.cpp renders it (its Anthropic→OpenAI conversion, then the real gpt-oss
                    template: REC/rendered/<name>.real.txt, byte-identical to the server's /apply-template),
                    its count with gpt-oss's tokenizer (o200k_harmony through tiktoken, from a local
                    o200k_base.tiktoken: O200K=path), and the first token where A2 and B differ from A
                    (the same for the stand-in's compact template, counts only)
  replay URL REC/bodies OUT.jsonl NAME…   POST each body to URL/v1/messages (stream, as the CLI sends it)
                    and record usage from message_start (input_tokens = uncached, cache_read_input_tokens =
                    reused), TTFT and wall seconds (CONFIG=label names the launch setting in the rows)
  local REC OUTDIR [real|tiny [CONFIG…]]   the sequences of CONFIGS on the embedded llama.cpp (xllamacpp b11549, CPU)
                    with a tiny gpt-oss that has the 120b stand-in's vocabulary and the real (or the
                    stand-in's) template: the reuse logic at no device cost
  spark N[@C]…      the GB10 wait for N uncached tokens after C cached ones: plan.prefill_forecast summed
                    over llama.cpp's 2048-token micro-batches
Device side: first_request.sh / first_request_device.py (one call: build, generate, serve, replay).

The 120b-shaped stand-in's vocabulary is not o200k: it counts tokens differently. Its timings give the
prefill rate of the real shapes; `tokens` gives the real token count the owner's model sees.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CAPTURES = Path(os.environ.get("CAPTURES", "/work/shared/research/captures"))
PINNED_TREE = Path(os.environ.get("LLAMA_TREE", "/tmp/sd/xllamacpp-2026.10.11549/thirdparty/llama.cpp"))
REAL_TEMPLATE = PINNED_TREE / "models" / "templates" / "openai-gpt-oss-120b.jinja"

HOME = "/home/owner"
PROJECTS = {"A": (f"{HOME}/projects/alpha", "say hi"),
            "A2": (f"{HOME}/projects/alpha", "list the files in this directory"),
            "B": (f"{HOME}/projects/bravo-service", "say hi")}
SESSION = {"A": "11111111-1111-4111-8111-111111111111", "A2": "22222222-2222-4222-8222-222222222222",
           "B": "33333333-3333-4333-8333-333333333333"}
KERNEL = "6.11.0-1016-nvidia"   # a DGX OS 7 kernel string (placeholder in the capture)
DEVICE_ID = "0" * 64


def slug(cwd: str) -> str:
    """Claude Code's project folder name for a working directory (every non-alphanumeric → '-')."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


# ----------------------------------------------------------------------------------------- bodies
def make_bodies(out: Path) -> dict[str, dict]:
    cap = json.loads((CAPTURES / "run17_notoolsearch.json").read_text())
    body = cap["requests"][0]["body"]
    assert body["system"][0]["text"].startswith("x-anthropic-billing-header:")
    body = dict(body, system=body["system"][1:])          # CLAUDE_CODE_ATTRIBUTION_HEADER=0
    text = json.dumps(body, ensure_ascii=False)
    bodies = {}
    for name, (cwd, prompt) in PROJECTS.items():
        t = (text.replace("<CWD_SLUG>", slug(cwd)).replace("<CWD>", cwd).replace("<HOME>", HOME)
             .replace("<KERNEL_VERSION>", KERNEL).replace("<DEVICE_ID>", DEVICE_ID))
        assert not re.search(r"<[A-Z_]+>", t), re.findall(r"<[A-Z_]+>", t)
        b = json.loads(t)
        b["metadata"]["user_id"] = b["metadata"]["user_id"].replace(
            json.loads(b["metadata"]["user_id"])["session_id"], SESSION[name])
        user = b["messages"][0]["content"]
        assert user[-1]["text"] == "say hi"
        user[-1]["text"] = prompt
        b["max_tokens"] = 16                               # decode time negligible; usage is what we read
        bodies[name] = b
    out.mkdir(parents=True, exist_ok=True)
    for name, b in bodies.items():
        (out / f"{name}.json").write_text(json.dumps(b, ensure_ascii=False, indent=1) + "\n")
    return bodies


def load_bodies(d: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}


# ----------------------------------------------------------------------------------------- render
def to_oai(body: dict) -> tuple[list[dict], list[dict]]:
    """llama.cpp b11549's server_chat_convert_anthropic_to_oai, for the parts these bodies use: the
    system blocks joined into one system message; text-only messages' content parts joined
    (its later content-part flattening joins text parts with no separator); tools as functions."""
    msgs = []
    sysp = body.get("system")
    if sysp:
        msgs.append({"role": "system", "content": sysp if isinstance(sysp, str) else
                     "".join(b["text"] for b in sysp if b.get("type") == "text")})
    for m in body["messages"]:
        c = m["content"]
        if isinstance(c, list):
            assert all(p["type"] == "text" for p in c), "only text turns here"
            c = "".join(p["text"] for p in c)
        msgs.append({"role": m["role"], "content": c})
    tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                               "parameters": t.get("input_schema", {})}} for t in body.get("tools", [])]
    return msgs, tools


def render(body: dict, template: str, date: str = "2026-11-29") -> str:
    import jinja2
    env = jinja2.Environment(trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=False,
                             extensions=["jinja2.ext.loopcontrols"])
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": False}
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt, time.strptime(date, "%Y-%m-%d"))
    env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(RuntimeError(msg))
    msgs, tools = to_oai(body)
    return env.from_string(template).render(messages=msgs, tools=tools or None, add_generation_prompt=True)


# ----------------------------------------------------------------------------------------- tokens
def o200k_harmony():
    """gpt-oss's tokenizer (tiktoken's o200k_harmony) from a local o200k_base.tiktoken (no download)."""
    import tiktoken
    import tiktoken_ext.openai_public as op
    from tiktoken.load import load_tiktoken_bpe
    path = os.environ.get("O200K") or next(iter(sorted(Path("/tmp").glob("tmp*/o200k_*.tiktoken"))), None)
    if not path:
        raise SystemExit("set O200K to a local o200k_base.tiktoken (sha256 446a9538…)")
    op.load_tiktoken_bpe = lambda _url, expected_hash=None: load_tiktoken_bpe(str(path), expected_hash=expected_hash)
    return tiktoken.Encoding(**op.o200k_harmony())


def common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokens(d: Path, out: Path) -> dict:
    enc = o200k_harmony()
    bodies = load_bodies(d / "bodies")
    res: dict = {"tokenizer": "o200k_harmony (tiktoken, local o200k_base ranks + harmony specials)", "prompts": {}}
    toks = {}
    for tname, tpath in (("real", REAL_TEMPLATE), ("tiny", None)):
        if tpath is None:
            sys.path.insert(0, str(REPO / "src"))
            from sparkkit.tinymodel import HARMONY_TEMPLATE as tmpl
        else:
            tmpl = tpath.read_text()
        for name, b in bodies.items():
            text = render(b, tmpl)
            if tname == "real":
                (d / "rendered").mkdir(exist_ok=True)
                (d / "rendered" / f"{name}.{tname}.txt").write_text(text)
            ids = enc.encode(text, allowed_special="all")
            toks[(tname, name)] = (text, ids)
            res["prompts"][f"{name}.{tname}"] = {"chars": len(text), "o200k_tokens": len(ids)}
        for a, b in (("A", "B"), ("A", "A2")):
            ta, ia = toks[(tname, a)]
            tb, ib = toks[(tname, b)]
            n = common_prefix(ia, ib)
            c = common_prefix(list(ta), list(tb))
            res[f"{a}->{b}.{tname}"] = {
                "common_prefix_tokens": n, "of": len(ib), "reuse_pct": round(100 * n / len(ib), 2),
                "first_diff_chars": c, "context": ta[max(0, c - 80):c] + "|" + tb[c:c + 40]}
    out.write_text(json.dumps(res, indent=1) + "\n")
    return res


# ----------------------------------------------------------------------------------------- replay
def post_messages(url: str, body: dict, timeout: float = 900) -> dict:
    """POST one body (stream as the CLI sends it) and read message_start's usage, TTFT and wall time."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + "/v1/messages", data=data, method="POST", headers={
        "content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "sparkkit-local"})
    t0 = time.perf_counter()
    usage, ttft, events, err, final_usage = None, None, 0, None, None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            for raw in r:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                events += 1
                try:
                    ev = json.loads(line[5:].strip())
                except ValueError:
                    continue
                if ev.get("type") == "message_start":
                    usage = ev["message"]["usage"]
                    ttft = time.perf_counter() - t0
                elif ev.get("type") == "message_delta" and "usage" in ev:
                    final_usage = ev["usage"]
                elif ev.get("type") == "error":
                    err = ev.get("error")
    except Exception as e:   # an HTTP error still tells us what went wrong
        err = repr(e) + (": " + e.read().decode()[:500] if hasattr(e, "read") else "")
    wall = time.perf_counter() - t0
    out = {"wall_s": round(wall, 3), "ttft_s": round(ttft, 3) if ttft else None, "events": events, "error": err}
    if usage:
        cached = usage.get("cache_read_input_tokens", 0)
        total = usage["input_tokens"] + cached
        out.update(prompt_tokens=total, cached_tokens=cached, uncached_tokens=usage["input_tokens"],
                   reuse_pct=round(100 * cached / total, 2) if total else None)
    if final_usage:
        out["final_usage"] = final_usage
    return out


def tokenize_count(url: str, text: str, add_special: bool = False) -> int:
    """The server's own token count of a rendered prompt (POST /tokenize, special tokens parsed)."""
    req = urllib.request.Request(url.rstrip("/") + "/tokenize", method="POST",
                                 data=json.dumps({"content": text, "add_special": add_special, "parse_special": True}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return len(json.loads(r.read())["tokens"])


def check_rendering(url: str, d: Path, out: Path, template: str, label: str = "") -> None:
    """Our rendering (render()) tokenized by the server vs the server's own count of the same body:
    equal counts say render() is what llama.cpp builds, so its o200k count is the real model's."""
    for p in sorted((d / "rendered").glob(f"*.{template}.txt")):
        r = {"config": label, "check": "tokenize(rendered)", "body": p.name.split(".")[0], "template": template,
             "tokens": tokenize_count(url, p.read_text()),
             "tokens_add_special": tokenize_count(url, p.read_text(), add_special=True)}
        print(json.dumps(r), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(r) + "\n")


def replay(url: str, d: Path, out: Path, names: list[str], label: str = "") -> list[dict]:
    bodies = load_bodies(d)
    rows = []
    for i, name in enumerate(names, 1):
        r = {"config": label, "seq": i, "body": name, **post_messages(url, bodies[name])}
        print(json.dumps(r), flush=True)
        rows.append(r)
        with open(out, "a") as f:
            f.write(json.dumps(r) + "\n")
    return rows


# ----------------------------------------------------------------------------------------- local
SEQUENCE = ["A", "A", "A2", "B", "A"]   # cold A · same body again · new session, same dir · 2nd project · back to A
CONFIGS = {   # label → launch-setting changes from sparkkit's defaults (engines.launch.Launch)
    "default": {},
    "cache-reuse-256": {"n_cache_reuse": 256},
    "swa-full": {"swa_full": True},
    "swa-full+cache-reuse-256": {"swa_full": True, "n_cache_reuse": 256},
    "np4": {"n_parallel": 4},   # 02's plan since 0e62431: 4 slots in one pool (--kv-unified), at -c 65536
    "np4-c131072": {"n_parallel": 4, "n_ctx": 131072},   # the same at the owner's -c 131072
}


def local(d: Path, outdir: Path, template: str = "real", only: list[str] | None = None) -> None:
    """Each config on the embedded llama.cpp (xllamacpp, the pinned b11549) with a tiny gpt-oss whose
    vocabulary is the 120b stand-in's (common_words) and whose template is the real one."""
    import socket
    import subprocess
    sys.path.insert(0, str(REPO / "src"))
    from sparkkit.tinymodel import TinySpec, common_words, generate
    outdir.mkdir(parents=True, exist_ok=True)
    tmpl = REAL_TEMPLATE.read_text() if template == "real" else None
    model = outdir / f"tiny-{template}.gguf"
    if not model.exists():
        generate(model, TinySpec(vocab_words=common_words(), chat_template=tmpl, tool_name="Read",
                                 tool_args='{"file_path": "x"}'))
    results = outdir / f"local-{template}.jsonl"
    if not only:
        results.unlink(missing_ok=True)
    for label, changes in CONFIGS.items():
        if only and label not in only:
            continue
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code = f"""
import xllamacpp as x, time, sys
sys.path.insert(0, {str(REPO / 'src')!r})
from sparkkit.engines.launch import Launch
from sparkkit.engines.embedded import to_params
p = to_params(Launch(model={str(model)!r}, alias='gpt-oss-120b', port={port}, context=65536, threads=2))
for k, v in {changes!r}.items(): setattr(p, k, v)
srv = x.Server(p)
print('ready', flush=True)
time.sleep(3600)
"""
        log = open(outdir / f"local-{template}-{label}.log", "w")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except Exception:
                    time.sleep(0.5)
            replay(f"http://127.0.0.1:{port}", d / "bodies", results, SEQUENCE, label)
            if label == "default":
                check_rendering(f"http://127.0.0.1:{port}", d, results, template, label)
        finally:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------------------- spark
def spark_seconds(uncached: int, cached: int = 0, ubatch: int = 2048) -> float:
    """Seconds to prefill `uncached` tokens after `cached` on a GB10: plan.prefill_forecast (tok/s at a
    depth, for a micro-batch starting there) summed over the micro-batches llama.cpp processes."""
    sys.path.insert(0, str(REPO / "src"))
    from sparkkit.model import CATALOGUE
    from sparkkit.plan import prefill_forecast
    arch = CATALOGUE["gpt-oss-120b"].arch
    t, pos, end = 0.0, cached, cached + uncached
    while pos < end:
        n = min(ubatch, end - pos)
        t += n / prefill_forecast(arch, pos, ubatch)
        pos += n
    return t


def main(argv: list[str]) -> None:
    cmd = argv[0] if argv else ""
    if cmd == "bodies":
        for name, b in make_bodies(Path(argv[1])).items():
            print(name, len(json.dumps(b)), "bytes")
    elif cmd == "tokens":
        print(json.dumps(tokens(Path(argv[1]), Path(argv[2])), indent=1))
    elif cmd == "replay":
        replay(argv[1], Path(argv[2]), Path(argv[3]), argv[4:], os.environ.get("CONFIG", ""))
    elif cmd == "local":
        local(Path(argv[1]), Path(argv[2]), argv[3] if len(argv) > 3 else "real", argv[4:])
    elif cmd == "spark":
        for n in argv[1:]:
            u, _, c = n.partition("@")
            print(f"{u} tokens after {c or 0}: {spark_seconds(int(u), int(c or 0)):.1f} s on a GB10 (forecast)")
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
