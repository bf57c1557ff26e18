"""The embedded tiny gpt-oss model: file contents, parameter checks, and real llama.cpp answers.

The server tests run llama.cpp (xllamacpp) in a subprocess: destroying an xllamacpp.Server soon
after creating it deadlocks, so the subprocess exits with os._exit on SIGTERM instead.
"""
import json
import socket
import subprocess
import sys
import time

import gguf
import numpy as np
import httpx
import pytest

from sparkkit import tinymodel
from sparkkit.tinymodel import (REPLY_REASONING, REPLY_TEXT, GeneratedModel, TinySpec, build_vocab, common_words,
                                generate, script_chain)

TOOL_ARGS = {"file_path": "/tmp/x/hello.txt"}
READ_TOOL = {"type": "function", "function": {
    "name": "Read", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}}

SERVER = r"""
import os, signal, sys, threading
import xllamacpp as xlc
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
p = xlc.CommonParams()
p.model.path = sys.argv[1]
p.hostnames = ["127.0.0.1"]
p.port = int(sys.argv[2])
p.n_ctx = 8192
p.model_alias = {"gpt-oss-120b"}
p.warmup = False
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
srv = xlc.Server(p)
stop.wait()
os._exit(0)
"""


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


# ------------------------------------------------------------------------------- the file

def test_generated_file_reads_back_as_gpt_oss(tmp_path):
    target = tmp_path / "nested" / "dir" / "tiny.gguf"
    g = generate(target)
    assert isinstance(g, GeneratedModel) and g.path == target and g.spec == TinySpec()
    assert g.size_bytes == target.stat().st_size and 150_000 < g.size_bytes < 300_000
    assert g.n_vocab == 343 and isinstance(g.seconds, float)
    print(f"generated in {g.seconds:.3f} s")
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny.gguf"]   # no .partial left

    r = gguf.GGUFReader(target)
    assert field(r, "general.architecture") == "gpt-oss"
    assert field(r, "gpt-oss.block_count") == 2
    assert field(r, "gpt-oss.attention.head_count") == 4
    assert field(r, "gpt-oss.attention.head_count_kv") == 2
    assert field(r, "gpt-oss.attention.sliding_window") == 128
    assert field(r, "gpt-oss.context_length") == 131072
    assert field(r, "gpt-oss.expert_count") == 4 and field(r, "gpt-oss.expert_used_count") == 2
    assert "<|channel|>" in field(r, "tokenizer.chat_template")
    assert field(r, "general.file_type") == gguf.LlamaFileType.MOSTLY_MXFP4_MOE
    assert len(field(r, "tokenizer.ggml.tokens")) == g.n_vocab
    experts = {t.name: t.tensor_type for t in r.tensors if "_exps.weight" in t.name}
    assert len(experts) == 6 and set(experts.values()) == {gguf.GGMLQuantizationType.MXFP4}


def test_spec_shapes_template_and_tool_land_in_the_file(tmp_path):
    spec = TinySpec(n_layer=4, n_head=8, n_head_kv=4, expert_type="f16", sliding_window=64, context_length=4096,
                    tool_name="Read", tool_args=json.dumps(TOOL_ARGS), chat_template="{{ '<|channel|>' }}")
    g = generate(tmp_path / "t.gguf", spec)
    r = gguf.GGUFReader(g.path)
    assert g.n_vocab == 345   # two more script entries: the call header and the arguments
    assert (field(r, "gpt-oss.block_count"), field(r, "gpt-oss.attention.head_count")) == (4, 8)
    assert field(r, "gpt-oss.attention.sliding_window") == 64 and field(r, "gpt-oss.context_length") == 4096
    assert field(r, "tokenizer.chat_template") == "{{ '<|channel|>' }}"
    assert field(r, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16
    assert tinymodel.byte_encode(json.dumps(TOOL_ARGS)) in field(r, "tokenizer.ggml.tokens")


def test_same_spec_same_bytes_other_seed_other_weights(tmp_path):
    a, b = generate(tmp_path / "a.gguf"), generate(tmp_path / "b.gguf")
    c = generate(tmp_path / "c.gguf", TinySpec(seed=1))
    assert a.path.read_bytes() == b.path.read_bytes() != c.path.read_bytes()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "tiny.gguf"
    target.write_bytes(b"old")

    def boom(self, **kw):
        raise OSError("disk full")
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        generate(target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]


@pytest.mark.parametrize("changes, field_name", [
    ({"n_embd": 48}, "n_embd"),                                   # mxfp4: multiple of 32
    ({"n_ff_exp": 40}, "n_ff_exp"),
    ({"n_embd": 16, "expert_type": "f16"}, "n_embd"),             # too small for the script
    ({"n_layer": 0}, "n_layer"),
    ({"n_head": 3}, "n_head"),                                    # not a multiple of n_head_kv
    ({"head_dim": 15}, "head_dim"),
    ({"n_expert_used": 5}, "n_expert_used"),
    ({"mode": "clever"}, "mode"),
    ({"expert_type": "q4_0"}, "expert_type"),
    ({"tool_name": "Read", "n_layer": 3}, "n_layer"),             # the flag head needs full attention
    ({"tool_name": "Read", "tool_args": "{not json"}, "tool_args"),
    ({"tool_name": "Read", "tool_args": "[1, 2]"}, "tool_args"),  # JSON, but not an object
    ({"tool_name": "no spaces"}, "tool_name"),
    ({"tool_name": "Read", "mode": "random"}, "tool_name"),
    ({"tool_args": '{"a": 1}'}, "tool_args"),                     # arguments without a tool
    ({"endless": True, "mode": "random"}, "endless"),
    ({"seed": -1}, "seed"),
    ({"context_length": True}, "context_length"),
    ({"tool_rules": (("zqspawn", "Agent", "{}"),)}, "tool_rules"),            # rules without a default tool
    ({"tool_name": "Read", "tool_rules": (("zqSpawn", "Agent", "{}"),)}, "tool_rules"),  # a capital inside
    ({"answer_rules": (("Fibonacci", ("a", "a")),)}, "answer_rules"),                   # a repeated piece
    ({"answer_rules": (("Fibonacci", "a b"),)}, "answer_rules"),                        # pieces not a tuple
    ({"answer_rules": (("final", ("a",)),)}, "answer_rules"),                           # a harmony word
    ({"answer_rules": (("Fibonacci", ("a",)),), "n_layer": 3}, "n_layer"),              # no full-attention last layer
    ({"tool_name": "Read", "tool_rules": (("zqa", "Agent", "{}"),), "answer_rules": (("zqa", ("a",)),)},
     "answer_rules"),                                                                   # a marker used twice
    ({"tool_name": "Read", "tool_rules": (("zqdev", "Agent", "{}"),)}, "tool_rules"),    # "de" splits it
    ({"tool_name": "Read", "tool_rules": (("zqa", "Agent", "{}"), ("zqa", "Bash", "{}"))}, "tool_rules"),
    ({"tool_name": "Read", "tool_rules": ("zqspawn",)}, "tool_rules"),
])
def test_bad_specs_are_refused_naming_the_field(tmp_path, changes, field_name):
    with pytest.raises(ValueError, match=f"`{field_name}`") as e:
        generate(tmp_path / "x.gguf", TinySpec(**changes))
    assert "accepted" in str(e.value)
    assert not any(tmp_path.iterdir())


def test_range_messages_say_what_would_work():
    with pytest.raises(ValueError, match="multiple of 32 for mxfp4 experts"):
        tinymodel.validate(TinySpec(n_embd=48))
    with pytest.raises(ValueError, match="tool_name needs an even n_layer"):
        tinymodel.validate(TinySpec(tool_name="Read", n_layer=3))
    with pytest.raises(ValueError, match=r">= 25 \(too small for the script"):
        tinymodel.validate(TinySpec(n_embd=16, expert_type="f32"))
    tinymodel.validate(TinySpec(n_embd=25, expert_type="f32"))   # the bound itself is fine


# ------------------------------------------------------------------------------- real llama.cpp

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """serve(spec) -> base URL of a real llama.cpp server for that model, in its own process."""
    procs: list[subprocess.Popen] = []
    root = tmp_path_factory.mktemp("tinyserve")

    def start(spec) -> str:
        from sparkkit import tinyqwen
        n = len(procs)
        model = (tinyqwen.generate if isinstance(spec, tinyqwen.QwenSpec) else generate)(root / f"model{n}.gguf", spec).path
        port = free_port()
        log = root / f"server{n}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model), str(port)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server not healthy after 30 s:\n{log.read_text(errors='replace')[-3000:]}")

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def plain(serve):
    return serve(TinySpec())


@pytest.fixture(scope="module")
def with_tool(serve):
    return serve(TinySpec(tool_name="Read", tool_args=json.dumps(TOOL_ARGS)))


def chat(base: str, messages: list, **body) -> dict:
    r = httpx.post(base + "/v1/chat/completions", timeout=60,
                   json={"model": "gpt-oss-120b", "messages": messages, "max_tokens": 64, **body})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0] | {"usage": r.json()["usage"]}


@pytest.mark.parametrize("temperature, seed", [(0.0, 1), (1.0, 1), (1.0, 2), (1.0, 3)])
def test_scripted_reply_at_any_temperature(plain, temperature, seed):
    c = chat(plain, [{"role": "user", "content": "Hello"}], temperature=temperature, seed=seed,
             top_k=0, top_p=1.0, min_p=0.0)
    assert c["finish_reason"] == "stop"
    assert c["message"]["content"] == REPLY_TEXT
    assert c["message"]["reasoning_content"] == REPLY_REASONING


def test_ignore_eos_runs_to_max_tokens(plain):
    c = chat(plain, [{"role": "user", "content": "Hello"}], ignore_eos=True, max_tokens=50)
    assert c["finish_reason"] == "length" and c["usage"]["completion_tokens"] == 50


def test_tool_model_calls_the_tool_then_answers(with_tool):
    messages = [{"role": "user", "content": "Read /tmp/x/hello.txt"}]
    c = chat(with_tool, messages, tools=[READ_TOOL], temperature=1.0)
    assert c["finish_reason"] == "tool_calls", c
    (call,) = c["message"]["tool_calls"]
    assert call["function"]["name"] == "Read"
    assert json.loads(call["function"]["arguments"]) == TOOL_ARGS

    messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": call["id"], "content": "hello"}]
    c = chat(with_tool, messages, tools=[READ_TOOL])
    assert c["finish_reason"] == "stop", c
    assert c["message"]["content"] == REPLY_TEXT and c["message"].get("tool_calls") in (None, [])


AGENT_TOOL = {"type": "function", "function": {"name": "Agent", "description": "start a subagent", "parameters": {
    "type": "object", "properties": {"description": {"type": "string"}, "prompt": {"type": "string"}},
    "required": ["description", "prompt"]}}}


GUIDE_PROMPT = "Write a Python function that returns the nth Fibonacci number."   # spark-guide §7


@pytest.mark.parametrize("quant", ["tiny", "release"])
def test_an_answer_rule_gives_the_guide_s_prompt_a_code_answer(serve, quant):
    """The marker word picks the scripted code answer where no tools are declared; other prompts keep
    REPLY_TEXT, and a prompt that declares tools still calls the tool (Claude Code's turns are unchanged)."""
    rule = ((tinymodel.CODE_MARKER, tinymodel.CODE_ANSWER),)
    spec = (release_spec(answer_rules=rule) if quant == "release" else
            TinySpec(tool_name="Read", tool_args=json.dumps(TOOL_ARGS), answer_rules=rule, vocab_words=common_words()))
    base = serve(spec)
    for temperature in (0.0, 1.0):
        c = chat(base, [{"role": "user", "content": GUIDE_PROMPT}], max_tokens=256, temperature=temperature)
        assert (c["finish_reason"], c["message"]["content"]) == ("stop", tinymodel.CODE_TEXT)
    assert chat(base, [{"role": "user", "content": "Say hello in one sentence."}])["message"]["content"] == REPLY_TEXT
    c = chat(base, [{"role": "user", "content": GUIDE_PROMPT}], tools=[READ_TOOL])
    assert c["finish_reason"] == "tool_calls" and c["message"]["tool_calls"][0]["function"]["name"] == "Read"
    import ast
    tree = ast.parse(tinymodel.CODE_TEXT.split("```python")[1].split("```")[0])
    assert [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)] == ["fibonacci"]


def test_tool_rules_pick_the_call_by_the_marker_in_the_prompt(serve):
    """main's prompt names the first marker, its Agent call's prompt the next (a nested agent), and a prompt
    with none calls tool_name: the embedded agent-loop session runs on this."""
    first = json.dumps({"description": "spawn", "prompt": "zqnest: go on"})
    nested = json.dumps({"description": "nested", "prompt": "read it"})
    base = serve(TinySpec(tool_name="Read", tool_args=json.dumps(TOOL_ARGS),
                          tool_rules=(("zqspawn", "Agent", first), ("zqnest", "Agent", nested)),
                          vocab_words=common_words()))
    for prompt, name, args in [("zqspawn: start an agent", "Agent", first), (json.loads(first)["prompt"], "Agent", nested),
                               (json.loads(nested)["prompt"], "Read", json.dumps(TOOL_ARGS)),
                               ("the word (zqspawn) inside", "Agent", first)]:
        c = chat(base, [{"role": "user", "content": prompt}], tools=[READ_TOOL, AGENT_TOOL], temperature=1.0)
        (call,) = c["message"]["tool_calls"]
        assert (call["function"]["name"], call["function"]["arguments"]) == (name, args), prompt
    messages = [{"role": "user", "content": "zqspawn: start an agent"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "launched"}]
    c = chat(base, messages, tools=[READ_TOOL, AGENT_TOOL])
    assert c["finish_reason"] == "stop" and c["message"]["content"] == REPLY_TEXT


def test_tool_model_without_tools_just_answers(with_tool):
    c = chat(with_tool, [{"role": "user", "content": "Hello"}])
    assert c["finish_reason"] == "stop" and c["message"]["content"] == REPLY_TEXT


def test_endless_model_runs_to_max_tokens_on_messages(serve):
    # /v1/messages ignores ignore_eos, so benchmarks of the Anthropic path need this variant.
    base = serve(TinySpec(endless=True))
    r = httpx.post(base + "/v1/messages", timeout=60,
                   json={"model": "claude-x", "max_tokens": 40, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["stop_reason"] == "max_tokens" and r.json()["usage"]["output_tokens"] == 40


# ------------------------------------------------------------------------------- word merges

PROSE = " read the file with this tool and tell me what it says before you run the command"


def test_common_words_are_package_data():
    words = common_words()
    assert len(words) > 1000 and "the" in words and "file" in words and all(" " not in w for w in words)


def test_word_merges_never_reach_a_script_token_or_a_marker():
    chain = script_chain(TinySpec(tool_name="Read"))
    vocab = build_vocab(chain, ("user", "users", "wants", "is", "issue", "functions", "file", "The", "There"))
    script = {tinymodel.byte_encode(t) for t in chain}
    # No merge may produce a script entry (" user", " is", "The" ...): prompts must never contain one.
    assert not {m.replace(" ", "") for m in vocab.merges} & script
    assert "There" not in vocab.index                  # its prefix chain would pass through "The"
    assert "Ġfunctions" not in vocab.index            # the tools marker must stay Ġ + "functions"
    assert "Ġfile" in vocab.index and "Ġusers" in vocab.index and "Ġissue" in vocab.index


@pytest.fixture(scope="module")
def with_words(serve):
    return serve(TinySpec(tool_name="Read", tool_args=json.dumps(TOOL_ARGS), vocab_words=common_words()))


def test_word_vocab_compresses_prose_and_keeps_the_script(with_words, with_tool):
    def count(base):
        return len(httpx.post(base + "/tokenize", json={"content": PROSE}, timeout=10).json()["tokens"])
    # Prefix-chain merges collide across words (" re"+"ad"), so this is ~2x, not o200k's ~4 chars/token.
    assert count(with_words) * 1.8 <= count(with_tool)
    c = chat(with_words, [{"role": "user", "content": PROSE}], temperature=1.0)
    assert c["message"]["content"] == REPLY_TEXT and c["message"]["reasoning_content"] == REPLY_REASONING
    c = chat(with_words, [{"role": "user", "content": PROSE}], tools=[READ_TOOL])
    assert c["finish_reason"] == "tool_calls" and json.loads(c["message"]["tool_calls"][0]["function"]["arguments"]) == TOOL_ARGS


# ------------------------------------------------------------------------------- release layout (full scale)

from sparkkit.tinymodel import GPT_OSS_SHAPES, Layout, _Release, gpt_oss_spec, pad_vocab  # noqa: E402

QT = gguf.GGMLQuantizationType
SMALL_RELEASE = dict(n_embd=256, n_layer=2, n_head=8, n_head_kv=4, head_dim=32, n_expert=4, n_ff_exp=256,
                     n_vocab=4096)


def release_spec(**changes) -> TinySpec:
    return gpt_oss_spec("gpt-oss-120b", tool_name="Read", tool_args=json.dumps(TOOL_ARGS), **{**SMALL_RELEASE, **changes})


def test_full_scale_plan_has_the_release_shapes_types_and_size():
    # The 120b plan without writing 59 GiB: tensor count, parameters and bytes as llama.cpp reads ggml-org's file.
    spec = gpt_oss_spec("gpt-oss-120b", tool_name="Read", tool_args=json.dumps(TOOL_ARGS))
    vocab = pad_vocab(build_vocab(script_chain(spec), spec.vocab_words), spec.n_vocab)
    rel = _Release(spec, vocab)
    assert len(vocab.tokens) == 201088 and len(rel.plan) == 687
    params = sum(int(np.prod(shape)) for _, shape, _ in rel.plan)
    data = sum(rel.nbytes(shape, kind) for _, shape, kind in rel.plan)
    assert round(params / 1e9, 2) == 116.83
    assert round(data / 2**30, 2) == 59.02
    kinds = {name: kind for name, _, kind in rel.plan}
    assert kinds["token_embd.weight"] == kinds["output.weight"] == kinds["blk.0.attn_q.weight"] == QT.Q8_0
    assert kinds["blk.35.ffn_down_exps.weight"] == QT.MXFP4
    assert not isinstance(kinds["blk.0.ffn_gate_inp.weight"], QT) and not isinstance(kinds["blk.0.attn_sinks.weight"], QT)
    assert GPT_OSS_SHAPES["gpt-oss-20b"] == {"n_layer": 24, "n_expert": 32}


def test_release_file_keeps_the_script_exact_and_the_reserved_dims_unwritten(tmp_path):
    spec = release_spec()
    g = generate(tmp_path / "r.gguf", spec)
    r = gguf.GGUFReader(g.path)
    t = {x.name: x for x in r.tensors}
    assert g.n_vocab == 4096 == len(field(r, "tokenizer.ggml.tokens"))
    assert t["token_embd.weight"].tensor_type == QT.Q8_0 and t["blk.1.ffn_up_exps.weight"].tensor_type == QT.MXFP4
    assert t["blk.0.attn_sinks.weight"].tensor_type == QT.F32
    assert g.size_bytes == target_size(r)
    vocab = pad_vocab(build_vocab(script_chain(spec), spec.vocab_words), spec.n_vocab)
    lay = Layout.of(len(vocab.script_ids))
    deq = lambda name: gguf.quants.dequantize(t[name].data, t[name].tensor_type)  # noqa: E731
    for il in range(spec.n_layer):
        assert not deq(f"blk.{il}.attn_output.weight")[:lay.noise0].any() or il == spec.n_layer - 1
        assert not deq(f"blk.{il}.ffn_down_exps.weight")[:, :lay.noise0, :].any()
        assert not np.asarray(t[f"blk.{il}.ffn_down_exps.bias"].data)[:, :lay.noise0].any()
        assert not np.asarray(t[f"blk.{il}.attn_output.bias"].data)[:lay.noise0].any()
    last = deq(f"blk.{spec.n_layer - 1}.attn_output.weight")[:lay.noise0]
    assert set(zip(*np.nonzero(last))) == {(lay.flag_tools, 0), (lay.flag_result, 1)}   # only the flag head writes
    emb, lm = deq("token_embd.weight"), deq("output.weight")
    ids = vocab.script_ids
    assert emb[ids[3], 3] == pytest.approx(16, rel=1e-3) and emb[vocab.index["dummy7"], lay.prompt] == pytest.approx(16, rel=1e-3)
    assert not lm[:, lay.noise0:].any()                  # the random computation never reaches the logits
    assert lm[ids[1], 0] == pytest.approx(40 / np.sqrt(256), rel=1e-3)
    assert np.count_nonzero(lm.any(axis=1)) <= len(ids) + 3   # only script targets, <|return|>, <|call|>


def target_size(r: gguf.GGUFReader) -> int:
    last = max(r.tensors, key=lambda x: x.data_offset)
    return int(last.data_offset + last.n_bytes)


def test_release_validation_names_the_field():
    with pytest.raises(ValueError, match="`expert_type`"):
        tinymodel.validate(release_spec(expert_type="f16"))
    with pytest.raises(ValueError, match="`n_embd`"):
        tinymodel.validate(release_spec(n_embd=272))
    with pytest.raises(ValueError, match="`quant`"):
        tinymodel.validate(TinySpec(quant="q2"))
    with pytest.raises(ValueError, match="`n_vocab`"):
        generate("/nonexistent/x.gguf", release_spec(n_vocab=100))


@pytest.fixture(scope="module")
def release(serve):
    return serve(release_spec())


def test_release_model_answers_every_agent_probe(release, tmp_path):
    from sparkkit import verify
    probe = tmp_path / "hello.txt"
    probe.write_text("hello\n")
    with verify.client(release) as c:
        model = verify.served_model(c)
        assert verify.chat(c, model)[0] and verify.chat_stream(c, model)[0]
        assert verify.anthropic_messages(c, model)[0]
    c = chat(release, [{"role": "user", "content": "Read /tmp/x/hello.txt"}], tools=[READ_TOOL], temperature=1.0)
    assert c["finish_reason"] == "tool_calls" and json.loads(c["message"]["tool_calls"][0]["function"]["arguments"]) == TOOL_ARGS
    c = chat(release, [{"role": "user", "content": "Hello"}], temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    assert c["message"]["content"] == REPLY_TEXT
