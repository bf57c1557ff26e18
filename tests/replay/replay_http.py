#!/usr/bin/env python3
"""Replay HTTP server: answers like Ollama, SGLang or vLLM from tests/replay/recordings/<engine>.json.

    python tests/replay/replay_http.py --engine ollama|sglang|vllm --host 127.0.0.1 --port N
        [--state DIR] [--fault NAME] [--served-model-name NAME] [--context-length N]

Faults (--fault or SPARKKIT_REPLAY_FAULT): ctx-ignored, no-messages, slow-ready.
Writes its pid to DIR/replay_http-<port>.pid, prints one ready line, exits on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import replay_common as rc  # noqa: E402

DEFAULT_PORTS = {"ollama": 11434, "sglang": 30000, "vllm": 8000}


class Replay:
    def __init__(self, engine: str, state: pathlib.Path | None, faults: set[str],
                 served_model_name: str | None, context_length: int | None):
        self.engine = engine
        self.rec = rc.recording(engine)
        self.http = self.rec["http"]
        self.state = state
        self.faults = faults
        self.started = time.monotonic()
        self.served = served_model_name
        self.context_length = context_length
        self.lock = threading.Lock()
        self._mem_state = {"models": {}, "loaded": {}}
        self.cluster = None            # (key, nodes, net.json, log file): a two-node head
        self.joined = False

    def cluster_ready(self) -> bool:
        """A two-node head serves once the other nodes registered under its key in net.json are alive; then
        its log gets the recorded "joined" start-up (once)."""
        if not self.cluster or self.joined:
            return True
        key, nodes, net, log = self.cluster
        workers = rc.read_json(pathlib.Path(net), {}).get(key) or {}
        if 1 + sum(1 for pid in workers.values() if rc.pid_alive(pid)) < nodes:
            return False
        with self.lock:
            if not self.joined:
                port = self.port
                lines = self.rec["logs"]["pair_joined"]["lines"] + [
                    ln for ln in self.rec["logs"]["startup"]["lines"] if "TP0] Init torch distributed" not in ln
                    and "server_args=" not in ln and "chat template" not in ln]
                with open(log, "a") as f:
                    for ln in lines:
                        addr = key.split(":", 1)[1]
                        ln = ln.replace("{head}", addr).replace("{dist}", addr)
                        ln = ln.replace(":30000", f":{port}").replace(":8000", f":{port}")
                        f.write(ln.replace("openai/gpt-oss-120b", self.model_name(None)) + "\n")
                self.joined = True
        return True

    # ---------------------------------------------------------------- ollama state
    def _ostate_path(self):
        return self.state / "ollama.json" if self.state else None

    def ostate(self):
        p = self._ostate_path()
        if p is None:
            return self._mem_state
        return rc.read_json(p, {"models": {}, "loaded": {}})

    def ostate_update(self, fn):
        p = self._ostate_path()
        if p is None:
            with self.lock:
                fn(self._mem_state)
            return
        with rc.locked_json(p, {"models": {}, "loaded": {}}) as st:
            st.setdefault("models", {})
            st.setdefault("loaded", {})
            fn(st)

    # ---------------------------------------------------------------- helpers
    def model_name(self, requested: str | None) -> str:
        if requested:
            return requested
        if self.served:
            return self.served
        return self.rec.get("model", {}).get("name") or "openai/gpt-oss-120b"


def scripted_call(tools, messages, api):
    """A Read call when the request offers a Read tool and the last turn is the user's naming an absolute
    path (sparkkit's probe prompts and the Claude Code turn in its tests): how the scripted tiny model
    behaves, so 06's tool round trip and 07's tool-use turn can run against a replayed engine. Anything
    else (a tool result, no tools) gets the recorded text reply."""
    import re
    names = [(t.get("function") or {}).get("name") or t.get("name") for t in tools]
    # Claude Code 2.1.332 ends its messages with a system message (research/captures/run1.json): the turn is
    # the last message that is not one
    turn = next((m for m in reversed(messages) if m.get("role") != "system"), None)
    if "Read" not in names or not turn or turn.get("role") != "user":
        return None
    content = turn.get("content")
    if isinstance(content, list):
        if any(b.get("type") == "tool_result" for b in content if isinstance(b, dict)):
            return None
        content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    # the last absolute path of the turn: the prompt comes after Claude Code's reminders (which hold URLs)
    paths = re.findall(r"(?<![\w/:])(/[\w.\-]+(?:/[\w.\-]+)+)", content or "")
    if not paths:
        return None
    return {"name": "Read", "arguments": json.dumps({"file_path": paths[-1].rstrip(".,")})}


# The guide's smoke-test prompt (spark-guide §7) gets a code answer, as sparkkit's scripted models give it
# (tinymodel.CODE_ANSWER): values ours, in the engine's recorded reply shape.
CODE_REPLY = ("Here is an iterative version:\n\n```python\ndef fibonacci(n: int) -> int:\n    a, b = 0, 1\n"
              "    for _ in range(n):\n        a, b = b, a + b\n    return a\n```")


def asks_for_code(messages) -> bool:
    last = next((m for m in reversed(messages or []) if m.get("role") == "user"), None)
    return bool(last) and isinstance(last.get("content"), str) and "Fibonacci" in last["content"]


def norm_model(name: str) -> str:
    return name if ":" in name or "/" in name else name + ":latest"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "replay"
    sys_version = ""
    R: Replay = None  # set on the class

    def log_message(self, fmt, *args):  # quiet
        pass

    # ---------------------------------------------------------------- plumbing
    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            return {"__raw__": raw.decode("utf-8", "replace")}

    def send(self, status: int, body, ctype: str | None = None):
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            ctype = ctype or "application/json; charset=utf-8"
        else:
            data = (body or "").encode()
            ctype = ctype or "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_rec(self, name: str, body=None, status=None):
        e = self.R.http[name]
        self.send(status or e["status"], e.get("body") if body is None else body,
                  e.get("headers", {}).get("content-type"))

    def stream(self, ctype: str, chunks):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for c in chunks:
            self.wfile.write(c.encode() if isinstance(c, str) else c)
            self.wfile.flush()

    def not_found(self):
        self.send_rec("not_found")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        path = self.path.split("?", 1)[0]
        body = self._body() if method in ("POST", "DELETE") else {}
        if not self.R.cluster_ready():     # ours: the engine is still waiting for the other node
            return self.send(503, {"detail": "replay: waiting for the other node to join"})
        try:
            getattr(self, "r_" + self.R.engine)(method, path, body)
        except BrokenPipeError:
            pass

    # ---------------------------------------------------------------- shared OpenAI / Anthropic
    def openai_chat(self, body):
        R = self.R
        rbody = copy.deepcopy(R.http["v1_chat"]["body"])
        rbody["model"] = R.model_name(body.get("model"))
        rbody["created"] = int(time.time())
        call = scripted_call(body.get("tools") or [], body.get("messages") or [], "openai")
        if asks_for_code(body.get("messages")) and not call:
            rbody["choices"][0]["message"]["content"] = CODE_REPLY
        if call and not body.get("stream"):
            # the OpenAI tool-call shape the engines' gpt-oss parsers return (sglang FunctionCallParser /
            # vLLM openai tool parser): scripted like sparkkit's tiny model, values ours
            msg = rbody["choices"][0]["message"]
            msg.update(content=None, tool_calls=[{"id": "call_replay_0", "type": "function", "function": call}])
            rbody["choices"][0]["finish_reason"] = "tool_calls"
            return self.send(200, rbody, "application/json")
        if not body.get("stream"):
            return self.send(200, rbody, "application/json")
        msg = rbody["choices"][0]["message"]
        rkey = "reasoning" if "reasoning" in msg else "reasoning_content"
        base = {"id": rbody["id"], "object": "chat.completion.chunk", "created": rbody["created"], "model": rbody["model"]}

        def chunk(delta, finish=None):
            return "data: " + json.dumps(dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])) + "\n\n"

        out = [chunk({"role": "assistant", "content": ""})]
        for word in (msg.get(rkey) or "").split(" "):
            if word:
                out.append(chunk({rkey: word + " "}))
        for word in (msg.get("content") or "").split(" "):
            out.append(chunk({"content": word + " "}))
        out.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append("data: " + json.dumps(dict(base, choices=[], usage=rbody["usage"])) + "\n\n")
        out.append("data: [DONE]\n\n")
        self.stream("text/event-stream", out)

    def anthropic_messages(self, body):
        R = self.R
        if "no-messages" in R.faults:
            return self.not_found()
        rbody = copy.deepcopy(R.http["v1_messages"]["body"])
        rbody["model"] = R.model_name(body.get("model"))
        call = scripted_call(body.get("tools") or [], body.get("messages") or [], "anthropic")
        if call:   # Anthropic's tool_use block (docs.anthropic.com), scripted; values ours
            rbody["content"] = [b for b in rbody["content"] if b["type"] == "thinking"] + [
                {"type": "tool_use", "id": "toolu_replay_0", "name": call["name"], "input": json.loads(call["arguments"])}]
            rbody["stop_reason"] = "tool_use"
        if not body.get("stream"):
            return self.send(200, rbody, "application/json")
        # Anthropic SSE event sequence (docs.anthropic.com streaming shape), built from the recorded body
        ev = lambda t, d: f"event: {t}\ndata: {json.dumps(dict(d, type=t))}\n\n"  # noqa: E731
        start = dict(rbody, content=[], stop_reason=None, usage={"input_tokens": rbody["usage"]["input_tokens"], "output_tokens": 0})
        out = [ev("message_start", {"message": start})]
        for i, block in enumerate(rbody["content"]):
            if block["type"] == "thinking":
                out.append(ev("content_block_start", {"index": i, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
                out.append(ev("content_block_delta", {"index": i, "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}))
                out.append(ev("content_block_delta", {"index": i, "delta": {"type": "signature_delta", "signature": block.get("signature", "")}}))
            elif block["type"] == "tool_use":
                out.append(ev("content_block_start", {"index": i, "content_block": dict(block, input={})}))
                out.append(ev("content_block_delta", {"index": i, "delta": {"type": "input_json_delta",
                                                                             "partial_json": json.dumps(block["input"])}}))
            else:
                out.append(ev("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}}))
                out.append(ev("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": block["text"]}}))
            out.append(ev("content_block_stop", {"index": i}))
        out.append(ev("message_delta", {"delta": {"stop_reason": rbody["stop_reason"], "stop_sequence": None},
                                        "usage": {"output_tokens": rbody["usage"]["output_tokens"]}}))
        out.append(ev("message_stop", {}))
        self.stream("text/event-stream", out)

    def health(self):
        R = self.R
        if "slow-ready" in R.faults and time.monotonic() - R.started < 2.0:
            return self.send(503, "", "text/plain")
        return self.send_rec("health")

    # ---------------------------------------------------------------- SGLang
    def r_sglang(self, method, path, body):
        R = self.R
        name = R.model_name(None)
        if method == "GET" and path in ("/health", "/health_generate"):
            return self.health()
        if method == "GET" and path == "/v1/models":
            b = copy.deepcopy(R.http["v1_models"]["body"])
            b["data"][0]["id"] = name
            if R.context_length:
                b["data"][0]["max_model_len"] = R.context_length
            return self.send(200, b, "application/json")
        if method == "GET" and path in ("/get_model_info", "/model_info"):
            b = copy.deepcopy(R.http["model_info"]["body"])
            b["served_model_name"] = name
            return self.send(200, b, "application/json")
        if method == "GET" and path in ("/get_server_info", "/server_info"):
            b = copy.deepcopy(R.http["server_info"]["body"])
            b["served_model_name"] = name
            b["port"] = self.server.server_address[1]
            if R.context_length:
                b["context_length"] = R.context_length
            return self.send(200, b, "application/json")
        if method == "POST" and path == "/v1/chat/completions":
            return self.openai_chat(body)
        if method == "POST" and path == "/v1/messages":
            return self.anthropic_messages(body)
        return self.not_found()

    # ---------------------------------------------------------------- vLLM
    def r_vllm(self, method, path, body):
        R = self.R
        name = R.model_name(None)
        if method == "GET" and path == "/health":
            return self.health()
        if method == "GET" and path == "/version":
            return self.send_rec("version")
        if method == "GET" and path == "/v1/models":
            b = copy.deepcopy(R.http["v1_models"]["body"])
            b["data"][0]["id"] = name
            if R.context_length:
                b["data"][0]["max_model_len"] = R.context_length
            return self.send(200, b, "application/json")
        if method == "POST" and path == "/v1/chat/completions":
            return self.openai_chat(body)
        if method == "POST" and path == "/v1/messages":
            return self.anthropic_messages(body)
        return self.not_found()

    # ---------------------------------------------------------------- Ollama
    def r_ollama(self, method, path, body):
        R = self.R
        H = R.http
        if path == "/" and method in ("GET", "HEAD"):
            return self.send_rec("root")
        if method in ("GET", "HEAD") and path == "/api/version":
            return self.send_rec("version")
        if method == "GET" and path == "/api/tags":
            return self.send(200, {"models": [self._tag_entry(n, m) for n, m in sorted(R.ostate()["models"].items())]})
        if method == "POST" and path == "/api/pull":
            return self._pull(body)
        if method == "POST" and path == "/api/create":
            return self._create(body)
        if method == "POST" and path == "/api/show":
            return self._show(body)
        if method == "POST" and path == "/api/generate":
            return self._generate(body)
        if method == "GET" and path == "/api/ps":
            return self._ps()
        if method == "DELETE" and path == "/api/delete":
            name = norm_model(body.get("model") or body.get("name") or "")
            found = []
            R.ostate_update(lambda st: found.append(st["models"].pop(name, None)))
            if not found[0]:
                return self.send(404, {"error": f"model '{name}' not found"})
            return self.send(200, "")
        if method == "GET" and path == "/v1/models":
            data = [{"id": n, "object": "model", "created": int(time.time()), "owned_by": "library"}
                    for n in sorted(R.ostate()["models"])]
            return self.send(200, {"object": "list", "data": data}, "application/json")
        if method == "POST" and path == "/v1/chat/completions":
            name = norm_model(body.get("model") or "")
            if name not in R.ostate()["models"]:
                return self.send(404, {"error": {"message": f"model '{body.get('model')}' not found", "type": "api_error", "param": None, "code": None}},
                                 "application/json")
            return self.openai_chat(body)
        if method == "POST" and path == "/v1/messages":
            return self.anthropic_messages(body)
        if method == "POST" and path == "/v1/messages/count_tokens":
            return self.send_rec("v1_messages_count_tokens")
        return self.not_found()

    def _tag_entry(self, name, m):
        base = copy.deepcopy(self.R.http["tags"]["body"]["models"][0])
        base.update(name=name, model=name, modified_at=m.get("modified_at", base["modified_at"]))
        return base

    def _pull(self, body):
        R = self.R
        name = norm_model(body.get("model") or body.get("name") or "")
        if name not in R.rec.get("pullable", []):
            return self.send_rec("pull_unknown")

        def reg(st):
            st["models"].setdefault(name, {"from": None, "num_ctx": None})
            st["models"][name]["modified_at"] = rc.now_iso()
        R.ostate_update(reg)
        if body.get("stream") is False:
            return self.send(200, {"status": "success"})
        self.stream("application/x-ndjson", [json.dumps(o) + "\n" for o in R.http["pull"]["stream"]])

    def _create(self, body):
        R = self.R
        name = norm_model(body.get("model") or body.get("name") or "")
        src = body.get("from")
        if not src and not body.get("files"):
            return self.send_rec("create_old_shape")
        src = norm_model(src or "")
        models = R.ostate()["models"]
        if src not in models:
            # status/text for a missing FROM model: shape ours (create.go streams the lookup error)
            return self.send(400, {"error": f"model '{src}' not found"})
        params = dict(models[src].get("parameters") or {})
        params.update(body.get("parameters") or {})

        def reg(st):
            st["models"][name] = {"from": src, "num_ctx": params.get("num_ctx"), "parameters": params, "modified_at": rc.now_iso()}
        R.ostate_update(reg)
        if body.get("stream") is False:
            return self.send(200, {"status": "success"})
        self.stream("application/x-ndjson", [json.dumps(o) + "\n" for o in R.http["create"]["stream"]])

    def _show(self, body):
        R = self.R
        name = norm_model(body.get("model") or body.get("name") or "")
        m = R.ostate()["models"].get(name)
        if m is None:
            return self.send(404, {"error": f"model '{body.get('model') or body.get('name')}' not found"})
        b = copy.deepcopy(R.http["show"]["body"])
        params = dict(m.get("parameters") or {})
        lines = [f"{k:<30} {v}" for k, v in params.items()] + ["temperature                    1"]
        b["parameters"] = "\n".join(lines)
        if params:
            b["modelfile"] = b["modelfile"] + "".join(f"PARAMETER {k} {v}\n" for k, v in params.items())
        return self.send(200, b)

    def _generate(self, body):
        R = self.R
        req = body.get("model") or ""
        name = norm_model(req)
        m = R.ostate()["models"].get(name)
        if m is None:
            return self.send(404, {"error": f"model '{req}' not found"})
        keep = body.get("keep_alive", "5m")
        if keep in (0, "0", "0s", "0m"):
            R.ostate_update(lambda st: st["loaded"].pop(name, None))
            b = copy.deepcopy(R.http["generate_unload"]["body"])
            b.update(model=req, created_at=rc.now_iso())
            return self.send(200, b)
        if body.get("prompt"):
            return self.send(501, {"error": "replay: /api/generate with a prompt is not recorded"})
        trained = R.rec["model"]["context_length"]
        num_ctx = ((body.get("options") or {}).get("num_ctx") or m.get("num_ctx") or trained)
        num_ctx = min(int(num_ctx), trained)
        if "ctx-ignored" in R.faults:
            num_ctx = 4096
        expires = "2318-11-29T16:40:00.000000000Z" if keep in (-1, "-1") else \
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))

        def load(st):
            st["loaded"][name] = {"context_length": num_ctx, "expires_at": expires}
        R.ostate_update(load)
        b = copy.deepcopy(R.http["generate_load"]["body"])
        b.update(model=req, created_at=rc.now_iso())
        return self.send(200, b)

    def _ps(self):
        R = self.R
        st = R.ostate()
        out = []
        tmpl = R.http["ps"]["body"]["models"][0]
        for name, l in sorted(st["loaded"].items()):
            e = copy.deepcopy(tmpl)
            e.update(name=name, model=name, context_length=l["context_length"], expires_at=l["expires_at"])
            out.append(e)
        return self.send(200, {"models": out})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=["ollama", "sglang", "vllm"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--state")
    ap.add_argument("--fault", action="append", default=[])
    ap.add_argument("--served-model-name")
    ap.add_argument("--context-length", type=int)
    ap.add_argument("--cluster", help="a two-node head: the key its worker registers under in --net")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--net", help="the shared net.json of two-node launches")
    ap.add_argument("--log", help="the container log the joined start-up is appended to")
    a = ap.parse_args(argv)
    port = a.port or DEFAULT_PORTS[a.engine]
    state = rc.state_dir(a.state, required=False)
    faults = set(f for f in a.fault if f) | set(x for x in rc.fault().split(",") if x)
    Handler.R = Replay(a.engine, state, faults, a.served_model_name, a.context_length)
    Handler.R.port = port
    if a.cluster:
        Handler.R.cluster = (a.cluster, a.nodes, a.net, a.log)
    try:
        srv = ThreadingHTTPServer((a.host, port), Handler)
    except OSError as e:
        print(f"replay_http: cannot bind {a.host}:{port}: {e.strerror}", file=sys.stderr, flush=True)
        return 1
    srv.daemon_threads = True
    pidfile = state / f"replay_http-{port}.pid" if state else None
    if pidfile:
        pidfile.write_text(str(os.getpid()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    print(f"replay_http: {a.engine} ready on http://{a.host}:{port} pid {os.getpid()}"
          + (f" faults {','.join(sorted(faults))}" if faults else ""), flush=True)
    stop.wait()
    srv.shutdown()
    srv.server_close()
    if pidfile:
        try:
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
