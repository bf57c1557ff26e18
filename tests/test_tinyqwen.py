"""The tiny Qwen3-Coder stand-in (architecture qwen3moe): the file, and real llama.cpp answering in Qwen3-Coder's
own format — a ChatML reply, XML tool calls parsed by llama.cpp's Qwen3-Coder handler, the guide's code answer —
through every probe 06 makes."""
import json

import gguf
import httpx
import numpy as np
import pytest

from sparkkit import tinyqwen, verify
from sparkkit.errors import ParameterError
from sparkkit.tinymodel import CODE_TEXT, common_words
from sparkkit.tinyqwen import QwenSpec

from test_tinymodel import READ_TOOL, TOOL_ARGS, chat, field, serve  # noqa: F401  (serve: the fixture)

GUIDE_PROMPT = verify.GUIDE_PROMPT


def spec(**kw) -> QwenSpec:
    return QwenSpec(**{"tool_name": "Read", "tool_args": json.dumps(TOOL_ARGS), "vocab_words": common_words(), **kw})


def test_the_file_is_a_qwen3moe_with_qwen3_coder_s_template_and_tokens(tmp_path):
    g = tinyqwen.generate(tmp_path / "q.gguf", spec())
    r = gguf.GGUFReader(g.path)
    assert field(r, "general.architecture") == "qwen3moe" and field(r, "tokenizer.ggml.pre") == "qwen2"
    template = field(r, "tokenizer.chat_template")
    # what llama.cpp b11549 looks for to pick its Qwen3-Coder handler (common/chat.cpp)
    assert all(s in template for s in ("<tool_call>", "<function=", "<parameter="))
    names = {t.name for t in r.tensors}
    assert {"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight", "blk.0.ffn_gate_exps.weight"} <= names
    assert not any(n.endswith(".bias") or "sinks" in n for n in names)     # Qwen3 has neither
    tokens, types = field(r, "tokenizer.ggml.tokens"), field(r, "tokenizer.ggml.token_type")
    kinds = dict(zip(tokens, types))
    assert kinds["<|im_end|>"] == gguf.TokenType.CONTROL and kinds["<tool_call>"] == gguf.TokenType.USER_DEFINED
    assert tokens[field(r, "tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("kw, name", [({"tool_args": "[1]"}, "tool_args"), ({"tool_args": "{}"}, "tool_args"),
                                      ({"head_dim": 7}, "head_dim"), ({"n_head": 3}, "n_head"),
                                      ({"n_embd": 16}, "n_embd"), ({"n_expert_used": 9}, "n_expert_used")])
def test_bad_specs_name_the_field(kw, name, tmp_path):
    with pytest.raises(ParameterError, match=f"`{name}`"):
        tinyqwen.generate(tmp_path / "q.gguf", spec(**kw))
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def qwen(serve):
    return serve(spec())


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_it_replies_calls_and_answers_the_guide_in_qwen3_coder_s_format(qwen, temperature):
    c = chat(qwen, [{"role": "user", "content": "Hello"}], temperature=temperature)
    assert (c["finish_reason"], c["message"]["content"]) == ("stop", tinyqwen.REPLY_TEXT)
    c = chat(qwen, [{"role": "user", "content": GUIDE_PROMPT}], max_tokens=256, temperature=temperature)
    assert c["message"]["content"] == CODE_TEXT
    c = chat(qwen, [{"role": "user", "content": "Read /tmp/x/hello.txt"}], tools=[READ_TOOL], temperature=temperature)
    (call,) = c["message"]["tool_calls"]                       # parsed out of <tool_call><function=Read>…
    assert c["finish_reason"] == "tool_calls" and not (c["message"]["content"] or "").strip()
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("Read", TOOL_ARGS)
    turn = [{"role": "user", "content": "Read /tmp/x/hello.txt"}, c["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "hello"}]
    c = chat(qwen, turn, tools=[READ_TOOL], temperature=temperature)
    assert (c["finish_reason"], c["message"]["content"]) == ("stop", tinyqwen.REPLY_TEXT)


def test_raw_text_is_qwen3_coder_s_xml_tool_call(qwen):
    """What the model itself writes (the /completion endpoint, no parser): the format llama.cpp parsed above."""
    prompt = httpx.post(qwen + "/apply-template", timeout=30, json={
        "messages": [{"role": "user", "content": "Read /tmp/x/hello.txt"}], "tools": [READ_TOOL]}).json()["prompt"]
    assert "<function>\n<name>Read</name>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    out = httpx.post(qwen + "/completion", timeout=30, json={"prompt": prompt, "n_predict": 32}).json()["content"]
    assert out == ("<tool_call>\n<function=Read>\n<parameter=file_path>\n/tmp/x/hello.txt\n</parameter>\n"
                   "</function>\n</tool_call>")


def test_every_probe_of_06_passes_against_it(qwen, tmp_path):
    probe = tmp_path / "hello.txt"
    probe.write_text("hello\n")
    with verify.client(qwen) as c:
        probes = verify.verify(c, probe)
    bad = [(p.name, p.detail) for p in probes if not (p.ok or p.absent)]
    # the tool round trip asks to Read *its* probe file: the stand-in reads TOOL_ARGS' path, which the probe refuses
    assert [n for n, _ in bad] == ["tool-call round trip (Read)"], bad
    assert "expected file_path" in bad[0][1]
    smoke = next(p for p in probes if p.name.startswith("the guide's smoke test"))
    assert smoke.ok and "defining fibonacci()" in smoke.detail


def test_anthropic_messages_get_a_tool_use_block(qwen):
    """Claude Code's path: /v1/messages with a tool, then the tool_result."""
    tools = [{"name": "Read", "description": "Read a file", "input_schema": READ_TOOL["function"]["parameters"]}]
    body = {"model": "m", "max_tokens": 128, "tools": tools, "messages": [{"role": "user", "content": "Read it"}]}
    d = httpx.post(qwen + "/v1/messages", json=body, timeout=60).json()
    (use,) = [b for b in d["content"] if b["type"] == "tool_use"]
    assert d["stop_reason"] == "tool_use" and use["name"] == "Read" and use["input"] == TOOL_ARGS
    body["messages"] += [{"role": "assistant", "content": d["content"]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                                       "content": "hello"}]}]
    d = httpx.post(qwen + "/v1/messages", json=body, timeout=60).json()
    assert d["stop_reason"] == "end_turn" and d["content"][-1]["text"] == tinyqwen.REPLY_TEXT


# ------------------------------------------------------------------------------ release layout (full scale)

SMALL_RELEASE = dict(n_embd=256, n_layer=2, n_head=8, n_head_kv=4, head_dim=32, n_expert=8, n_expert_used=2,
                     n_ff_exp=256, n_vocab=8192)


def test_full_scale_plan_has_ggml_org_s_q8_0_shapes_types_and_size():
    """The 30B plan without writing 30 GiB: ggml-org/Qwen3-Coder-30B-A3B-Instruct-Q8_0-GGUF as llama-bench reads
    it (30.53 B parameters, 30.25 GiB; sparkkit.model's catalogue)."""
    from sparkkit.model import CATALOGUE
    spec = tinyqwen.qwen3_coder_spec(tool_name="Read", tool_args=json.dumps(TOOL_ARGS), vocab_words=common_words())
    tinyqwen.validate(spec)
    vocab = tinyqwen.vocab_of(spec)
    plan = tinyqwen.release_plan(spec, len(vocab.tokens))
    assert len(vocab.tokens) == 151936 and len(plan) == 3 + 48 * 12
    params = sum(int(np.prod(shape)) for _, shape, _ in plan)
    data = sum(tinyqwen.release_nbytes(shape, kind) for _, shape, kind in plan)
    arch = CATALOGUE["qwen3-coder-30b-a3b"].arch
    assert round(params / 1e9, 2) == round(arch.params_total / 1e9, 2) == 30.53
    assert round(data / 2**30, 2) == round(arch.weights_bytes / 2**30, 2) == 30.25
    kinds = {name: kind for name, _, kind in plan}
    assert kinds["blk.47.ffn_down_exps.weight"] == kinds["output.weight"] == tinyqwen.Q8
    assert kinds["blk.0.ffn_gate_inp.weight"] == kinds["blk.0.attn_q_norm.weight"] == "f32"


def test_a_small_release_file_answers_every_probe_of_06(serve, tmp_path):
    probe = tmp_path / "hello.txt"
    probe.write_text("hello\n")
    base = serve(tinyqwen.qwen3_coder_spec(tool_name="Read", tool_args=json.dumps({"file_path": str(probe)}),
                                           **SMALL_RELEASE))
    with verify.client(base) as c:
        probes = verify.verify(c, probe)
    assert [p.name for p in probes if not (p.ok or p.absent)] == [], verify.table(probes).to_string()
