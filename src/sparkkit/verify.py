"""Check a running server the way a coding agent uses it (runbook 06, first half).

Probes over HTTP: a chat completion, the guide's own smoke test (a Python function for the nth
Fibonacci number: the answer must be code that parses and defines a function), a streamed chat, a
tool-call round trip (the model asks to `Read` a probe file, we return the file, it answers), an
Anthropic `/v1/messages` request as Claude Code sends it, count_tokens, and a call to an undeclared
tool. Each probe reports ok/failed with the evidence, so a failure says what the server answered.
"""
from __future__ import annotations

import ast
import json
import re
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import pandas as pd

READ_TOOL = {"type": "function", "function": {
    "name": "Read", "description": "Read a file from the local filesystem.",
    "parameters": {"type": "object", "properties": {"file_path": {"type": "string",
                                                                  "description": "absolute path"}},
                   "required": ["file_path"]}}}


@dataclass
class Probe:
    name: str
    ok: bool
    seconds: float
    detail: str
    absent: bool = False      # the endpoint does not exist on this server (404): a fact, not a failure
    found: bool = False       # a fault class this server has, which the wiring handles (shown, not failed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def client(base_url: str, api_key: str | None = None, timeout: float = 600.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # No keep-alive: llama.cpp may close a connection right after a streamed reply, and a
    # pooled connection reused in that instant fails with "Server disconnected" (seen in CI).
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                        limits=httpx.Limits(max_keepalive_connections=0))


def served_model(c: httpx.Client, expected: str | None = None) -> str:
    """The model the server serves: `expected` (05's served name) when the server lists it — an Ollama
    lists every model it has — else the first it lists."""
    r = c.get("/v1/models")
    r.raise_for_status()
    ids = [m["id"] for m in r.json()["data"]]
    for name in (expected, f"{expected}:latest") if expected else ():
        if name in ids:
            return name
    return ids[0]


class Absent(Exception):
    """The server answered 404 for the endpoint itself."""


class Found(Exception):
    """The probe provoked a fault class the wiring is set up for (07's settings handle it)."""


def _timed(name: str, fn: Callable[[], tuple[bool, str]]) -> Probe:
    t0 = time.monotonic()
    absent = False
    try:
        ok, detail = fn()
    except Absent as e:
        ok, detail, absent = False, str(e), True
    except Found as e:
        return Probe(name, True, round(time.monotonic() - t0, 3), str(e)[:400], found=True)
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as e:
        ok, detail = False, f"{type(e).__name__}: {e}"
    return Probe(name, ok, round(time.monotonic() - t0, 3), detail[:300], absent)


def _post(c: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(path, json=body)
    if r.status_code != 200:
        raise ValueError(f"HTTP {r.status_code} from {path}: {r.text[:200]}")
    return r.json()


def chat(c: httpx.Client, model: str) -> tuple[bool, str]:
    d = _post(c, "/v1/chat/completions", {"model": model, "max_tokens": 256,
                                          "messages": [{"role": "user", "content": "Say hello in one sentence."}]})
    ch = d["choices"][0]
    text = ch["message"].get("content") or ""
    return bool(text.strip()) and ch["finish_reason"] == "stop", f"finish={ch['finish_reason']} content={text!r}"


GUIDE_PROMPT = "Write a Python function that returns the nth Fibonacci number."   # spark-guide §7, verbatim
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def python_functions(text: str) -> tuple[list[str], str]:
    """(function names, what was parsed) of the Python in an answer: its fenced blocks, else the whole text.
    No function (or nothing that parses) gives [] and why."""
    blocks = _FENCE.findall(text) or [text]
    why = "no code in the answer"
    for block in blocks:
        try:
            tree = ast.parse(textwrap.dedent(block))
        except SyntaxError as e:
            why = f"its code does not parse ({e.msg}, line {e.lineno})"
            continue
        names = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if names:
            return names, f"{len(block.strip().splitlines())} lines of Python that parse"
        why = "its code defines no function"
    return [], why


def code_answer(c: httpx.Client, model: str) -> tuple[bool, str]:
    """The guide's smoke test ("a coherent code response"), checked: the answer is Python that parses and
    defines a function. 2,048 tokens, not the guide's 256: gpt-oss reasons first, and at 256 a long reasoning
    leaves the answer cut."""
    d = _post(c, "/v1/chat/completions", {"model": model, "max_tokens": 2048,
                                          "messages": [{"role": "user", "content": GUIDE_PROMPT}]})
    ch = d["choices"][0]
    text = ch["message"].get("content") or ""
    names, what = python_functions(text)
    if ch["finish_reason"] != "stop":
        return False, f"the answer was cut (finish={ch['finish_reason']}): {text[-120:]!r}"
    if not names:
        return False, f"not a code answer: {what}: {text[:160]!r}"
    return True, f"{what}, defining {', '.join(n + '()' for n in names)}"


def chat_stream(c: httpx.Client, model: str) -> tuple[bool, str]:
    parts, finish, chunks = [], None, 0
    body = {"model": model, "max_tokens": 256, "stream": True,
            "messages": [{"role": "user", "content": "Say hello in one sentence."}]}
    with c.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise ValueError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise ValueError(f"error event: {ev['error']}")
            for choice in ev.get("choices", []):
                chunks += 1
                parts.append(choice.get("delta", {}).get("content") or "")
                finish = choice.get("finish_reason") or finish
    text = "".join(parts)
    return bool(text.strip()) and finish == "stop" and chunks > 1, f"{chunks} chunks, finish={finish}, text={text!r}"


def tool_round_trip(c: httpx.Client, model: str, probe: Path) -> tuple[bool, str]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"Use the Read tool to read {probe}, "
                                                                  "then tell me in one sentence what it says."}]
    d = _post(c, "/v1/chat/completions", {"model": model, "max_tokens": 1024, "tools": [READ_TOOL],
                                          "messages": messages})
    msg, finish = d["choices"][0]["message"], d["choices"][0]["finish_reason"]
    calls = msg.get("tool_calls") or []
    if finish != "tool_calls" or not calls or calls[0]["function"]["name"] != "Read":
        return False, f"expected a Read tool call, got finish={finish} message={json.dumps(msg)[:200]}"
    args = json.loads(calls[0]["function"]["arguments"])
    if Path(args.get("file_path", "")) != probe:
        return False, f"Read called with {args}, expected file_path {probe}"
    # Only ever the probe file: a check must not read whatever path a model names.
    result = probe.read_text(encoding="utf-8")
    assistant = {"role": "assistant", "content": msg.get("content") or "", "tool_calls": calls}
    if msg.get("reasoning_content"):   # gpt-oss needs its reasoning back on tool-call turns
        assistant["reasoning_content"] = msg["reasoning_content"]
    messages += [assistant, {"role": "tool", "tool_call_id": calls[0].get("id", "call_0"), "content": result}]
    d = _post(c, "/v1/chat/completions", {"model": model, "max_tokens": 1024, "tools": [READ_TOOL],
                                          "messages": messages})
    ch = d["choices"][0]
    text = ch["message"].get("content") or ""
    return (ch["finish_reason"] == "stop" and bool(text.strip()),
            f"Read({args['file_path']}) → {len(result)} bytes → finish={ch['finish_reason']} answer={text!r}")


def _anthropic_error(r: httpx.Response) -> bool:
    """An Anthropic-shaped error body ({"type": "error", …}): the endpoint exists and refused the request."""
    try:
        return r.json().get("type") == "error"
    except (ValueError, AttributeError):
        return False


def anthropic_messages(c: httpx.Client, model: str) -> tuple[bool, str]:
    r = c.post("/v1/messages", json={"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    if r.status_code in (404, 405) and not _anthropic_error(r):   # the route itself is missing
        raise Absent(f"no /v1/messages here (HTTP {r.status_code} {r.text[:80]!r}): this engine version has no "
                     "Anthropic API — 07 puts the LiteLLM bridge in front")
    # The served name, as Claude Code sends it (07 sets ANTHROPIC_MODEL and the DEFAULT_*_MODEL names to it):
    # vLLM answers 404 for a name it does not serve (llama.cpp takes any).
    d = _post(c, "/v1/messages", {"model": model, "max_tokens": 256, "system": "Be brief.",
                                  "messages": [{"role": "user", "content": "Say hello."}]})
    texts = [b.get("text", "") for b in d.get("content", []) if b.get("type") == "text"]
    kinds = [b.get("type") for b in d.get("content", [])]
    ok = d.get("type") == "message" and d.get("stop_reason") == "end_turn" and any(t.strip() for t in texts)
    return ok, f"blocks={kinds} stop_reason={d.get('stop_reason')} text={' '.join(texts)!r}"


def count_tokens(c: httpx.Client, model: str) -> tuple[bool, str]:
    """Claude Code's `/context` asks /v1/messages/count_tokens (one request per system-prompt section and tool);
    the endpoint is optional: where it is absent Claude Code estimates locally (claude-code.md §4)."""
    body = {"model": model, "system": "Be brief.", "messages": [{"role": "user", "content": "Say hello in one sentence."}],
            "tools": [{"name": "Read", "description": READ_TOOL["function"]["description"],
                       "input_schema": READ_TOOL["function"]["parameters"]}]}
    r = c.post("/v1/messages/count_tokens", json=body)
    if r.status_code in (404, 405) and not _anthropic_error(r):
        raise Absent(f"no /v1/messages/count_tokens here (HTTP {r.status_code}): Claude Code's /context will show "
                     "its own local estimate, not the server's count")
    if r.status_code != 200:
        raise ValueError(f"HTTP {r.status_code} from /v1/messages/count_tokens: {r.text[:200]}")
    n = r.json().get("input_tokens")
    ok = isinstance(n, int) and n > 0
    return ok, f"input_tokens={n}: Claude Code's /context will show the server's own count"


NOOP_TOOL = {"type": "function", "function": {"name": "sparkkit_noop", "description": "Does nothing.",
                                             "parameters": {"type": "object", "properties": {}}}}


def undeclared_tool(c: httpx.Client, model: str, probe: Path) -> tuple[bool, str]:
    """The 500 storm's cause: a model that calls a tool the request did not declare. llama.cpp constrains tool
    calls with a grammar of the declared names and answers HTTP 500 ("Unexpected empty grammar stack …") when
    the model's call breaks it; Claude Code retries a 500 (10 times over ~150 s by default). The request
    declares one no-op tool and asks for Read."""
    from .claude import MAX_RETRIES
    r = c.post("/v1/chat/completions", json={
        "model": model, "max_tokens": 1024, "tools": [NOOP_TOOL],
        "messages": [{"role": "user", "content": f"Use the Read tool to read {probe}."}]})
    if r.status_code >= 500:
        raise Found(f"found: HTTP {r.status_code} when the model calls a tool the request did not declare "
                    f"({r.text[:120]!r}); 07 sets CLAUDE_CODE_MAX_RETRIES={MAX_RETRIES}, so Claude Code stops in "
                    "~3 s with 'API Error: 500' instead of retrying for ~150 s")
    if r.status_code != 200:
        return True, (f"HTTP {r.status_code} for a call to an undeclared tool: Claude Code does not retry a 4xx, "
                      "it stops at once")
    msg = r.json()["choices"][0]["message"]
    names = [t["function"]["name"] for t in msg.get("tool_calls") or []]
    if any(n != "sparkkit_noop" for n in names):
        return True, f"the server passes a call to an undeclared tool through ({names}): Claude Code answers it " \
                     "with an error result and the turn goes on"
    return True, ("not provoked: the model kept to the declared tools" + (f" (called {names})" if names else "")
                  + "; the fault stays possible on a server that answers it with HTTP 500")


def verify(c: httpx.Client, probe: Path, expected: str | None = None) -> list[Probe]:
    model = served_model(c, expected)
    return [_timed("chat completion", lambda: chat(c, model)),
            _timed("the guide's smoke test (Fibonacci code)", lambda: code_answer(c, model)),
            _timed("streamed chat", lambda: chat_stream(c, model)),
            _timed("tool-call round trip (Read)", lambda: tool_round_trip(c, model, probe)),
            _timed("Anthropic /v1/messages", lambda: anthropic_messages(c, model)),
            _timed("count_tokens (/context)", lambda: count_tokens(c, model)),
            _timed("call to an undeclared tool (500 storm)", lambda: undeclared_tool(c, model, probe))]


def table(probes: list[Probe]) -> pd.DataFrame:
    """Each probe's detail whole (what was sent and found), not cut at pandas' 50 characters."""
    from .tables import WholeTable
    return WholeTable([{"probe": p.name, "ok": "➖ absent" if p.absent else "⚠️ found" if p.found else
                          "✅" if p.ok else "❌",
                          "seconds": p.seconds, "detail": p.detail} for p in probes])


def open_client(base_url: str = "", api_key: str = "", api_key_file: str = "") -> httpx.Client:
    """A client for `base_url`, or for the server 05 started (with its key) when empty — checked to
    answer first, so a wrong or dead URL is one sentence, not an httpx traceback."""
    from .errors import ParameterError
    malformed = ParameterError("base_url", base_url, "a URL such as http://127.0.0.1:8080 (scheme, host and port), "
                                                     "or empty for the server 05 started")
    if api_key_file:
        from .serve import read_key_file
        api_key = read_key_file(api_key_file)
    if base_url:
        url, key = base_url, api_key or None
    else:
        from .serve import connection
        url, key, _launch = connection(alternative="or pass -p base_url")
    try:
        httpx.get(f"{str(url).rstrip('/')}/", timeout=10.0)   # any answer will do: is anything listening?
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError):
        raise malformed from None
    except httpx.TransportError as e:
        raise ParameterError("base_url", base_url or url,
                             f"a server that answers — nothing answers there ({type(e).__name__}): start it "
                             "with 05-serve, or check the host and port") from None
    return client(url, key)


def run(base_url: str = "", api_key: str = "", api_key_file: str = "", engine: str = "") -> list[Probe]:
    """Runbook 06, checks: the four agent-like probes against the server; whether it has /v1/messages
    goes to the state's `verify` section (07 bridges a server that lacks it)."""
    from . import records
    from .serve import chosen_engine
    engine = chosen_engine(engine, "06-verify")
    server = records.load_state().get("server") or {}
    expected = None if base_url else (server.get("served_model") or (server.get("launch") or {}).get("alias"))
    with open_client(base_url, api_key, api_key_file) as c:
        probes = verify(c, records.probe_file(), expected)
        url = str(c.base_url).rstrip("/")
    messages = next(p for p in probes if p.name == "Anthropic /v1/messages")
    storm = next(p for p in probes if p.name.startswith("call to an undeclared tool"))
    records.update_state("verify", {"base_url": url, "engine": engine if not base_url else None,
                                    "messages": not messages.absent, "messages_ok": messages.ok,
                                    "undeclared_tool_500": storm.found, "at": records.now()})
    return probes


def record(probes: list[Probe], runs: pd.DataFrame) -> tuple[str, str, dict[str, Any]]:
    """Runbook 06's verdict: every probe must pass; the figures are the medians of the runs."""
    from .bench import headline, summary
    h = headline(runs)
    failed = [p.name for p in probes if not p.ok and not p.absent]
    absent = [p.name for p in probes if p.absent]
    optional = [p.name for p in probes if p.absent and p.name.startswith("count_tokens")]
    text = (f"decode {h['decode_tps']:.1f} tok/s ({h['agent_decode_tps']:.1f} as an agent), prefill "
            f"{h['prefill_tps']:.1f} tok/s, TTFT {h['ttft_s']:.3f} s (medians at depth {h['depth']}); "
            f"probes {len(probes) - len(failed) - len(absent)}/{len(probes) - len(optional)} ok")
    if failed:
        text += f"; failed: {', '.join(failed)}"
    if optional:
        text += "; no count_tokens (Claude Code's /context estimates locally)"
    found = [p for p in probes if p.found]
    if found:
        text += "; found: " + ", ".join(p.name for p in found) + " (07's settings handle it)"
    bridged = [a for a in absent if a not in optional]
    if bridged:
        text += f"; absent: {', '.join(bridged)} (07 bridges it with LiteLLM)"
    return ("fail" if failed else "warn" if bridged else "pass", text,
            {"probes": [p.to_dict() for p in probes], "bench": runs.to_dict(orient="records"),
             "summary": summary(runs).to_dict(orient="records"), **h})
