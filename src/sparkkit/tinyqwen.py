"""A tiny synthetic Qwen3-Coder GGUF (architecture `qwen3moe`) that the real llama.cpp loads and answers in
Qwen3-Coder's own format: the guide's coding alternative, as a stand-in.

The same idea as tinymodel's scripted gpt-oss (a one-hot "script position" path through the residual stream,
random weights elsewhere), in what Qwen3-Coder-30B-A3B is: an MoE of 128 experts, 8 used, RMS-normed
queries and keys, no attention biases or sinks, every layer full attention, ChatML turns
(`<|im_start|>role … <|im_end|>`), and XML tool calls:

    <tool_call>
    <function=Read>
    <parameter=file_path>
    /abs/path
    </parameter>
    </function>
    </tool_call>

which llama.cpp parses with its Qwen3-Coder handler (chosen by the template's `<tool_call>`, `<function=` and
`<parameter=`). The scripted model answers REPLY_TEXT; calls `tool_name` when the request declares tools and
holds no tool result yet; and gives CODE_TEXT (tinymodel.CODE_ANSWER) to the guide's Fibonacci prompt.

How it decides without attention sinks: the last layer's head 0 has two query/key directions in the
lowest-frequency RoPE pairs (so scores barely depend on distance). A generated (script) token queries the
*sink* direction, which only `<|im_start|>` keys have: all its attention goes there, where the marker values
are zero, so the script runs on untouched. A prompt token queries the *uniform* direction, which every key
has: at the last prompt token, where the first answer token is chosen, head 0 averages the marker dims
(`<function>`: a tool is declared, `<tool_response>`: a result exists, the code marker) into flag dims that
the LM head weighs. Queries and keys are RMS-normed per head, so those directions are exact whatever the
residual's scale.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .errors import ParameterError, check_int
from .tinymodel import (CODE_ANSWER, CODE_MARKER, MAG, N_NOISE_MIN, GeneratedModel, Layout, _check_marker, _rnd,
                        _Pools, _q8_rows, build_vocab, common_words, pad_vocab, script_embeddings, stream_tensors,
                        write_in_place)

ARCH = "qwen3moe"
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen's own added tokens (not special: their text is part of the answer), and "<function>", which this
# stand-in's tokenizer keeps whole so each declared tool marks the prompt once.
ADDED = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<function>")
REPLY = ["Hello!", " This", " is", " tiny-qwen3-coder", " speaking."]
REPLY_TEXT = "".join(REPLY)
# gains of the flags (their values: 80 x the marker's share of the context, after RMS norm)
# (the code answer's tools penalty stays within a Q8_0 block's range of its own gain, so the release's
# quantized LM head keeps both)
TOOL_GAIN, RESULT_GAIN, CODE_GAIN, CODE_TOOLS_PENALTY = 20000.0, 2.0e6, 6000.0, -60000.0
QUANTS = ("tiny", "release")

# A compact template in Qwen3-Coder's format (ChatML; tools listed as <function> blocks in the system
# turn; calls as <tool_call><function=…><parameter=…>; results as <tool_response> in a user turn),
# written for sparkkit; the published model's own template renders the same shapes with more prose.
QWEN3_CODER_TEMPLATE = r"""
{%- set sys = messages[0].content if messages and messages[0].role == "system" else none -%}
{%- set rest = messages[1:] if sys is not none else messages -%}
{%- if sys is not none or tools -%}
<|im_start|>system
{{- "\n" + (sys if sys is string else (sys | map(attribute="text") | join("\n"))) if sys is not none else "\nYou are a helpful coding assistant." -}}
{%- if tools %}

# Tools

You have access to the following functions:

<tools>
{%- for t in tools %}{% set f = t.function if t.function is defined else t %}
<function>
<name>{{ f.name }}</name>
<description>{{ (f.description or "") | trim }}</description>
<parameters>{{ f.parameters | tojson }}</parameters>
</function>
{%- endfor %}
</tools>

If you choose to call a function ONLY reply in the following format with NO suffix:

<tool_call>
<function=example_function_name>
<parameter=example_parameter_1>
value_1
</parameter>
</function>
</tool_call>
{%- endif %}<|im_end|>
{% endif -%}
{%- for m in rest -%}
{%- if m.role == "assistant" -%}
<|im_start|>assistant
{%- if m.content is string and m.content | trim %}
{{ m.content | trim }}{% endif -%}
{%- for c in (m.tool_calls or []) %}{% set c = c.function if c.function is defined else c %}
<tool_call>
<function={{ c.name }}>
{% for k, v in (c.arguments | items if c.arguments is mapping else []) -%}
<parameter={{ k }}>
{{ v if v is string else v | tojson }}
</parameter>
{% endfor -%}
</function>
</tool_call>
{%- endfor %}<|im_end|>
{% elif m.role == "tool" -%}
{%- if loop.first or loop.previtem.role != "tool" %}<|im_start|>user
{% endif -%}
<tool_response>
{{ m.content if m.content is string else (m.content | map(attribute="text") | join("\n")) }}
</tool_response>
{% if loop.last or loop.nextitem.role != "tool" %}<|im_end|>
{% endif -%}
{%- else -%}
<|im_start|>{{ m.role }}
{{ m.content if m.content is string else (m.content | map(attribute="text") | join("\n")) }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
"""


@dataclass(frozen=True)
class QwenSpec:
    """Shapes and behaviour of the tiny Qwen3-Coder; the defaults give a ~1 MiB test model."""
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 32            # the flag head's two directions sit in the two lowest-frequency RoPE pairs
    n_expert: int = 8
    n_expert_used: int = 2
    n_ff_exp: int = 32
    context_length: int = 262144  # Qwen3-Coder-30B-A3B's native context
    rope_freq_base: float = 10_000_000.0
    tool_name: str | None = None  # call this tool (its arguments: tool_args) when tools are declared, no result yet
    tool_args: str = "{}"         # JSON object text; each value becomes one <parameter=…>
    code_answer: bool = True      # the guide's Fibonacci prompt gets CODE_ANSWER
    vocab_words: tuple[str, ...] = ()
    seed: int = 0
    name: str = "tiny-qwen3-coder (synthetic weights, for tests)"
    quant: str = "tiny"           # tiny: F16/F32 in numpy | release: ggml-org's Q8_0 GGUF's types, streamed
    n_vocab: int = 0              # pad the vocab to this size (release: Qwen's 151936)


# Qwen3-Coder-30B-A3B-Instruct's shapes (config.json, as sparkkit.model's catalogue quotes it) in the tensor types
# of ggml-org/Qwen3-Coder-30B-A3B-Instruct-Q8_0-GGUF: Q8_0 matrices, F32 norms and router.
QWEN3_CODER_SHAPES = dict(n_embd=2048, n_layer=48, n_head=32, n_head_kv=4, head_dim=128, n_expert=128,
                          n_expert_used=8, n_ff_exp=768, n_vocab=151936, context_length=262144, quant="release")


def qwen3_coder_spec(**changes) -> QwenSpec:
    """A scripted spec with the exact tensor shapes and types of ggml-org's Qwen3-Coder-30B-A3B Q8_0 GGUF."""
    base = dict(QWEN3_CODER_SHAPES, name="qwen3-coder-30b-a3b shapes, scripted weights (sparkkit stand-in)")
    return QwenSpec(**{**base, **changes})


def _call_body(spec: QwenSpec) -> str:
    args = json.loads(spec.tool_args)
    params = "".join(f"<parameter={k}>\n{v if isinstance(v, str) else json.dumps(v)}\n</parameter>\n"
                     for k, v in args.items())
    return f"\n<function={spec.tool_name}>\n{params}</function>\n"


def script_chain(spec: QwenSpec) -> list[str]:
    """The reply, then the tool call, then the code answer, as vocab entries in chain order."""
    chain = list(REPLY)
    if spec.tool_name:
        chain += ["<tool_call>", _call_body(spec), "</tool_call>"]
    if spec.code_answer:
        chain += list(CODE_ANSWER)
    return chain


def layout(spec: QwenSpec) -> tuple[Layout, int, int]:
    """(the residual layout, the sink dim, the first noise dim): tinymodel's layout with one rule (the code
    marker) and one more dim, set only by <|im_start|>."""
    lay = Layout.of(len(script_chain(spec)), 1 if spec.code_answer else 0)
    return lay, lay.noise0, lay.noise0 + 1


def validate(spec: QwenSpec) -> None:
    from .errors import check_choice
    check_choice("quant", spec.quant, QUANTS)
    check_int("n_vocab", spec.n_vocab, 0)
    if spec.quant == "release":
        for field in ("n_embd", "n_ff_exp"):
            if getattr(spec, field) % 32:
                raise ParameterError(field, getattr(spec, field), "a multiple of 32 with quant 'release' (Q8_0 blocks)")
        if (spec.n_head * spec.head_dim) % 32:
            raise ParameterError("head_dim", spec.head_dim, "a value with n_head × head_dim a multiple of 32")
    for field in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_expert", "n_ff_exp", "context_length"):
        check_int(field, getattr(spec, field), 1)
    check_int("n_expert_used", spec.n_expert_used, 1, spec.n_expert)
    if check_int("head_dim", spec.head_dim, 8) % 2:
        raise ParameterError("head_dim", spec.head_dim, "an even integer >= 8 (RoPE pairs; the flag head's two)")
    if spec.n_head % spec.n_head_kv:
        raise ParameterError("n_head", spec.n_head, f"a multiple of n_head_kv ({spec.n_head_kv})")
    if spec.tool_name is not None:
        try:
            args = json.loads(spec.tool_args)
        except ValueError:
            args = None
        if not isinstance(args, dict) or not args:
            raise ParameterError("tool_args", spec.tool_args, 'a JSON object with at least one argument, e.g. '
                                 '\'{"file_path": "/tmp/x"}\' (each is one <parameter=…>)')
    if spec.code_answer:
        _check_marker("code_answer", CODE_MARKER)
    lay, _sink, noise0 = layout(spec)
    if spec.n_embd < noise0 + N_NOISE_MIN:
        raise ParameterError("n_embd", spec.n_embd, f">= {noise0 + N_NOISE_MIN} (the script, the marker and sink "
                             f"dims and {N_NOISE_MIN} noise dims)")


def vocab_of(spec: QwenSpec):
    return pad_vocab(build_vocab(script_chain(spec), spec.vocab_words, (CODE_MARKER,) if spec.code_answer else (),
                                 base_words=(), specials=SPECIALS, added=ADDED), spec.n_vocab)


def _columns(spec: QwenSpec, vocab) -> tuple[np.ndarray, np.ndarray]:
    """token_embd and the LM head: the bigram chain, the decision at the last prompt token, the markers."""
    E, n_vocab, ids, index = spec.n_embd, len(vocab.tokens), vocab.script_ids, vocab.index
    lay, sink, _noise0 = layout(spec)
    K = lay.k
    emb = script_embeddings(n_vocab, E, ids, lay)
    emb[index["<|im_start|>"], sink] = MAG
    emb[index["<function>"], lay.mark_tools] = MAG
    emb[index["<tool_response>"], lay.mark_result] = MAG
    if spec.code_answer:
        emb[index[CODE_MARKER], lay.mark_rule(0)] = MAG
        emb[index["Ġ" + CODE_MARKER], lay.mark_rule(0)] = MAG
    lm = np.zeros((n_vocab, E), np.float32)
    alpha = 40.0 / np.sqrt(E)
    end = index["<|im_end|>"]
    n_reply = len(REPLY)
    ends = [n_reply - 1]
    lm[ids[0], lay.prompt] = alpha                       # any prompt token -> the reply's first word
    at = n_reply
    if spec.tool_name:
        call = at
        lm[ids[call], lay.flag_tools] = TOOL_GAIN        # tools declared, no result yet: call
        lm[ids[call], lay.flag_result] = -RESULT_GAIN
        ends.append(call + 2)
        at += 3
    if spec.code_answer:
        lm[ids[at], lay.flag_rule(0)] = CODE_GAIN        # the code marker, no tools declared: the code answer
        lm[ids[at], lay.flag_tools] = CODE_TOOLS_PENALTY
        lm[ids[at], lay.prompt] = -alpha / 2
        ends.append(K - 1)
    for pos in range(K - 1):
        if pos not in ends:
            lm[ids[pos + 1], pos] = alpha
    for pos in ends:
        lm[end, pos] = alpha
    return emb, lm


def _block(spec: QwenSpec, layer: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    E, H, HKV, D, X, FF = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_expert, spec.n_ff_exp
    se, sa, sf = 1 / np.sqrt(E), 0.5 / np.sqrt(H * D), 0.5 / np.sqrt(FF)
    t = {"attn_q.weight": _rnd(rng, H * D, E, scale=se), "attn_k.weight": _rnd(rng, HKV * D, E, scale=se),
         "attn_v.weight": _rnd(rng, HKV * D, E, scale=se), "attn_output.weight": _rnd(rng, E, H * D, scale=sa),
         "attn_q_norm.weight": np.ones(D, np.float32), "attn_k_norm.weight": np.ones(D, np.float32),
         "ffn_gate_inp.weight": _rnd(rng, X, E, scale=se),
         "ffn_gate_exps.weight": _rnd(rng, X, FF, E, scale=se), "ffn_up_exps.weight": _rnd(rng, X, FF, E, scale=se),
         "ffn_down_exps.weight": _rnd(rng, X, E, FF, scale=sf)}
    lay, sink, noise0 = layout(spec)
    t["attn_output.weight"][:noise0, :] = 0.0        # nothing but the flag head writes the reserved dims
    t["ffn_down_exps.weight"][:, :noise0, :] = 0.0
    if layer == spec.n_layer - 1:
        _flag_head(spec, lay, sink, t)
    return t


def _flag_head(spec: QwenSpec, lay: Layout, sink: int, t: dict[str, np.ndarray]) -> None:
    H, HKV, D = spec.n_head, spec.n_head_kv, spec.head_dim
    a, b = D // 2 - 1, D // 2 - 2                     # NEOX pairs (i, i + D/2): the two lowest frequencies
    wq, wk, wv, wo = t["attn_q.weight"], t["attn_k.weight"], t["attn_v.weight"], t["attn_output.weight"]
    wq[0:D, :] = 0.0
    wk[0:D, :] = 0.0
    script = list(range(lay.k))
    wq[a, script] = 1.0                               # a generated token asks for the sink
    wq[b, lay.prompt] = 1.0                           # a prompt token asks for everyone
    wk[a, sink] = 1.0                                 # only <|im_start|> answers the sink ...
    wk[b, script + [lay.prompt]] = 1.0                # ... every token the uniform direction
    for w in ("attn_q_norm.weight", "attn_k_norm.weight"):
        t[w][a] = 4.0                                 # sink score sqrt(D/2) * 16 ~ 64: all of it at the sinks
        t[w][b] = 1.0                                 # uniform score sqrt(D) ~ 6 (the sinks' 4: a little less)
    n = 2 + lay.rules
    wv[0:n, :] = 0.0
    wv[0, lay.mark_tools] = 1.0
    wv[1, lay.mark_result] = 1.0
    for r in range(lay.rules):
        wv[2 + r, lay.mark_rule(r)] = 1.0
    for h in range(H // HKV):                         # q heads sharing kv-head 0 must not leak those channels
        wo[:, h * D:h * D + n] = 0.0
    wo[lay.flag_tools, 0] = 80.0
    wo[lay.flag_result, 1] = 80.0
    for r in range(lay.rules):
        wo[lay.flag_rule(r), 2 + r] = 80.0


def _add_metadata(w: gguf.GGUFWriter, spec: QwenSpec, vocab) -> None:
    w.add_name(spec.name)
    w.add_block_count(spec.n_layer)
    w.add_context_length(spec.context_length)
    w.add_embedding_length(spec.n_embd)
    w.add_feed_forward_length(spec.n_ff_exp * spec.n_expert_used)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    w.add_key_length(spec.head_dim)
    w.add_value_length(spec.head_dim)
    w.add_rope_freq_base(spec.rope_freq_base)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(spec.n_expert)
    w.add_expert_used_count(spec.n_expert_used)
    w.add_expert_feed_forward_length(spec.n_ff_exp)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if spec.quant == "release" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    w.add_eos_token_id(vocab.index["<|im_end|>"])
    w.add_pad_token_id(vocab.index["<|endoftext|>"])
    w.add_bos_token_id(vocab.index["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(QWEN3_CODER_TEMPLATE)


def generate(path: str | os.PathLike, spec: QwenSpec = QwenSpec(), progress=None) -> GeneratedModel:
    """Write the tiny Qwen3-Coder GGUF for `spec` to `path` (via `<path>.partial`, renamed into place)."""
    t0 = time.perf_counter()
    validate(spec)
    vocab = vocab_of(spec)
    if spec.quant == "release":
        final = write_in_place(path, lambda partial: _write_release(partial, spec, vocab, progress))
        return GeneratedModel(final, final.stat().st_size, len(vocab.tokens), time.perf_counter() - t0, spec)
    rng = np.random.default_rng(spec.seed)
    emb, lm = _columns(spec, vocab)
    _lay, _sink, noise0 = layout(spec)
    emb[:, noise0:] = _rnd(rng, len(vocab.tokens), spec.n_embd - noise0, scale=0.02)
    def write(partial: Path) -> None:
        w = gguf.GGUFWriter(partial, ARCH)
        try:
            _add_metadata(w, spec, vocab)
            w.add_tensor("token_embd.weight", emb.astype(np.float16))
            w.add_tensor("output_norm.weight", np.ones(spec.n_embd, np.float32))
            w.add_tensor("output.weight", lm)                # F32: the flag gains exceed F16
            ones = np.ones(spec.n_embd, np.float32)
            for il in range(spec.n_layer):
                t = _block(spec, il, rng)
                p = f"blk.{il}."
                w.add_tensor(p + "attn_norm.weight", ones)
                for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                    w.add_tensor(p + name + ".weight", t[name + ".weight"].astype(np.float16))
                w.add_tensor(p + "attn_q_norm.weight", t["attn_q_norm.weight"])
                w.add_tensor(p + "attn_k_norm.weight", t["attn_k_norm.weight"])
                w.add_tensor(p + "ffn_norm.weight", ones)
                w.add_tensor(p + "ffn_gate_inp.weight", t["ffn_gate_inp.weight"])
                for name in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
                    w.add_tensor(p + name + ".weight", t[name + ".weight"].astype(np.float16))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
    final = write_in_place(path, write)
    return GeneratedModel(final, final.stat().st_size, len(vocab.tokens), time.perf_counter() - t0, spec)


def embedded_spec(probe: Path) -> QwenSpec:
    """The Qwen3-Coder stand-in sparkkit serves: Read on the probe file, the code answer, the common words."""
    return QwenSpec(tool_name="Read", tool_args=json.dumps({"file_path": str(probe)}), vocab_words=common_words())


__all__ = ["QwenSpec", "generate", "embedded_spec", "REPLY_TEXT", "QWEN3_CODER_TEMPLATE"]


# ------------------------------------------------------------------------------------------ release layout

Q8 = gguf.GGMLQuantizationType.Q8_0


def release_plan(spec: QwenSpec, n_vocab: int) -> list[tuple[str, tuple[int, ...], object]]:
    """(name, shape, Q8_0 or 'f32') of every tensor, in the GGUF's order."""
    E, H, HKV, D, X, FF = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_expert, spec.n_ff_exp
    plan: list[tuple[str, tuple[int, ...], object]] = [("token_embd.weight", (n_vocab, E), Q8),
                                                        ("output_norm.weight", (E,), "f32"),
                                                        ("output.weight", (n_vocab, E), Q8)]
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        plan += [(p + "attn_norm.weight", (E,), "f32"), (p + "attn_q.weight", (H * D, E), Q8),
                 (p + "attn_k.weight", (HKV * D, E), Q8), (p + "attn_v.weight", (HKV * D, E), Q8),
                 (p + "attn_output.weight", (E, H * D), Q8), (p + "attn_q_norm.weight", (D,), "f32"),
                 (p + "attn_k_norm.weight", (D,), "f32"), (p + "ffn_norm.weight", (E,), "f32"),
                 (p + "ffn_gate_inp.weight", (X, E), "f32"), (p + "ffn_gate_exps.weight", (X, FF, E), Q8),
                 (p + "ffn_up_exps.weight", (X, FF, E), Q8), (p + "ffn_down_exps.weight", (X, E, FF), Q8)]
    return plan


def release_nbytes(shape: tuple[int, ...], kind: object) -> int:
    n = int(np.prod(shape))
    return n // 32 * 34 if kind == Q8 else n * 4


def _release_chunks(spec: QwenSpec, vocab, name: str, shape: tuple[int, ...], kind: object, pools: _Pools,
                    rng: np.random.Generator, heads: tuple[np.ndarray, np.ndarray], blocks: dict[str, np.ndarray]):
    """The tensor's bytes in pieces: computed where scripted, cut from the random block pools elsewhere."""
    lay, sink, noise0 = layout(spec)
    head_cols = min(spec.n_embd, -(-noise0 // 32) * 32)
    if kind == "f32":
        if name.endswith("ffn_gate_inp.weight"):
            yield rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / np.sqrt(spec.n_embd))
        elif name in blocks:
            yield blocks[name]
        else:
            yield np.ones(shape, np.float32)
        return
    if name in ("token_embd.weight", "output.weight"):
        nv, E = shape
        nb, hb = E // 32, head_cols // 32
        head = heads[0 if name == "token_embd.weight" else 1]
        step = max(1, (32 << 20) // (nb * 34))
        for r0 in range(0, nv, step):
            n = min(step, nv - r0)
            if name == "output.weight":
                rows = np.zeros((n, nb, 34), np.uint8)      # the random computation never reaches the logits
            else:
                rows = pools.take(Q8, n * nb).reshape(n, nb, 34).copy()
            rows[:, :hb, :] = head[r0:r0 + n]
            yield rows
        return
    if name.endswith("ffn_down_exps.weight"):
        X, E, FF = shape
        rb = FF // 32
        for _ in range(X):                                  # per expert: the reserved rows zero, the rest small
            yield bytes(noise0 * rb * 34)
            yield pools.take(Q8, (E - noise0) * rb, writer=True)
        return
    if name.endswith("_exps.weight"):
        n = int(np.prod(shape)) // 32
        for start in range(0, n, 1 << 22):
            yield pools.take(Q8, min(1 << 22, n - start))
        return
    rows_n, cols = shape                                    # attention matrices
    writer = name.endswith("attn_output.weight")
    t = pools.take(Q8, rows_n * (cols // 32), writer=writer).reshape(rows_n, cols // 32, 34).copy()
    if writer:
        t[:noise0] = 0                                      # nothing but the flag head writes the reserved dims
    if name in blocks:                                      # the flag head's rows, computed
        rows, at = blocks[name]
        t[at:at + len(rows)] = rows
        if writer:                                          # q heads sharing kv-head 0 must not leak its channels
            n = 2 + lay.rules
            for h in range(spec.n_head // spec.n_head_kv):
                for c in range(h * spec.head_dim, h * spec.head_dim + n):
                    t[:, c // 32, 2 + c % 32] = 0
            for r, row in zip(*blocks[name + "#flags"]):
                t[r] = row
    yield t


def _release_flag_head(spec: QwenSpec) -> dict:
    """The last layer's flag head as quantized rows (as _flag_head, at full width)."""
    E, H, D = spec.n_embd, spec.n_head, spec.head_dim
    lay, sink, _noise0 = layout(spec)
    last = f"blk.{spec.n_layer - 1}."
    a, b = D // 2 - 1, D // 2 - 2
    q = np.zeros((D, E), np.float32)
    q[a, :lay.k] = 1.0
    q[b, lay.prompt] = 1.0
    k = np.zeros((D, E), np.float32)
    k[a, sink] = 1.0
    k[b, list(range(lay.k)) + [lay.prompt]] = 1.0
    n = 2 + lay.rules
    v = np.zeros((n, E), np.float32)
    v[0, lay.mark_tools] = v[1, lay.mark_result] = 1.0
    for r in range(lay.rules):
        v[2 + r, lay.mark_rule(r)] = 1.0
    gain = 80.0 * np.sqrt(64.0 / E)                        # 80 at the tiny model's width, as gpt-oss's release
    flag_rows = [lay.flag_tools, lay.flag_result] + [lay.flag_rule(r) for r in range(lay.rules)]
    o = np.zeros((len(flag_rows), H * D), np.float32)
    for i in range(len(flag_rows)):
        o[i, i] = gain
    norm = np.ones(D, np.float32)
    norm[a], norm[b] = 4.0, 1.0
    return {last + "attn_q.weight": (_q8_rows(q), 0), last + "attn_k.weight": (_q8_rows(k), 0),
            last + "attn_v.weight": (_q8_rows(v), 0), last + "attn_output.weight": (np.zeros((0, H * D // 32, 34),
                                                                                             np.uint8), 0),
            last + "attn_output.weight#flags": (flag_rows, list(_q8_rows(o))),
            last + "attn_q_norm.weight": norm, last + "attn_k_norm.weight": norm.copy()}


def _write_release(partial: Path, spec: QwenSpec, vocab, progress=None) -> None:
    rng = np.random.default_rng(spec.seed)
    plan = release_plan(spec, len(vocab.tokens))
    lay, _sink, noise0 = layout(spec)
    head_cols = min(spec.n_embd, -(-noise0 // 32) * 32)
    emb, lm = _columns(spec, vocab)
    heads = (_q8_rows(emb[:, :head_cols]), _q8_rows(lm[:, :head_cols]))
    blocks = _release_flag_head(spec)
    pools = _Pools(rng, 1 << 21)
    w = gguf.GGUFWriter(partial, ARCH)
    try:
        _add_metadata(w, spec, vocab)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for name, shape, kind in plan:
            w.add_tensor_info(name, shape, np.dtype(np.float32), release_nbytes(shape, kind),
                              raw_dtype=kind if kind == Q8 else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        stream_tensors(w, plan, release_nbytes, lambda name, shape, kind: _release_chunks(
            spec, vocab, name, shape, kind, pools, rng, heads, blocks), progress)
    finally:
        w.close()
