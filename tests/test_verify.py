"""06's probes and measurements: unit tests over httpx.MockTransport, then the real server."""
import json

import httpx
import pytest

from sparkkit import bench, verify

# What llama-server answers when the model's text is not valid harmony
# (research/embedded-engine.md §1, gotcha 6: random weights).
HARMONY_500 = {"error": {"code": 500, "type": "server_error",
                         "message": "The model produced output that does not match the expected peg-native format"}}


def mock_client(handler):
    return httpx.Client(base_url="http://engine", transport=httpx.MockTransport(handler))


def test_a_500_from_the_parser_is_a_failed_probe_with_the_servers_words():
    c = mock_client(lambda req: httpx.Response(500, json=HARMONY_500))
    probe = verify._timed("chat completion", lambda: verify.chat(c, "m"))
    assert not probe.ok and "HTTP 500" in probe.detail and "peg-native" in probe.detail


def test_tool_round_trip_fails_when_the_model_answers_without_calling():
    reply = {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "I can't read files"}}]}
    c = mock_client(lambda req: httpx.Response(200, json=reply))
    ok, detail = verify.tool_round_trip(c, "m", verify.Path("/tmp/probe.txt"))
    assert not ok and "expected a Read tool call" in detail


def test_tool_round_trip_refuses_to_read_a_path_other_than_the_probe(tmp_path):
    probe = tmp_path / "hello.txt"
    probe.write_text("probe")
    call = {"choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "Read", "arguments": json.dumps({"file_path": "/etc/shadow"})}}]}}]}
    seen = []

    def handler(req):
        seen.append(json.loads(req.content))
        return httpx.Response(200, json=call)
    ok, detail = verify.tool_round_trip(mock_client(handler), "m", probe)
    assert not ok and "/etc/shadow" in detail and len(seen) == 1   # never read, never sent back


@pytest.mark.parametrize("content, finish, ok, says", [
    ("Sure:\n\n```python\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n```\nDone.", "stop",
     True, "defining fib()"),
    ("def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a", "stop", True,
     "5 lines of Python"),                                                  # unfenced code that parses
    ("```py\nclass F:\n    async def nth(self, n):\n        return n\n```", "stop", True, "defining nth()"),
    ("The nth Fibonacci number is F(n) = F(n-1) + F(n-2).", "stop", False, "not a code answer"),   # prose
    ("```python\nfib = [0, 1]\n```", "stop", False, "defines no function"),
    ("```python\ndef fib(n:\n    return n\n```", "stop", False, "does not parse"),
    ("```python\ndef fib(n):\n    a, b = 0,", "length", False, "the answer was cut"),
])
def test_the_guide_s_smoke_test_needs_code_that_parses_and_defines_a_function(content, finish, ok, says):
    seen = []

    def handler(req):
        seen.append(json.loads(req.content))
        return httpx.Response(200, json={"choices": [{"finish_reason": finish,
                                                      "message": {"role": "assistant", "content": content}}]})
    got, detail = verify.code_answer(mock_client(handler), "m")
    assert (got, says in detail) == (ok, True), detail
    assert seen[0]["messages"] == [{"role": "user", "content": verify.GUIDE_PROMPT}]


def test_bench_uses_client_clock_when_the_engine_has_no_timings():
    # An engine that streams OpenAI chunks with usage but no llama.cpp `timings` (Ollama/vLLM style).
    events = [{"choices": [{"delta": {"content": "hi"}}]}] * 5 + \
             [{"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 5}}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"

    def handler(req):
        if req.url.path == "/tokenize":
            return httpx.Response(404)
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    row = bench.one_run(mock_client(handler), "m", "prompt", 5)
    assert row["source"] == "client clock" and row["generated"] == 5 and row["prompt tokens"] == 100
    assert row["TTFT (s)"] is not None and row["TTFT (s)"] > 0 and row["decode tok/s"] > 0


def llama_server_like(seen, tail=0):
    """A stand-in that answers like llama-server: /tokenize (one token per word) and chat, streamed or
    not, with `timings`, where cache_n is the prompt's common word prefix with the previous request."""
    last = []

    def handler(req):
        body = json.loads(req.content)
        if req.url.path == "/tokenize":
            return httpx.Response(200, json={"tokens": list(range(len(body["content"].split())))})
        words = body["messages"][0]["content"].split()
        seen.append(body)
        common = next((i for i, (a, b) in enumerate(zip(words, last)) if a != b), min(len(words), len(last)))
        last[:] = words
        greedy = body.get("top_k") == 1
        timings = {"cache_n": common, "prompt_n": len(words) - common + tail, "prompt_per_second": 1000.0,
                   "predicted_n": body["max_tokens"], "predicted_per_second": 50.0 if greedy else 40.0}
        if not body["stream"]:
            return httpx.Response(200, json={"choices": [{"message": {"content": "x"}}], "timings": timings})
        events = [{"choices": [{"delta": {"content": "x"}}]}, {"choices": [], "timings": timings}]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
    return handler


def test_bench_reaches_depth_by_extending_one_cached_conversation():
    seen = []
    runs = bench.measure(mock_client(llama_server_like(seen)), "m", pp_tokens=300, tg_tokens=16, depths=[0, 1000],
                         repeats=2, progress=False)
    assert list(runs["test"][:7]) == ["tg16 @ d0", "tg16 @ d0 as an agent", "pp300 @ d0", "context d1000",
                                      "tg16 @ d1000", "tg16 @ d1000 as an agent", "pp300 @ d1000"]
    prompts = [b["messages"][0]["content"] for b in seen]
    context, tg, agent, pp = prompts[3:7]
    assert all(p.startswith(context) for p in (tg, agent, pp))   # every test extends the cached context
    at_depth = runs[(runs["depth"] == 1000) & (runs["kind"] != "context")]
    assert (at_depth["cached"] >= 1000).all()                     # … so the engine took it from its cache
    pp_rows = runs[runs["kind"] == "pp"]
    assert pp_rows["new prompt tokens"].between(290, 310).all()  # only the new tokens are timed
    assert (runs.loc[runs["kind"] == "tg", "generated"] == 16).all()
    assert runs[runs["test"] == "context d1000"]["new prompt tokens"].between(990, 1010).all()
    assert len(set(p.split()[0] for p in prompts)) == 4           # a fresh nonce per depth and repeat
    # the engine's decode: greedy top-1, unstreamed; the agent's: streamed, the server's own sampling
    engine = [b for b in seen if b["max_tokens"] == 16 and not b["stream"]]
    agent_bodies = [b for b in seen if b["stream"]]
    assert len(engine) == len(agent_bodies) == 4 and all(b["top_k"] == 1 for b in engine)
    assert not any("top_k" in b or "temperature" in b for b in agent_bodies)
    s = bench.summary(runs)
    assert list(s["test"]) == ["pp300 @ d0", "pp300 @ d1000", "tg16 @ d0", "tg16 @ d1000", "tg16 @ d0 as an agent",
                               "tg16 @ d1000 as an agent", "context d1000"]
    h = bench.headline(runs)
    assert (h["decode_tps"], h["agent_decode_tps"], h["prefill_tps"], h["depth"]) == (50.0, 40.0, 1000.0, 0)
    assert h["ttft_s"] > 0


def test_bench_streams_every_request_when_the_engine_reports_no_timings():
    seen = []
    usage = {"prompt_tokens": 100, "completion_tokens": 8}

    def handler(req):
        body = json.loads(req.content)
        if req.url.path == "/tokenize":
            return httpx.Response(404)
        seen.append(body)
        if not body["stream"]:
            return httpx.Response(200, json={"choices": [{"message": {"content": "x"}}], "usage": usage})
        events = [{"choices": [{"delta": {"content": "x"}}]}] * 8 + [{"choices": [], "usage": usage}]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
    runs = bench.measure(mock_client(handler), "m", pp_tokens=64, tg_tokens=8, depths=[0], repeats=1, progress=False)
    assert [b["stream"] for b in seen] == [False, True, True, True]   # the first answer showed no timings: again
    assert set(runs["source"]) == {"client clock"} and runs.loc[runs["kind"] == "tg", "tok/s"].notna().all()


@pytest.mark.parametrize("given, depths", [(8192, [8192]), ("0,8192", [0, 8192]), ([0, 4096], [0, 4096])])
def test_depths_come_as_papermill_hands_them_over(given, depths):
    assert bench._depth_list(given) == depths


def test_pp_is_steered_to_exactly_n_new_tokens_template_tail_included():
    # 7 tokens of chat template follow the user's text: the first pp2048 sends 2055 new tokens, one
    # batch too many on a -b 2048 server; the next ones send 2048 less a small margin, never more.
    runs = bench.measure(mock_client(llama_server_like([], tail=7)), "m", pp_tokens=2048, tg_tokens=4, depths=[0],
                         repeats=3, progress=False)
    steered = 2048 - bench.PP_MARGIN
    assert runs.loc[runs["kind"] == "pp", "new prompt tokens"].tolist() == [2055, steered, steered]


@pytest.mark.parametrize("kwargs, parameter", [
    ({"repeats": 0}, "repeats"), ({"pp_tokens": 0}, "pp_tokens"), ({"tg_tokens": 1}, "tg_tokens"),
    ({"depths": []}, "depths"), ({"depths": [0, -5]}, "depths"), ({"depths": "0,8k"}, "depths")])
def test_bench_rejects_bad_sizes_naming_the_parameter(kwargs, parameter):
    from sparkkit.errors import ParameterError
    c = mock_client(lambda req: httpx.Response(500))
    with pytest.raises(ParameterError, match=f"parameter `{parameter}`"):
        bench.measure(c, "m", **kwargs)
