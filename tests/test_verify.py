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
    assert row["TTFT (s)"] is not None and row["TTFT (s)"] > 0


def test_bench_rejects_bad_sizes():
    from sparkkit.errors import ParameterError
    c = mock_client(lambda req: httpx.Response(500))
    with pytest.raises(ParameterError, match="parameter `repeats`"):
        bench.measure(c, "m", [128], repeats=0)
    with pytest.raises(ParameterError, match="parameter `prompt_tokens`"):
        bench.measure(c, "m", [0])
