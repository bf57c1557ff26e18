"""The agent-loop benchmark: the meter's rows and goals from request records, the meter as a real pass-through,
and the real Claude Code CLI's sessions (subagents, nested ones, the 500 storm) against the embedded llama.cpp."""
import http.server
import json
import threading
import time

import httpx
import pytest

from sparkkit import agentloop, claude, records, serve
from sparkkit.agentloop import Meter, Request
from sparkkit.errors import SparkkitError

# llama.cpp b11549's streamed /v1/messages start (server-task.cpp to_json_anthropic: usage counts the cached part)
MESSAGE_START = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"chatcmpl-x","type":"message",'
                 b'"role":"assistant","content":[],"model":"gpt-oss-120b","stop_reason":null,"stop_sequence":null,'
                 b'"usage":{"cache_read_input_tokens":900,"input_tokens":100,"output_tokens":0}}}\n\n')
MESSAGE_DELTA = (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
                 b'"stop_sequence":null},"usage":{"output_tokens":12}}\n\n')


def body(system: str, first: str, *later: dict, tools=("Read", "Agent")) -> dict:
    return {"system": [{"type": "text", "text": system}], "tools": [{"name": t} for t in tools],
            "messages": [{"role": "user", "content": first}, *later]}


def agent_call(prompt: str) -> dict:
    return {"role": "assistant", "content": [{"type": "tool_use", "name": "Agent", "input": {"prompt": prompt}}]}


def req(n, session, b, arrive, first, end, prompt, cached):
    r = Request(n, "POST", "/v1/messages?beta=true", session, arrive, b)
    r.first, r.end, r.status, r.prompt_tokens, r.cached_tokens = first, end, 200, prompt, cached
    return r


def session(name="s1", t=0.0):
    """main spawns agent A ("look"), A spawns a nested B ("deeper"); B ends, A ends, main ends."""
    main0 = body("main system", "do it")
    main1 = body("main system", "do it", agent_call("look"), {"role": "user", "content": "launched"})
    a0, a1 = body("agent system", "look"), body("agent system", "look", agent_call("deeper"))
    b0 = body("agent system", "deeper")
    return [req(1, name, main0, t + 0, t + 5, t + 6, 1000, 0),
            req(2, name, main1, t + 6.1, t + 6.5, t + 7, 1100, 1000),
            req(3, name, a0, t + 6.1, t + 9, t + 10, 800, 0),
            req(4, name, b0, t + 10.2, t + 12, t + 13, 800, 700),
            req(5, name, a1, t + 13.1, t + 13.5, t + 14, 900, 400)]


def test_rows_name_each_conversation_from_the_agent_calls_in_the_bodies():
    rows = agentloop.rows(session(), slots=1)
    assert [(r["conversation"], r["turn"]) for r in rows] == [
        ("main", 1), ("main", 2), ("agent-1", 1), ("agent-1.1", 1), ("agent-1", 2)]
    assert [r["reuse_pct"] for r in rows] == [0.0, 90.91, 0.0, 87.5, 44.44]
    assert rows[3]["spawn"] == 2            # the second conversation of that kind (same system prompt and tools)


def test_a_conversation_is_one_session_s_and_a_kind_spans_sessions():
    rows = agentloop.rows(session("s1") + [req(n + 10, "s2", r.body, r.arrive + 100, r.first + 100, r.end + 100,
                                               r.prompt_tokens, r.cached_tokens) for n, r in enumerate(session())], 1)
    second = [r for r in rows if r["session"] == "s2"]
    assert [(r["conversation"], r["turn"]) for r in second][:3] == [("main", 1), ("main", 2), ("agent-1", 1)]
    assert second[2]["spawn"] == 3


def test_slot_waits_follow_the_order_the_engine_served():
    reqs = session()
    # one slot: agent A (first byte 9) was served before main's second turn (first byte 6.5)? No: main first.
    wait = agentloop._queue([r for r in reqs], slots=1)
    assert wait[2] == 0.0 and wait[3] == pytest.approx(0.9)        # A waited for main's turn to end (6.1 -> 7)
    assert agentloop._queue(reqs, slots=2)[3] == 0.0
    # served out of arrival order: main's turn (arrived first) waited for the agent the engine took first
    first, second = req(1, "s", {}, 0.0, 5.0, 6.0, 10, 0), req(2, "s", {}, -0.01, 6.5, 7.0, 10, 0)
    assert agentloop._queue([first, second], slots=1)[2] == pytest.approx(6.01)


def test_goals_are_ratios_of_what_was_measured():
    rows = agentloop.rows(session(), slots=1)
    g = {x.name: x for x in agentloop.goals(rows, decode_step_s=0.05, server_step_s=0.8)}
    later = g["later turns reuse"]
    assert later.measured == pytest.approx(0.4444) and later.met is False and "agent-1 turn 2" in later.detail
    assert g["a subagent kind spawned again reuses"].ratio == pytest.approx(0.875 / 0.8, abs=1e-3)
    wait = g["main waits behind others at most one server step"]
    assert wait.goal == 0.8 and "one server step 0.80 s" in wait.detail and "alone 50 ms" in wait.detail
    assert g["main queues for a slot at most one decode step"].measured == 0.0   # main never queued here (1 slot)


def test_one_server_step_is_a_batch_at_the_alone_rate_plus_a_decode_step():
    reqs = session()            # alone: 1 (1000 new tokens, 5 s), 4 (100, 1.8 s), 5 (500, 0.4 s); 2 and 3 overlap
    per_token = agentloop.own_time(reqs)[1]
    assert per_token == pytest.approx(1540 / 406_667, rel=1e-3)
    assert agentloop.server_step(reqs, 2048, 0.05) == pytest.approx(per_token * 2048 + 0.05, abs=1e-4)
    assert agentloop.server_step(reqs, 512, None) == pytest.approx(per_token * 512, abs=1e-4)
    assert agentloop.server_step(reqs, 0, 0.05) is None
    assert agentloop.server_step(reqs[1:3], 2048, 0.05) is None     # nothing ran alone: no line, no step


class Upstream(http.server.BaseHTTPRequestHandler):
    """A stand-in engine: streams MESSAGE_START, then MESSAGE_DELTA a moment later; /boom answers 500."""
    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.startswith("/boom"):
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error":{"code":500,"message":"got exception","type":"server_error"}}')
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(MESSAGE_START)
        self.wfile.flush()
        time.sleep(0.2)
        self.wfile.write(MESSAGE_DELTA)


@pytest.fixture
def upstream():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_the_meter_forwards_bytes_unchanged_and_reads_the_engine_s_usage(upstream):
    with Meter(upstream) as m:
        m.session = "s1"
        r = httpx.post(m.base_url + "/v1/messages?beta=true", json=body("sys", "hi"), timeout=10)
        bad = httpx.post(m.base_url + "/boom", json={}, timeout=10)
    assert r.status_code == 200 and r.content == MESSAGE_START + MESSAGE_DELTA
    assert bad.status_code == 500 and b"got exception" in bad.content
    first, boom = m.requests
    assert (first.prompt_tokens, first.cached_tokens, first.output_tokens) == (1000, 900, 12)
    assert first.arrive <= first.first <= first.end and first.session == "s1" and first.body["system"][0]["text"] == "sys"
    assert boom.status == 500 and boom.prompt_tokens is None


def test_a_dead_upstream_is_a_502_and_a_row_with_the_reason():
    with Meter(f"http://127.0.0.1:{serve.free_port()}") as m:
        r = httpx.post(m.base_url + "/v1/messages", json={}, timeout=10)
    assert r.status_code == 502
    assert m.requests[0].error.startswith("ConnectionRefusedError") and m.requests[0].status is None
    assert "stopped answering mid-session" in agentloop._why(m.requests, "", "http://x")


def test_a_server_that_does_not_answer_is_one_sentence_before_any_session():
    with pytest.raises(SparkkitError, match=r"does not answer .* start it with 05-serve"):
        agentloop.run(base_url=f"http://127.0.0.1:{serve.free_port()}", launch={"slots": 1, "alias": "m"})


def test_a_slot_count_that_leaves_too_little_context_is_one_sentence(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path))
    launch = {"alias": "gpt-oss-120b", "context": 131072, "slots": 8, "kv_unified": False}
    with pytest.raises(SparkkitError, match=r"split over 8 slots.*re-run 02-plan"):
        agentloop.run(base_url=upstream, launch=launch, claude_bin="/bin/false", workdir=tmp_path / "w")


def test_fold_puts_the_loop_into_07_s_record():
    rows = agentloop.rows(session(), slots=1)
    loop = agentloop.LoopReport({"slots": 1}, [agentloop.SessionRun("s1", "p", 1.0, 0, 2, ["Agent"], "ok")], rows,
                                agentloop.goals(rows, 0.05), 0.05)
    verdict, headline, results = agentloop.fold(("pass", "wired", {"cli": {}}), loop)
    assert verdict == "warn" and "agent loop: 5 requests" in headline
    assert results["agent_loop"]["requests"][0]["conversation"] == "main" and "cli" in results
    assert agentloop.fold(("pass", "wired", {}), None) == ("pass", "wired", {})


# ----------------------------------------------------------------------------- the real CLI on the embedded llama.cpp

def _serve(home, mp, spec=None, **launch_kw):
    from sparkkit.download import place_embedded
    from sparkkit.engines.launch import Launch
    from sparkkit.tinymodel import generate
    mp.setenv("SPARKKIT_HOME", str(home))
    model = (generate(home / "models" / "m.gguf", spec).path if spec else place_embedded(home / "models").path)
    launch = Launch(model=str(model), alias="gpt-oss-120b", context=131072, port=serve.free_port(), **launch_kw)
    return serve.start(launch, {"kind": "embedded"}), launch


@pytest.fixture(scope="module")
def loop_report(tmp_path_factory):
    """02's launch for llama.cpp (4 slots, one KV pool) serving the embedded model; the scripted sessions."""
    home = tmp_path_factory.mktemp("agentloop")
    with pytest.MonkeyPatch.context() as mp:
        started, launch = _serve(home, mp, slots=4)
        try:
            yield agentloop.run(base_url=started.base_url, launch=launch.to_dict(), workdir=home / "loop")
        finally:
            serve.stop()


@pytest.mark.e2e
def test_the_real_cli_runs_main_nested_subagents_and_a_new_project(loop_report):
    r = loop_report
    print("\n" + r.table().to_string() + "\n" + r.goals_table().to_string())
    assert [(s.name, s.exit_code) for s in r.sessions] == [("s1-delegate", 0), ("s2-read", 0), ("s3-new-project", 0)]
    assert r.sessions[0].tools == ["Agent", "Agent"] and r.sessions[1].tools == ["Read"]
    for name in ("s1-delegate", "s3-new-project"):
        convs = {x["conversation"] for x in r.requests if x["session"] == name}
        assert convs == {"main", "agent-1", "agent-1.1"}, convs
    assert all(x["status"] == 200 and x["prompt_tokens"] > 20000 for x in r.requests)
    # a new project is a cold first request; a new session in the same one is not
    first = {x["session"]: x for x in r.requests if x["conversation"] == "main" and x["turn"] == 1}
    assert first["s3-new-project"]["cached_tokens"] == 0 and first["s2-read"]["reuse_pct"] > 95


@pytest.mark.e2e
def test_with_a_slot_each_every_later_turn_and_every_respawn_reuses_its_prompt(loop_report):
    """Token counts from the engine, not times: the goals that hold on any machine."""
    g = {x.name: x for x in loop_report.goals}
    assert g["later turns reuse"].met, g["later turns reuse"]
    assert g["a subagent kind spawned again reuses"].met, g["a subagent kind spawned again reuses"]
    verdict, headline, results = loop_report.record()
    assert verdict in ("pass", "warn") and len(results["requests"]) == len(loop_report.requests)


@pytest.mark.e2e
def test_the_500_storm_ends_after_the_retries_07_sets(tmp_path, monkeypatch):
    """A model that calls a tool the request did not declare: llama.cpp's grammar answers 500; with 07's settings the
    real CLI sends the request 1 + CLAUDE_CODE_MAX_RETRIES times, then stops with the error (not 11 times)."""
    from sparkkit.tinymodel import TinySpec, common_words
    spec = TinySpec(tool_name="NotOffered", tool_args="{}", vocab_words=common_words())
    started, launch = _serve(tmp_path, monkeypatch, spec)
    try:
        t0 = time.monotonic()
        r = agentloop.run([agentloop.Session("storm", "p", "Say hello.")], base_url=started.base_url,
                          launch=launch.to_dict(), workdir=tmp_path / "w")
        print(f"\n500 storm: the CLI stopped {r.sessions[0].after_fault_s:.1f} s after the fault "
              f"({time.monotonic() - t0:.1f} s with the cold prefill; 140-150 s with the CLI's default 10 retries)")
    finally:
        serve.stop()
    print(r.table().to_string())
    assert len(r.requests) == 1 + claude.MAX_RETRIES             # llama.cpp streams a 200, then the error; then 500s
    assert all(x["status"] == 500 or x["error"].startswith("in the stream") for x in r.requests)
    s = r.sessions[0]
    assert s.exit_code != 0 and f"answered with an error {1 + claude.MAX_RETRIES} time(s)" in s.error
    assert r.record()[0] == "fail"


@pytest.mark.e2e
def test_a_server_stopped_mid_session_is_one_sentence_and_the_record_keeps_what_was_measured(tmp_path, monkeypatch):
    started, launch = _serve(tmp_path, monkeypatch)

    def stop_soon(line):
        if line.endswith("…"):
            threading.Timer(3.0, serve.stop).start()
    try:
        r = agentloop.run([agentloop.Session("cut", "p", "Say hello.")], base_url=started.base_url,
                          launch=launch.to_dict(), workdir=tmp_path / "w", progress=stop_soon)
    finally:
        serve.stop()
    s = r.sessions[0]
    assert s.exit_code != 0 and "stopped answering mid-session" in s.error and "sparkkit status" in s.error
    verdict, headline, results = r.record()
    assert verdict == "fail" and "cut: the server" in headline and results["requests"] is not None


def test_a_wait_is_what_an_overlapped_request_took_beyond_a_line_through_the_lone_ones():
    alone = [req(1, "s", body("m", "a"), 0, 1.2, 2, 1000, 0), req(2, "s", body("m", "b"), 10, 10.3, 11, 100, 0),
             req(3, "s", body("m", "c"), 20, 20.7, 21, 500, 0)]         # 0.2 s + 1 ms a token
    behind = [req(4, "s", body("x", "long"), 30, 39, 40, 9000, 0),     # a cold prefill ...
              req(5, "s", body("m", "d"), 30.5, 35.6, 36, 600, 300)]   # ... that a short turn overlapped
    a, per = agentloop.own_time(alone + behind)
    assert a == pytest.approx(0.2, abs=0.01) and per == pytest.approx(0.001, abs=1e-4)
    got = {r["n"]: r for r in agentloop.rows(alone + behind, slots=4)}
    assert got[1]["waited_s"] == 0.0 and not got[1]["overlap"]
    assert got[5]["overlap"] and got[5]["waited_s"] == pytest.approx(5.1 - 0.5, abs=0.05)


def test_a_ping_while_the_engine_prefills_is_not_the_first_answer():
    """llama.cpp b11549 sends the SSE comment ":\\n\\n" every 30 s of silence (server-context.cpp, sse_ping_interval)."""
    r = Request(1, "POST", "/v1/messages", "s", time.monotonic())
    r.feed(b":\n\n")
    assert r.first is None
    r.feed(MESSAGE_START)
    assert r.first is not None and r.prompt_tokens == 1000
