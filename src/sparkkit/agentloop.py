"""The agent-loop benchmark (07, `-p agent_loop True`): Claude Code's own loop against the served model.

The real CLI runs a scripted set of sessions — a delegating session whose subagent starts a nested
subagent of the same kind while both run, a second session in the same project, and the delegating
session again in a new project — through `Meter`, a loopback pass-through that forwards every byte
unchanged and notes, per request, when it arrived, when the first byte came back and when it ended,
and what the engine said it reused (`usage.cache_read_input_tokens` of llama.cpp's/vLLM's
`message_start`). From those rows: each conversation (main or which subagent, from the bodies),
prompt and cached tokens, reuse %, the time queued for a slot (the engine's slot count replayed over
the arrivals) and the server time; and four goals, printed as ratios:

- every request after the first of its conversation reuses >= 95 % of its prompt;
- a subagent kind spawned again reuses >= 80 % of its first request;
- main never waits for a slot longer than one decode step;
- main never waits behind the others longer than one decode step *of the running server*. While another
  conversation prefills, every decode step is one server step (the decode tokens ride in a batch filled
  with n_batch prompt tokens), and a batch in flight cannot be interrupted; so the bound is one such step,
  measured in the run: the per-token prefill time of the line through the requests that ran alone, times
  the launch's batch, plus one decode step.

On the embedded model the session is scripted by marker words (`tool_rules`, tinymodel): the
main prompt holds SPAWN, the first agent's prompt NEST, the nested agent reads the probe file.
"""
from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import records
from .errors import ParameterError, SparkkitError

SPAWN, NEST = "zqspawn", "zqnest"     # the embedded model's markers (tinymodel tool_rules)
GOAL_LATER_REUSE = 0.95
GOAL_RESPAWN_REUSE = 0.80
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade", "te",
        "trailer"}


def agent_args(probe: Path) -> tuple[str, str]:
    """The Agent calls of the scripted session: (the first agent's, the nested agent's) arguments."""
    first = json.dumps({"description": "Delegate the probe read", "prompt": f"{NEST}: start one nested "
                        f"general-purpose agent with the Agent tool to read {probe}, then report what it said.",
                        "subagent_type": "general-purpose"})
    nested = json.dumps({"description": "Read the probe file", "prompt": f"Use the Read tool to read {probe} "
                         "and say in one sentence what it says.", "subagent_type": "general-purpose"})
    return first, nested


def tool_rules(probe: Path) -> tuple[tuple[str, str, str], ...]:
    """tinymodel rules for the embedded model: SPAWN -> Agent(first), NEST -> Agent(nested)."""
    first, nested = agent_args(probe)
    return ((SPAWN, "Agent", first), (NEST, "Agent", nested))


@dataclass(frozen=True)
class Session:
    name: str
    project: str     # directory name under the run's projects folder
    prompt: str


def script(probe: Path) -> list[Session]:
    """The scripted sessions (what a real model is asked to do, with the embedded model's markers)."""
    delegate = (f"{SPAWN}: use the Agent tool to start a general-purpose agent; it starts one nested general-purpose "
                f"agent that reads {probe} with the Read tool. Then tell me what the file says.")
    return [Session("s1-delegate", "project-a", delegate),
            Session("s2-read", "project-a", f"Use the Read tool to read {probe} and tell me in one sentence what "
                                            "it says."),
            Session("s3-new-project", "project-b", delegate)]


# ----------------------------------------------------------------------------- the meter

@dataclass
class Request:
    n: int
    method: str
    path: str
    session: str
    arrive: float
    body: dict[str, Any] = field(repr=False, default_factory=dict)
    first: float | None = None
    end: float | None = None
    status: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    error: str = ""
    _buf: bytes = field(default=b"", repr=False)
    _tail: bytes = field(default=b"", repr=False)

    def feed(self, chunk: bytes) -> None:
        # the first answer, not the first byte: llama.cpp sends SSE comment pings (": ping") while it prefills
        if self.first is None and any(ln.strip() and not ln.lstrip().startswith(b":") for ln in chunk.split(b"\n")):
            self.first = time.monotonic()
        self._tail = (self._tail + chunk)[-16384:]
        if self.prompt_tokens is None and len(self._buf) < 1 << 20:
            self._buf += chunk
            self._usage_from(self._buf)

    def _usage_from(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            line = line.strip()
            if line.startswith(b"data:"):
                line = line[5:].strip()
            if b"usage" not in line or not line.startswith(b"{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            usage = (ev.get("message") or {}).get("usage") or ev.get("usage")
            if isinstance(usage, dict) and "input_tokens" in usage:
                cached = int(usage.get("cache_read_input_tokens") or 0)
                self.prompt_tokens = int(usage["input_tokens"]) + cached
                self.cached_tokens = cached
                return

    def finish(self, status: int | None, error: str = "") -> None:
        self.end, self.status, self.error = time.monotonic(), status, error
        if self.prompt_tokens is None and self._buf:
            self._usage_from(self._buf.replace(b"\n", b" ") + b"\n")     # a non-streamed JSON answer
        if not error and b"error" in self._tail:
            # an error after a 200 (llama.cpp: "event: error" + {"code":500,"message":…}), or an error body
            named = False
            for line in self._tail.split(b"\n"):
                if line.strip() == b"event: error":
                    named = True
                    continue
                data = line.split(b"data:", 1)[-1].strip()
                try:
                    ev = json.loads(data) if data.startswith(b"{") else None
                except ValueError:
                    ev = None
                if isinstance(ev, dict) and (named or ev.get("type") == "error" or
                                             ("error" in ev and "choices" not in ev)):
                    err = ev.get("error", ev)
                    self.error = "in the stream: " + str(err.get("message") if isinstance(err, dict) else err)[:200]
                named = False
        for line in reversed(self._tail.split(b"\n")):                  # message_delta's usage: tokens made
            if b"message_delta" in line and b"output_tokens" in line:
                try:
                    self.output_tokens = int(json.loads(line.split(b"data:", 1)[-1])["usage"]["output_tokens"])
                except (ValueError, KeyError, TypeError):
                    pass
                break
        self._buf = self._tail = b""


class Meter:
    """A loopback pass-through to `upstream` that records each request (bytes forwarded unchanged)."""

    def __init__(self, upstream: str, host: str = "127.0.0.1"):
        u = urllib.parse.urlsplit(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80), u.scheme)
        self.requests: list[Request] = []
        self.session = ""
        self._lock = threading.Lock()
        meter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                meter._forward(self, "GET")

            def do_POST(self) -> None:
                meter._forward(self, "POST")

            def do_HEAD(self) -> None:
                meter._forward(self, "HEAD")

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "Meter":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _forward(self, h: http.server.BaseHTTPRequestHandler, method: str) -> None:
        n = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw and "json" in (h.headers.get("content-type") or "") else {}
        except ValueError:
            body = {}
        with self._lock:
            req = Request(len(self.requests) + 1, method, h.path, self.session, time.monotonic(),
                          body if isinstance(body, dict) else {})
            self.requests.append(req)
        host, port, scheme = self.upstream
        conn = (http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection)(host, port,
                                                                                                timeout=3600)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP | {"host"}}
        try:
            conn.request(method, h.path, body=raw or None, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            req.finish(None, f"{type(e).__name__}: {e}")
            try:
                h.send_error(502, "the served model did not answer the agent-loop meter")
            except OSError:
                pass
            return
        try:
            h.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP:
                    h.send_header(k, v)
            h.send_header("Connection", "close")
            h.end_headers()
            while chunk := resp.read1(65536) if method != "HEAD" else b"":
                req.feed(chunk)
                h.wfile.write(chunk)
                h.wfile.flush()
            req.finish(resp.status)
        except (OSError, http.client.HTTPException, ValueError) as e:   # the engine died mid-answer, or the client left
            req.finish(resp.status, f"{type(e).__name__}: {e}")
        finally:
            conn.close()


# ----------------------------------------------------------------------------- reading the requests

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _h(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:10]


def _conversation(body: dict[str, Any]) -> tuple[str, str, str]:
    """(conversation key, kind key, first user text) of a /v1/messages body."""
    system = _text(body.get("system"))
    first = next((m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"), {})
    first_text = _text(first.get("content"))
    tools = ",".join(sorted(t.get("name", "") for t in body.get("tools") or [] if isinstance(t, dict)))
    return _h(system + "\0" + first_text), _h(system + "\0" + tools), first_text


def _agent_prompts(body: dict[str, Any]) -> list[str]:
    out = []
    for m in body.get("messages") or []:
        for b in (m.get("content") if isinstance(m, dict) and isinstance(m.get("content"), list) else []):
            if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") in ("Agent", "Task"):
                p = (b.get("input") or {}).get("prompt")
                if isinstance(p, str) and p:
                    out.append(p)
    return out


def _queue(reqs: list[Request], slots: int) -> dict[int, float]:
    """Seconds each request waited for a slot: the engine's `slots` replayed over the requests in the order
    the engine served them (their first bytes: llama.cpp need not take waiting requests first come, first
    served), each starting when it arrived or when a slot freed, whichever is later."""
    started: list[tuple[float, float]] = []     # (start, end) of requests already placed
    wait: dict[int, float] = {}
    for r in sorted(reqs, key=lambda r: r.first if r.first is not None else (r.end or r.arrive)):
        end = r.end if r.end is not None else r.arrive
        earliest = max([r.arrive] + [st for st, _ in started])     # served after the ones before it
        t = earliest
        for candidate in [earliest] + sorted(e for _, e in started if e > earliest):
            busy = sum(1 for s, e in started if s <= candidate < e)
            if busy < slots:
                t = candidate
                break
        wait[r.n] = max(0.0, min(t, end) - r.arrive)
        started.append((min(t, end), end))
    return wait


def _overlaps(r: Request, reqs: list[Request]) -> bool:
    """Was another request in flight while `r` waited for its first byte?"""
    until = r.first or r.end or r.arrive
    return any(q is not r and q.arrive < until and (q.end or q.arrive) > r.arrive for q in reqs)


def own_time(reqs: list[Request]) -> tuple[float, float] | None:
    """(seconds, seconds per uncached token) to a first byte when a request runs alone: a least-squares line
    through the requests that had the engine to themselves (a fixed part — restoring a cached prompt, the first
    decode step — and a per-token part)."""
    pts = [(r.prompt_tokens - (r.cached_tokens or 0), r.first - r.arrive) for r in reqs
           if r.first and r.prompt_tokens is not None and r.first > r.arrive and not _overlaps(r, reqs)]
    if len(pts) < 2 or len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    slope = max(slope, 0.0)
    return max(my - slope * mx, 0.0), slope


def rows(reqs: list[Request], slots: int) -> list[dict[str, Any]]:
    """One row per /v1/messages request, in arrival order, with its conversation named."""
    msgs = [r for r in reqs if r.method == "POST" and r.path.split("?")[0].rstrip("/").endswith("/v1/messages")]
    if not msgs:
        return []
    t0 = min(r.arrive for r in msgs)
    wait = _queue(msgs, slots)
    alone = own_time(msgs)
    convs: dict[str, dict[str, Any]] = {}
    spawned_by: dict[tuple[str, str], str] = {}   # (session, an Agent call's prompt) -> the conversation that made it

    def conv_key(r: Request) -> tuple[str, str, str]:
        key, kind, first = _conversation(r.body)
        return r.session + "/" + key, kind, first
    for r in msgs:
        key, kind, first = conv_key(r)
        c = convs.setdefault(key, {"key": key, "kind": kind, "first": first, "session": r.session,
                                   "requests": 0, "parent": None})
        for p in _agent_prompts(r.body):
            spawned_by.setdefault((r.session, p), key)
    for c in convs.values():
        c["parent"] = next((k for (s, p), k in spawned_by.items()
                            if s == c["session"] and p in c["first"] and k != c["key"]), None)
    names: dict[str, str] = {}
    children: dict[str, int] = {}
    for c in convs.values():                   # in order of first appearance: parents come first
        parent = c["parent"]
        if parent is None or parent not in names:
            names[c["key"]] = "main"
        else:
            children[parent] = children.get(parent, 0) + 1
            base = names[parent]
            names[c["key"]] = (f"agent-{children[parent]}" if base == "main"
                               else f"{base}.{children[parent]}")
    kinds_seen: dict[str, int] = {}
    out = []
    for r in msgs:
        key, kind, _ = conv_key(r)
        c = convs[key]
        c["requests"] += 1
        turn = c["requests"]
        if turn == 1 and names[key] != "main":
            kinds_seen[kind] = kinds_seen.get(kind, 0) + 1
        reuse = (r.cached_tokens / r.prompt_tokens) if r.prompt_tokens else None
        first_ms = (r.first - r.arrive) if r.first is not None else None
        overlap = _overlaps(r, msgs)
        own = (alone[0] + alone[1] * (r.prompt_tokens - (r.cached_tokens or 0))
               if alone and r.prompt_tokens is not None else None)
        waited = (None if first_ms is None else 0.0 if not overlap else max(0.0, first_ms - own)
                  if own is not None else None)
        out.append({
            "n": r.n, "session": r.session, "conversation": names[key], "turn": turn,
            "spawn": kinds_seen.get(kind, 0) if turn == 1 and names[key] != "main" else None,
            "status": r.status, "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
            "reuse_pct": round(100 * reuse, 2) if reuse is not None else None,
            "arrive_s": round(r.arrive - t0, 3), "queued_s": round(wait[r.n], 3),
            "waited_s": round(waited, 3) if waited is not None else None,
            "overlap": overlap,
            "first_byte_s": round(first_ms, 3) if first_ms is not None else None,
            "server_s": round((r.end or r.arrive) - r.arrive - wait[r.n], 3),
            "output_tokens": r.output_tokens, "error": r.error,
        })
    return out


# ----------------------------------------------------------------------------- the goals

@dataclass
class Goal:
    name: str
    measured: float | None
    goal: float
    unit: str
    higher_is_better: bool = True
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if self.measured is None:
            return None
        if self.higher_is_better:
            return round(self.measured / self.goal, 3)
        return round(self.goal / self.measured, 3) if self.measured > 0 else float("inf")

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= 1.0


def goals(table: list[dict[str, Any]], decode_step_s: float | None,
          server_step_s: float | None = None) -> list[Goal]:
    later = [r for r in table if r["turn"] > 1 and r["reuse_pct"] is not None]
    worst = min(later, key=lambda r: r["reuse_pct"], default=None)
    respawn = [r for r in table if (r["spawn"] or 0) > 1 and r["reuse_pct"] is not None]
    worst_respawn = min(respawn, key=lambda r: r["reuse_pct"], default=None)
    main_waits = [r for r in table if r["conversation"] == "main" and r["waited_s"] is not None]
    longest = max(main_waits, key=lambda r: r["waited_s"], default=None)
    mains = [r for r in table if r["conversation"] == "main"]
    queued = max(mains, key=lambda r: r["queued_s"], default=None)
    step = decode_step_s or 0.0
    return [
        Goal("later turns reuse", worst["reuse_pct"] / 100 if worst else None, GOAL_LATER_REUSE, "fraction",
             detail=(f"lowest: request {worst['n']} ({worst['session']} {worst['conversation']} turn {worst['turn']})"
                     if worst else "no later turn was measured")),
        Goal("a subagent kind spawned again reuses", worst_respawn["reuse_pct"] / 100 if worst_respawn else None,
             GOAL_RESPAWN_REUSE, "fraction",
             detail=(f"lowest: request {worst_respawn['n']} ({worst_respawn['session']} "
                     f"{worst_respawn['conversation']})" if worst_respawn else "no kind was spawned twice")),
        Goal("main queues for a slot at most one decode step", queued["queued_s"] if queued else None,
             step, "s", higher_is_better=False,
             detail=(f"longest: request {queued['n']} ({queued['session']}) waited {queued['queued_s']:.2f} s for a "
                     f"slot (the launch's slots replayed over the requests)" if queued else "no main request")),
        Goal("main waits behind others at most one server step", longest["waited_s"] if longest else None,
             server_step_s or 0.0, "s", higher_is_better=False,
             detail=(f"longest: request {longest['n']} ({longest['session']}): first byte after "
                     f"{longest['first_byte_s']:.2f} s, {longest['waited_s']:.2f} s more than alone (a line through "
                     f"the requests that ran alone); one server step {server_step_s or 0:.2f} s (the decode step "
                     f"while another conversation prefills: one batch, which cannot be interrupted); one decode "
                     f"step alone {step * 1000:.0f} ms" if longest else "no main request")),
    ]


# ----------------------------------------------------------------------------- running it

@dataclass
class SessionRun:
    name: str
    project: str
    seconds: float
    exit_code: int | None
    turns: int | None
    tools: list[str]
    result: str
    error: str = ""
    after_fault_s: float | None = None   # from the end of the first failed request to the CLI's exit


@dataclass
class LoopReport:
    launch: dict[str, Any]
    sessions: list[SessionRun]
    requests: list[dict[str, Any]]
    goals: list[Goal]
    decode_step_s: float | None
    notes: list[str] = field(default_factory=list)
    server_step_s: float | None = None

    def table(self):
        from .tables import WholeTable
        cols = ["n", "session", "conversation", "turn", "spawn", "status", "prompt_tokens", "cached_tokens",
                "reuse_pct", "queued_s", "waited_s", "server_s", "first_byte_s", "arrive_s", "overlap", "error"]
        return WholeTable(self.requests, columns=cols)

    def sessions_table(self):
        from .tables import WholeTable
        return WholeTable([asdict(s) for s in self.sessions])

    def goals_table(self):
        from .tables import WholeTable
        return WholeTable([{"goal": g.name, "measured": g.measured, "target": g.goal, "unit": g.unit,
                              "ratio": g.ratio, "met": g.met, "detail": g.detail} for g in self.goals])

    def figure(self):
        """Timeline: one row per conversation, a bar per request (grey: waiting for a slot), reuse % on it."""
        import matplotlib.pyplot as plt
        convs = list(dict.fromkeys((r["session"], r["conversation"]) for r in self.requests))
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(convs) + 1.5))
        for y, (s, c) in enumerate(convs):
            for r in (r for r in self.requests if (r["session"], r["conversation"]) == (s, c)):
                if r["queued_s"]:
                    ax.barh(y, r["queued_s"], left=r["arrive_s"], color="0.8")
                ax.barh(y, max(r["server_s"], 0.01), left=r["arrive_s"] + r["queued_s"],
                        color="tab:green" if (r["reuse_pct"] or 0) >= 95 else "tab:orange")
                if r["reuse_pct"] is not None:
                    ax.text(r["arrive_s"] + r["queued_s"], y + 0.3, f"{r['reuse_pct']:.0f}%", fontsize=7)
        ax.set_yticks(range(len(convs)), [f"{s} {c}" for s, c in convs])
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the first request (grey: waiting for a slot; green: reuse >= 95 %)")
        ax.set_title(f"Claude Code's agent loop on {self.launch.get('alias', '?')} — slots {self.launch.get('slots')}")
        fig.tight_layout()
        return fig

    def record(self) -> tuple[str, str, dict[str, Any]]:
        met = [g.met for g in self.goals if g.met is not None]
        failed = [s for s in self.sessions if s.exit_code != 0 or s.error]
        verdict = "fail" if failed else ("pass" if met and all(met) else "warn")
        parts = [f"{g.name}: {'-' if g.ratio is None else f'{g.ratio:.2f}×'}" for g in self.goals]
        headline = (f"{len(self.requests)} requests in {len(self.sessions)} Claude Code sessions — "
                    + "; ".join(parts) + " of goal")
        if failed:
            headline += f" — {failed[0].name}: {failed[0].error or 'exit ' + str(failed[0].exit_code)}"
        results = {"launch": self.launch, "sessions": [asdict(s) for s in self.sessions], "requests": self.requests,
                   "goals": [asdict(g) | {"ratio": g.ratio, "met": g.met} for g in self.goals],
                   "decode_step_s": self.decode_step_s, "server_step_s": self.server_step_s, "notes": self.notes}
        return verdict, headline, results


def _decode_step(reqs: list[Request]) -> float | None:
    """Median seconds per generated token over requests that streamed more than a few tokens."""
    steps = []
    for r in reqs:
        if r.first and r.end and r.output_tokens and r.output_tokens > 4:
            steps.append((r.end - r.first) / (r.output_tokens - 1))
    steps.sort()
    return steps[len(steps) // 2] if steps else None


def server_step(reqs: list[Request], batch: int | None, decode_step_s: float | None) -> float | None:
    """Seconds of one server step while a prompt is being prefilled: `batch` prompt tokens at the per-token
    rate of the line through the requests that ran alone, plus one decode step (the tokens riding along)."""
    msgs = [r for r in reqs if r.method == "POST" and r.path.split("?")[0].rstrip("/").endswith("/v1/messages")]
    line = own_time(msgs)
    if line is None or not batch:
        return None
    return round(line[1] * batch + (decode_step_s or 0.0), 4)


def _check_reachable(base_url: str, key: str | None) -> None:
    import httpx
    try:
        httpx.get(base_url.rstrip("/") + "/v1/models", timeout=10,
                  headers={"Authorization": f"Bearer {key}"} if key else {})
    except httpx.HTTPError as e:
        raise SparkkitError(f"agent loop: the server at {base_url} does not answer ({type(e).__name__}); start it "
                            "with 05-serve, then run 07 again") from e


def run(sessions: list[Session] | None = None, base_url: str = "", key: str | None = None,
        launch: dict[str, Any] | None = None, claude_bin: str = "", workdir: Path | None = None,
        decode_step_s: float | None = None, timeout: float = 1800.0,
        progress: Callable[[str], None] = print) -> LoopReport:
    """Run the scripted sessions with the real CLI through a Meter in front of the served model."""
    from . import claude
    from .serve import connection

    if not base_url:
        base_url, key, launch = connection()
    launch = dict(launch or {})
    slots = int(launch.get("slots") or 1)
    if slots < 1:
        raise ParameterError("slots", slots, "1 or more (the launch's -np)")
    if launch.get("context"):
        claude.check_context(launch)          # a slot count that leaves a conversation too little: one sentence
    _check_reachable(base_url, key)
    probe = records.probe_file()
    sessions = sessions or script(probe)
    cli = claude.ensure_cli(claude_bin)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(workdir or records.home() / "agentloop" / stamp)
    home = workdir / "home"
    out: list[SessionRun] = []
    notes: list[str] = []
    with Meter(base_url) as meter:
        env = claude.settings_env(meter.base_url, launch.get("alias", "gpt-oss-120b"),
                                  claude.window(launch) or 131072, key)
        claude.write_settings(home / ".claude" / "settings.json", env)
        for s in sessions:
            project = workdir / "projects" / f"{s.project}-{stamp}"   # a new project each run: a cold first request
            project.mkdir(parents=True, exist_ok=True)
            meter.session = s.name
            before = len(meter.requests)
            progress(f"agent loop: {s.name} in {project.name} …")
            t_cli = time.monotonic()
            try:
                r = claude.ask(cli, s.prompt, home, project, timeout, add_dirs=(probe.parent,), progress=progress)
                run_ = SessionRun(s.name, project.name, round(r.seconds, 2), r.exit_code, r.turns,
                                  [t["name"] for t in r.tool_uses], r.result[:200])
                if r.exit_code != 0:
                    run_.error = _why(meter.requests[before:], r.result or r.stderr_tail, base_url)
            except SparkkitError as e:
                run_ = SessionRun(s.name, project.name, timeout, None, None, [], "", str(e))
            failed = [q for q in meter.requests[before:] if q.error or (q.status or 0) >= 500]
            if failed and failed[0].end:
                run_.after_fault_s = round(t_cli + run_.seconds - failed[0].end, 2)
            out.append(run_)
            made = [q for q in meter.requests[before:] if q.path.split("?")[0].endswith("/v1/messages")]
            progress(f"agent loop: {s.name} — {len(made)} requests, {run_.seconds:.1f} s, exit {run_.exit_code}"
                     + (f": {run_.error}" if run_.error else ""))
    reqs = list(meter.requests)
    step = decode_step_s or _decode_step(reqs)
    table = rows(reqs, slots)
    big = server_step(reqs, launch.get("batch") or 2048, step)
    if step is None:
        notes.append("no request streamed enough tokens to time one decode step; the slot goal is unmeasured")
    if big is None:
        notes.append("too few requests ran alone to time one server step; the wait goal is unmeasured")
    if not launch.get("alias"):
        notes.append("the launch is unknown: slots taken as 1")
    return LoopReport({k: launch.get(k) for k in ("alias", "slots", "context", "kv_unified", "swa_full", "cache_ram",
                                                   "ctx_checkpoints", "cache_reuse", "batch", "engine") if k in launch},
                      out, table, goals(table, step, big), step, notes, big)


def _why(reqs: list[Request], said: str, base_url: str) -> str:
    """One sentence for a session that failed: what the meter saw, else what the CLI said."""
    broken = [q for q in reqs if q.error and not q.error.startswith("in the stream")]
    if broken:
        return (f"the server at {base_url} stopped answering mid-session ({broken[-1].error}); check it with "
                "`sparkkit status` and run 07 again")
    bad = [q for q in reqs if (q.status and q.status >= 500) or q.error.startswith("in the stream")]
    if bad:
        return (f"the server answered with an error {len(bad)} time(s) (HTTP {bad[-1].status}: "
                f"{bad[-1].error or 'see its log'}); the CLI retried, then gave up — 06-verify's probe 'call to an "
                "undeclared tool' names the usual cause")
    return " ".join(said.split())[:200] or "the CLI failed without a message"


def fold(record: tuple[str, str, dict[str, Any]], loop: LoopReport | None) -> tuple[str, str, dict[str, Any]]:
    """07's record with the agent loop's in it: its table under `agent_loop`, its headline appended, and a
    failed session failing the step (a goal missed is a warning: it is measured, not broken)."""
    if loop is None:
        return record
    verdict, headline, results = record
    v, h, r = loop.record()
    order = ["pass", "warn", "fail"]
    return (max(verdict, v, key=order.index), f"{headline} — agent loop: {h}", {**results, "agent_loop": r})
