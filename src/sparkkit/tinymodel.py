"""A tiny synthetic gpt-oss GGUF that the real llama.cpp loads and answers with valid harmony.

Runbook 03's "embedded" model for hosts without a GB10 (CI, laptops): every later step runs real
llama.cpp code paths against it in seconds. Port of make_tiny_gptoss.py (research/embedded-engine.md,
Appendix A); the same spec gives a byte-identical file. Structure mirrors gpt-oss-20b/120b (MoE with
MXFP4 experts and biases, attention sinks, SWA/full alternation, YaRN, o200k_harmony special tokens);
the harmony template's "<|channel|>" makes llama.cpp pick its GPT-OSS chat handler.

mode "scripted": weights are random except for a one-hot "script position" path through the residual
stream, so greedy and sampled decoding alike (runner-up logprob ~ -38 at T=1) emit
`<|channel|>analysis<|message|>REPLY_REASONING<|end|><|start|>assistant<|channel|>final<|message|>
REPLY_TEXT<|return|>`. After REPLY_TEXT the runner-up loops back to its first word (`ignore_eos` runs
to max_tokens); `endless` makes that loop first choice. With `tool_name`, a prompt that declares tools
and holds no tool result yet gets `<|start|>assistant to=functions.NAME<|channel|>commentary json
<|message|>ARGS<|call|>` instead; `tool_rules` pick another tool by a marker word in the prompt, and
`answer_rules` another final answer (CODE_ANSWER for the guide's Fibonacci prompt) where no tools are
declared. mode "random": garbage, which llama.cpp's gpt-oss parser rejects
(HTTP 500) on chat/messages endpoints; only /completion and the tokenizer/template endpoints work.

quant "release" (`gpt_oss_spec("gpt-oss-120b")`): the same script at the real gpt-oss shapes and in the
tensor types of ggml-org's MXFP4 release (Q8_0 attention, embeddings and head; MXFP4 experts; F32
norms, biases, sinks and router), vocab padded to the real 201088 entries. The tensor infos go
through GGUFWriter and the data is streamed: the random parts are cut from a pool of random
quantized blocks (research/gpu-standin.md, Appendix A), the scripted parts (the first block of each
embedding/LM-head row, the rows that write the reserved residual dims) are computed, so a 59 GiB
gpt-oss-120b-shaped file takes about as long as the disk needs to take it.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from .errors import ParameterError, check_choice, check_int

# Compact harmony template (published gpt-oss "harmony" format: system header, developer
# instructions + "functions" namespace, analysis/final channels, tool calls and tool results).
HARMONY_TEMPLATE = r"""
{%- if reasoning_effort is not defined %}{%- set reasoning_effort = "medium" %}{%- endif %}
{{- "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: " + reasoning_effort + "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message." }}
{%- if tools %}{{- "\nCalls to these tools must go to the commentary channel: 'functions'." }}{%- endif %}
{{- "<|end|>" }}
{%- if messages and (messages[0].role == "system" or messages[0].role == "developer") %}
  {%- set developer_message = messages[0].content %}{%- set loop_messages = messages[1:] %}
{%- else %}
  {%- set developer_message = "" %}{%- set loop_messages = messages %}
{%- endif %}
{%- if developer_message or tools %}
  {{- "<|start|>developer<|message|>" }}
  {%- if developer_message %}{{- "# Instructions\n\n" + developer_message + "\n\n" }}{%- endif %}
  {%- if tools %}
    {{- "# Tools\n\n## functions\n\nnamespace functions {\n\n" }}
    {%- for tool in tools %}
      {%- set fn = tool.function if tool.function is defined else tool %}
      {{- "// " + (fn.description or "") + "\ntype " + fn.name + " = (_: " + (fn.parameters | tojson) + ") => any;\n\n" }}
    {%- endfor %}
    {{- "} // namespace functions" }}
  {%- endif %}
  {{- "<|end|>" }}
{%- endif %}
{%- set last_tool = namespace(name=none) %}
{%- for message in loop_messages %}
  {%- if message.role == "user" %}
    {{- "<|start|>user<|message|>" + message.content + "<|end|>" }}
  {%- elif message.role == "assistant" %}
    {%- if message.tool_calls %}
      {%- set tc = message.tool_calls[0].function if message.tool_calls[0].function is defined else message.tool_calls[0] %}
      {%- if message.thinking %}{{- "<|start|>assistant<|channel|>analysis<|message|>" + message.thinking + "<|end|>" }}{%- endif %}
      {%- set args = tc.arguments if tc.arguments is string else (tc.arguments | tojson) %}
      {{- "<|start|>assistant to=functions." + tc.name + "<|channel|>commentary json<|message|>" + args + "<|call|>" }}
      {%- set last_tool.name = tc.name %}
    {%- else %}
      {{- "<|start|>assistant<|channel|>final<|message|>" + (message.content or "") + "<|end|>" }}
    {%- endif %}
  {%- elif message.role == "tool" %}
    {{- "<|start|>functions." + (last_tool.name or "unknown") + " to=assistant<|channel|>commentary<|message|>" + (message.content | tojson) + "<|end|>" }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- "<|start|>assistant" }}{%- endif %}
""".strip()

# o200k_harmony special tokens that matter for the harmony format (CONTROL tokens).
SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>",
                  "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>"]

# Whole words built from byte tokens by prefix merges, so harmony header words and the tool
# markers tokenize to single tokens as in o200k. Order matters (merge rank).
WORDS = ["=assistant", "assistant", "functions", "analysis", "final", "commentary", "json",
         "user", "system", "developer", "Ġto"]

# The scripted reply: multi-character NORMAL tokens that no merge leads to, so prompts never contain
# them and each one marks a unique position in the chain. The server parses text, so
# "<|end|><|start|>..." as one NORMAL token reads exactly like the real special tokens.
SCRIPT_ANALYSIS_OPEN = "<|channel|>analysis<|message|>"
SCRIPT_REASONING = ["The", " user", " wants", " a", " reply."]
SCRIPT_FINAL_OPEN = "<|end|><|start|>assistant<|channel|>final<|message|>"
SCRIPT_CONTENT = ["Hello!", " This", " is", " tiny-gpt-oss", " speaking."]

REPLY_REASONING = "The user wants a reply."
REPLY_TEXT = "Hello! This is tiny-gpt-oss speaking."
assert "".join(SCRIPT_REASONING) == REPLY_REASONING and "".join(SCRIPT_CONTENT) == REPLY_TEXT

# The guide's smoke test (spark-guide §7: "Write a Python function that returns the nth Fibonacci number."):
# an answer rule gives the scripted models a real code answer for it, so 06's check that the answer is code
# (it parses and defines a function) is a check. Each piece is one unique token (the script cannot repeat one).
CODE_MARKER = "Fibonacci"
CODE_ANSWER = ("Here is an iterative version:\n\n```python\ndef fibonacci(n: int) -> int:",
               '\n    """Return the nth Fibonacci number (fibonacci(0) == 0, fibonacci(1) == 1)."""',
               "\n    if n < 0:\n        raise ValueError(\"n must be >= 0\")",
               "\n    a, b = 0, 1\n    for _ in range(n):",
               "\n        a, b = b, a + b",
               "\n    return a\n```")
CODE_TEXT = "".join(CODE_ANSWER)

MODES = ("scripted", "random")
EXPERT_TYPES = ("mxfp4", "f16", "f32")
QUANTS = ("tiny", "release")   # tiny: F16 dense tensors built in numpy; release: ggml-org's types, streamed
MAG = 16.0          # magnitude of the script/prompt/marker dims in the embeddings
RULE_GAIN = 6000.0   # LM-head weight of a tool rule's flag: 2x the tools flag, 1/10 of the result flag (a result ends every call)
N_NOISE_MIN = 8     # dims left for the random "real" computation in scripted mode
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")   # OpenAI function-name rule
_WORD = re.compile(r"[A-Za-z0-9_]{2,}")


def common_words() -> tuple[str, ...]:
    """1,200 frequent words of Claude Code's prompts (package data; provenance in the file)."""
    from importlib.resources import files
    text = files("sparkkit").joinpath("data/tiny_vocab_words.txt").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return tuple(ln for ln in lines if _WORD.fullmatch(ln))


@dataclass(frozen=True)
class TinySpec:
    """Shapes and behaviour of the tiny model; the defaults give the 208 KiB test model."""
    n_embd: int = 64
    n_layer: int = 2           # even layers: sliding-window attention, odd layers: full attention
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    n_expert: int = 4
    n_expert_used: int = 2
    n_ff_exp: int = 64
    sliding_window: int = 128
    context_length: int = 131072
    expert_type: str = "mxfp4"     # mxfp4 | f16 | f32
    mode: str = "scripted"         # scripted | random
    tool_name: str | None = None   # scripted: call this tool when tools are declared, no result yet
    tool_args: str = "{}"          # JSON object text: the arguments of that call, verbatim
    # scripted, quant "tiny": (marker, tool, args) — a prompt holding the word MARKER calls TOOL with ARGS
    # instead (the first rule whose marker it holds). Markers chain agents: main's prompt names the
    # first, the args' prompt may name the next (nested subagents), a prompt with none calls tool_name.
    tool_rules: tuple[tuple[str, str, str], ...] = ()
    # scripted: (marker, pieces) — a prompt that holds the word MARKER and declares no tools gets the final
    # answer "".join(pieces) instead of REPLY_TEXT (each piece one token, all distinct); tiny and release
    answer_rules: tuple[tuple[str, tuple[str, ...]], ...] = ()
    endless: bool = False          # scripted: loop the reply forever instead of <|return|>
    seed: int = 0
    name: str = "tiny-gpt-oss (synthetic weights, for tests)"
    chat_template: str | None = None   # Jinja text to embed instead of HARMONY_TEMPLATE
    # Words given merges (" word" too), so prompts cost ~2x fewer tokens than one per byte
    # (Claude Code's first request: 63.7k -> 37.4k tokens); see common_words(). Words that
    # would reach a script token or a marker word are skipped.
    vocab_words: tuple[str, ...] = ()
    n_vocab: int = 0               # pad the vocab with unreachable dummy tokens to this size (0: no padding)
    quant: str = "tiny"            # tiny | release (ggml-org's MXFP4 release types, streamed; see gpt_oss_spec)


# The real gpt-oss shapes (openai/gpt-oss-{20b,120b} config.json; o200k_harmony has 201088 entries).
GPT_OSS_SHAPES = {
    "gpt-oss-120b": dict(n_layer=36, n_expert=128),
    "gpt-oss-20b": dict(n_layer=24, n_expert=32),
}


def gpt_oss_spec(model: str = "gpt-oss-120b", **changes) -> TinySpec:
    """A scripted spec with the exact tensor shapes and types of ggml-org's gpt-oss GGUF release
    (gpt-oss-120b: 59.02 GiB, 116.83 B parameters as llama.cpp reads it)."""
    check_choice("model", model, tuple(GPT_OSS_SHAPES))
    base = dict(n_embd=2880, n_head=64, n_head_kv=8, head_dim=64, n_expert_used=4, n_ff_exp=2880,
                sliding_window=128, context_length=131072, n_vocab=201088, quant="release",
                name=f"{model} shapes, scripted weights (sparkkit stand-in)", **GPT_OSS_SHAPES[model])
    return TinySpec(**{**base, **changes})


@dataclass(frozen=True)
class GeneratedModel:
    path: Path
    size_bytes: int
    n_vocab: int
    seconds: float
    spec: TinySpec


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    index: dict[str, int]
    script_ids: list[int]      # token id of each script entry, in chain order


class Layout(NamedTuple):
    """Residual-stream dims in scripted mode."""
    k: int            # [0, k): one-hot "position in the script"
    prompt: int       # "any prompt token"
    mark_tools: int   # set by the token "functions" (tools declared)
    mark_result: int  # set by the token "=assistant" (a tool result exists)
    flag_tools: int   # context averages of the two markers, read by the LM head
    flag_result: int
    noise0: int       # [noise0, n_embd): random "real" computation
    rules: int = 0    # tool rules: a marker dim and a flag dim each, between flag_result and noise0

    @classmethod
    def of(cls, k: int, rules: int = 0) -> Layout:
        return cls(k, k, k + 1, k + 2, k + 3, k + 4, k + 5 + 2 * rules, rules)

    def mark_rule(self, i: int) -> int:
        return self.flag_result + 1 + i

    def flag_rule(self, i: int) -> int:
        return self.flag_result + 1 + self.rules + i


# ---------------------------------------------------------------------------------- validation

def script_chain(spec: TinySpec) -> list[str]:
    """The scripted reply as vocab entries, in order (empty in random mode)."""
    if spec.mode != "scripted":
        return []
    chain = [SCRIPT_ANALYSIS_OPEN, *SCRIPT_REASONING, SCRIPT_FINAL_OPEN, *SCRIPT_CONTENT]
    for call in _tool_calls(spec):
        chain += call
    for answer in _answers(spec):
        chain += answer
    return chain


def _answers(spec: TinySpec) -> list[list[str]]:
    """Each answer rule's chain entries: the final-channel opening cut in two at a place of its own (entries
    must be unique, and SCRIPT_FINAL_OPEN is taken), then its pieces."""
    out = []
    for j, (_, pieces) in enumerate(spec.answer_rules):
        cut = len(SCRIPT_FINAL_OPEN) - len("<|message|>") - 1 - j       # "…fina" + "l<|message|>", "…fin" + …
        out.append([SCRIPT_FINAL_OPEN[:cut], SCRIPT_FINAL_OPEN[cut:], *pieces])
    return out


def _answer_spans(spec: TinySpec) -> list[tuple[int, int]]:
    """(opening, last piece) chain indices of each answer rule."""
    at = 2 + len(SCRIPT_REASONING) + len(SCRIPT_CONTENT) + sum(len(c) for c in _tool_calls(spec))
    out = []
    for answer in _answers(spec):
        out.append((at, at + len(answer) - 1))
        at += len(answer)
    return out


def n_rules(spec: TinySpec) -> int:
    """Marker rules of both kinds: each has a marker dim and a flag dim (Layout.rules)."""
    return len(spec.tool_rules) + len(spec.answer_rules)


def markers(spec: TinySpec) -> tuple[str, ...]:
    return tuple(m for m, _, _ in spec.tool_rules) + tuple(m for m, _ in spec.answer_rules)


def flag_head(spec: TinySpec) -> bool:
    """Whether the last layer carries the flag head (tools or answer rules need it)."""
    return bool(spec.mode == "scripted" and (spec.tool_name or spec.answer_rules))


def _tool_calls(spec: TinySpec) -> list[list[str]]:
    """Each scripted call's chain entries: its header (one entry, or two where another call of the same
    tool took the one-entry text: entries must be unique), then its args."""
    if not spec.tool_name:
        return []
    calls, seen = [], {}
    for name, args in [(spec.tool_name, spec.tool_args)] + [(t, a) for _, t, a in spec.tool_rules]:
        header = f"<|end|><|start|>assistant to=functions.{name}<|channel|>commentary json<|message|>"
        v = seen[name] = seen.get(name, -1) + 1
        cut = len(header) - len("<|message|>") - v       # v=1: "…jso" + "n<|message|>"
        calls.append([header, args] if v == 0 else [header[:cut], header[cut:], args])
    return calls


def _tool_headers(spec: TinySpec) -> list[tuple[int, int]]:
    """(header, args) chain indices of each scripted call: tool_name's, then each rule's."""
    at, out = 2 + len(SCRIPT_REASONING) + len(SCRIPT_CONTENT), []
    for call in _tool_calls(spec):
        out.append((at, at + len(call) - 1))
        at += len(call)
    return out


def validate(spec: TinySpec) -> None:
    """Raise ParameterError (a ValueError) naming the first field we cannot build from, and why."""
    check_choice("mode", spec.mode, MODES)
    check_choice("expert_type", spec.expert_type, EXPERT_TYPES)
    check_choice("quant", spec.quant, QUANTS)
    check_int("n_vocab", spec.n_vocab, 0)
    for field in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_expert", "n_ff_exp", "sliding_window",
                  "context_length"):
        check_int(field, getattr(spec, field), 1)
    if check_int("head_dim", spec.head_dim, 2) % 2:   # RoPE rotates pairs of dims
        raise ParameterError("head_dim", spec.head_dim, "an even integer >= 2")
    check_int("n_expert_used", spec.n_expert_used, 1, spec.n_expert)
    check_int("seed", spec.seed, 0)
    if spec.n_head % spec.n_head_kv:   # grouped-query attention: each kv head serves as many q heads
        raise ParameterError("n_head", spec.n_head, f"a multiple of n_head_kv ({spec.n_head_kv})")
    for field in ("n_embd", "n_ff_exp") if spec.expert_type == "mxfp4" else ():   # 32 values per block
        if getattr(spec, field) % 32:
            raise ParameterError(field, getattr(spec, field), "a multiple of 32 for mxfp4 experts "
                                 "(or expert_type 'f16'/'f32')")
    if not isinstance(spec.name, str) or not spec.name:
        raise ParameterError("name", spec.name, "a non-empty string")
    if spec.chat_template is not None and (not isinstance(spec.chat_template, str) or not spec.chat_template.strip()):
        raise ParameterError("chat_template", spec.chat_template, "None (built-in harmony) or non-empty Jinja text")
    if spec.mode != "scripted" and spec.endless:
        raise ParameterError("endless", spec.endless, "False unless mode is 'scripted'")
    bad = [w for w in spec.vocab_words if not isinstance(w, str) or not _WORD.fullmatch(w)]
    if bad:
        raise ParameterError("vocab_words", bad[0], "words of 2+ ASCII letters, digits or underscores")
    if spec.tool_name is not None:
        _validate_tool(spec)
    elif spec.tool_args != "{}":
        raise ParameterError("tool_args", spec.tool_args, "'{}' unless tool_name is set")
    _validate_rules(spec)
    _validate_answers(spec)
    if spec.quant == "release":
        _validate_release(spec)
    n_script = len(script_chain(spec))
    lay = Layout.of(n_script, n_rules(spec))
    if n_script and spec.n_embd < lay.noise0 + N_NOISE_MIN:
        raise ParameterError("n_embd", spec.n_embd, f">= {lay.noise0 + N_NOISE_MIN} (too small for the script: "
                             f"{n_script} script dims + {lay.noise0 - n_script} marker dims + {N_NOISE_MIN} noise dims)")


_MARKER = re.compile(r"[A-Za-z][a-z]{2,31}")


def _check_marker(field: str, marker: object) -> None:
    taken = {w.lstrip("=Ġ") for w in WORDS}
    if not isinstance(marker, str) or not _MARKER.fullmatch(marker) or marker in taken:
        raise ParameterError(field, marker, "markers of 3-32 letters a-z (the first may be a capital), "
                             "not a harmony word")
    # the harmony words' merges rank first: a pair of theirs inside a marker would split it
    clash = [w[:2] for w in taken if w[:2] in marker] + (["t"] if marker.startswith("t") else [])
    if clash:
        raise ParameterError(field, marker, f"a marker without the letter pair {clash[0]!r} "
                             "(it would not stay one token), e.g. 'zqspawn'")


def _validate_answers(spec: TinySpec) -> None:
    rules = spec.answer_rules
    if not rules:
        return
    if (not isinstance(rules, tuple) or not all(isinstance(r, tuple) and len(r) == 2 and isinstance(r[1], tuple)
                                                 and r[1] for r in rules)):
        raise ParameterError("answer_rules", rules, "a tuple of (marker, (piece, …)) tuples")
    if spec.mode != "scripted":
        raise ParameterError("answer_rules", rules, "() unless mode is 'scripted'")
    for marker, pieces in rules:
        _check_marker("answer_rules", marker)
        if not all(isinstance(p, str) and p for p in pieces) or len(set(pieces)) != len(pieces):
            raise ParameterError("answer_rules", pieces, "distinct non-empty strings (each is one token)")
    if spec.n_layer % 2:
        raise ParameterError("n_layer", spec.n_layer, "an even number (answer_rules need the flag head in a "
                             "full-attention last layer)")
    every = markers(spec)
    if len(set(every)) != len(every):
        raise ParameterError("answer_rules", every, "markers distinct from each other and from tool_rules'")
    if 2 + n_rules(spec) > spec.head_dim:
        raise ParameterError("answer_rules", rules, f"at most {spec.head_dim - 2} rules in all for head_dim "
                             f"{spec.head_dim}")


def _validate_rules(spec: TinySpec) -> None:
    rules = spec.tool_rules
    if not rules:
        return
    if not isinstance(rules, tuple) or not all(isinstance(r, tuple) and len(r) == 3 for r in rules):
        raise ParameterError("tool_rules", rules, "a tuple of (marker, tool, args) tuples")
    if not spec.tool_name:
        raise ParameterError("tool_rules", rules, "() unless tool_name is set (a prompt without a marker calls it)")
    if spec.quant != "tiny":
        raise ParameterError("tool_rules", rules, "() with quant 'release' (the streamed writer wires one tool)")
    markers = [m for m, _, _ in rules]
    for marker, tool, args in rules:
        _check_marker("tool_rules", marker)
        _validate_tool(TinySpec(n_layer=spec.n_layer, tool_name=tool, tool_args=args))
    if len(set(markers)) != len(markers):
        raise ParameterError("tool_rules", markers, "distinct markers")
    if 2 + len(rules) > spec.head_dim:
        raise ParameterError("tool_rules", rules, f"at most {spec.head_dim - 2} rules for head_dim {spec.head_dim}")


def _validate_release(spec: TinySpec) -> None:
    if spec.expert_type != "mxfp4":
        raise ParameterError("expert_type", spec.expert_type, "'mxfp4' with quant 'release'")
    for field in ("n_embd", "n_ff_exp"):                      # Q8_0 and MXFP4 rows: blocks of 32
        if getattr(spec, field) % 32:
            raise ParameterError(field, getattr(spec, field), "a multiple of 32 with quant 'release'")
    if (spec.n_head * spec.head_dim) % 32:
        raise ParameterError("head_dim", spec.head_dim, "a value with n_head × head_dim a multiple of 32 "
                             "with quant 'release'")


def _validate_tool(spec: TinySpec) -> None:
    if spec.mode != "scripted":
        raise ParameterError("tool_name", spec.tool_name, "None unless mode is 'scripted'")
    if not isinstance(spec.tool_name, str) or not _TOOL_NAME.fullmatch(spec.tool_name):
        raise ParameterError("tool_name", spec.tool_name, "None or 1-64 characters of A-Z a-z 0-9 _ -")
    try:
        args = json.loads(spec.tool_args) if isinstance(spec.tool_args, str) else None
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise ParameterError("tool_args", spec.tool_args, 'JSON object text, e.g. \'{"city": "Paris"}\'')
    if spec.n_layer % 2:   # the flag head must sit in a full-attention layer, and odd layers are those
        raise ParameterError("n_layer", spec.n_layer, "an even number (tool_name needs an even n_layer: "
                             "the last layer must use full attention)")


# ---------------------------------------------------------------------------------- vocab

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte -> printable unicode char mapping (what byte-level BPE vocabs store)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = _bytes_to_unicode()


def byte_encode(text: str) -> str:
    """NORMAL token texts must be byte-level encoded (space = "Ġ") or detokenisation throws."""
    return "".join(B2U[b] for b in text.encode("utf-8"))


def build_vocab(chain: list[str], words: tuple[str, ...] = (), markers: tuple[str, ...] = (),
                base_words: tuple[str, ...] | list[str] = tuple(WORDS),
                specials: tuple[str, ...] | list[str] = tuple(SPECIAL_TOKENS),
                added: tuple[str, ...] = ()) -> Vocab:
    """256 byte tokens, prefix merges for `base_words` (the harmony WORDS by default), then for the rule
    `markers` and `words`, the `specials` (CONTROL) and `added` (USER_DEFINED, split out of text like
    specials) tokens, then the script. A script entry that is one of those tokens is that token."""
    tokens: list[str] = [B2U[b] for b in range(256)]
    types: list[int] = [gguf.TokenType.NORMAL] * 256
    merges: list[str] = []
    index = {t: i for i, t in enumerate(tokens)}

    def add(text: str, kind: int) -> int:
        index[text] = len(tokens)
        tokens.append(text)
        types.append(kind)
        return index[text]

    for w in base_words:
        for i in range(2, len(w) + 1):
            if w[:i] not in index:
                merges.append(f"{w[:i-1]} {w[i-1]}")
                add(w[:i], gguf.TokenType.NORMAL)
    for w in markers:                 # a rule marker is one token, bare or after a space
        for piece in [w[:i] for i in range(2, len(w) + 1)]:
            if piece not in index:
                merges.append(f"{piece[:-1]} {piece[-1]}")
                add(piece, gguf.TokenType.NORMAL)
        merges.append(f"Ġ {w}")
        add("Ġ" + w, gguf.TokenType.NORMAL)
    # Extra words go after WORDS so their merges rank lower: the marker words still form first.
    # Each word gets a prefix chain on itself and one "Ġ word" merge, which never creates a
    # token like "Ġa" that would swallow a script entry (" a", " is", " user" ...).
    script = {byte_encode(t) for t in chain}
    taken = {w.lstrip("=Ġ") for w in base_words} | set(markers)   # e.g. " functions" must stay Ġ + functions
    for w in words:
        pieces = [w[:i] for i in range(2, len(w) + 1)] + ["Ġ" + w]
        if w in taken or any(p in script for p in pieces):
            continue
        for i in range(2, len(w) + 1):
            if w[:i] not in index:
                merges.append(f"{w[:i-1]} {w[i-1]}")
                add(w[:i], gguf.TokenType.NORMAL)
        if "Ġ" + w not in index:
            merges.append(f"Ġ {w}")
            add("Ġ" + w, gguf.TokenType.NORMAL)
    for s in specials:
        add(s, gguf.TokenType.CONTROL)
    for s in added:
        add(s, gguf.TokenType.USER_DEFINED)
    script_ids = []
    for text in chain:
        if text in specials or text in added:
            script_ids.append(index[text])
            continue
        e = byte_encode(text)
        if e in index:   # duplicate token texts abort llama.cpp's load (id_to_token/token_to_id sizes)
            raise ParameterError("tool_args", text, "text that is not already a vocab entry")
        script_ids.append(add(e, gguf.TokenType.NORMAL))
    return Vocab(tokens, types, merges, index, script_ids)


# ---------------------------------------------------------------------------------- weights

def _rnd(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# NB: numpy shape = reversed ggml ne, e.g. ggml {n_embd, n_vocab} == numpy (n_vocab, n_embd).
def embeddings_and_head(spec: TinySpec, vocab: Vocab, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """token_embd and output (LM head). Scripted: embeddings put 16 on a token's script dim (or the
    "prompt" dim), and LM-head row next(t) reads dim(t), so the chain is a bigram lookup."""
    E, n_vocab = spec.n_embd, len(vocab.tokens)
    if spec.mode != "scripted":
        emb = _rnd(rng, n_vocab, E, scale=1.0)
        return emb, _rnd(rng, n_vocab, E)
    lay = Layout.of(len(vocab.script_ids), n_rules(spec))
    emb, lm = script_columns(spec, vocab, lay, E)
    emb[:, lay.noise0:] = _rnd(rng, n_vocab, E - lay.noise0, scale=0.02)   # the random "real" computation
    return emb, lm


def script_embeddings(n_vocab: int, cols: int, ids: list[int], lay: "Layout") -> np.ndarray:
    """The scripted columns of token_embd: MAG on a script token's own position dim, on the "prompt" dim
    for every other token (tinyqwen's writer shares it)."""
    emb = np.zeros((n_vocab, cols), np.float32)
    is_script = np.zeros(n_vocab, bool)
    is_script[ids] = True
    emb[~is_script, lay.prompt] = MAG
    for pos, tid in enumerate(ids):
        emb[tid, pos] = MAG
    return emb


def script_columns(spec: TinySpec, vocab: Vocab, lay: "Layout", cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The scripted first `cols` columns of token_embd and output (the rest of the LM head stays 0,
    so the random computation never reaches the logits). Shared by the tiny and full-scale writers."""
    E, n_vocab, ids, index, K = spec.n_embd, len(vocab.tokens), vocab.script_ids, vocab.index, lay.k
    emb = script_embeddings(n_vocab, cols, ids, lay)
    lm = np.zeros((n_vocab, cols), np.float32)
    alpha = 40.0 / np.sqrt(E)                  # x ~ sqrt(n_embd) after RMSNorm -> ~40 logits margin
    nxt = {lay.prompt: ids[0]}                 # any prompt token -> "<|channel|>analysis<|message|>"
    for pos in range(K - 1):
        nxt[pos] = ids[pos + 1]
    n_reason = len(SCRIPT_REASONING)
    last_content = 1 + n_reason + len(SCRIPT_CONTENT)   # chain index of the last content word
    calls = _tool_headers(spec)
    args_at = [a for _, a in calls]
    answers = _answer_spans(spec)
    for d, tid in nxt.items():
        if d != last_content and d not in args_at and d not in [e for _, e in answers]:   # those are wired below
            lm[tid, d] = alpha
    first_content = ids[n_reason + 2]
    if spec.endless:    # never stops by itself: finish_reason "length" / stop_reason "max_tokens"
        lm[first_content, last_content] = alpha
    else:               # <|return|> (EOG); runner-up loops to the first content word for ignore_eos
        lm[index["<|return|>"], last_content] = alpha
        lm[first_content, last_content] = alpha / 2
    if spec.tool_name:
        # args -> <|call|> (EOG). After the reasoning, call iff the prompt has "functions" tokens and
        # no "=assistant" token; the flags are only non-zero at the last reasoning position.
        # A rule's header also needs its marker's flag (its -alpha/2 loses the tie without one);
        # every marker's flag pushes tool_name's header down.
        for i, (h, a) in enumerate(calls):
            lm[index["<|call|>"], a] = alpha
            lm[ids[h], lay.flag_tools] = 3000.0
            lm[ids[h], lay.flag_result] = -60000.0
            if i:
                lm[ids[h], lay.flag_rule(i - 1)] = RULE_GAIN
                lm[ids[h], n_reason] = -alpha / 2
            else:
                for r in range(len(spec.tool_rules)):
                    lm[ids[h], lay.flag_rule(r)] = -RULE_GAIN
    # An answer rule: its opening beats SCRIPT_FINAL_OPEN after the reasoning when its marker's flag is up and
    # no tools are declared (the tools flag pushes it far down); its last piece ends the reply.
    for j, (opening, last) in enumerate(answers):
        lm[ids[opening], lay.flag_rule(len(spec.tool_rules) + j)] = RULE_GAIN
        lm[ids[opening], lay.flag_tools] = -60000.0
        lm[ids[opening], n_reason] = -alpha / 2
        lm[index["<|return|>"], last] = alpha
    if flag_head(spec):
        emb[index["functions"], lay.mark_tools] = MAG
        emb[index["=assistant"], lay.mark_result] = MAG
        for r, marker in enumerate(markers(spec)):
            emb[index[marker], lay.mark_rule(r)] = MAG
            emb[index["Ġ" + marker], lay.mark_rule(r)] = MAG
    return emb, lm


def block_weights(spec: TinySpec, layer: int, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One transformer block, random with ~unit-variance activations (draw order fixed for seeds);
    in scripted mode the outputs never write the reserved dims, so the script passes untouched."""
    E, H, HKV, D, X, FF = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_expert, spec.n_ff_exp
    se, sa, sf = 1 / np.sqrt(E), 0.5 / np.sqrt(H * D), 0.5 / np.sqrt(FF)
    t: dict[str, np.ndarray] = {}
    t["attn_q.weight"], t["attn_q.bias"] = _rnd(rng, H * D, E, scale=se), _rnd(rng, H * D)
    t["attn_k.weight"], t["attn_k.bias"] = _rnd(rng, HKV * D, E, scale=se), _rnd(rng, HKV * D)
    t["attn_v.weight"], t["attn_v.bias"] = _rnd(rng, HKV * D, E, scale=se), _rnd(rng, HKV * D)
    t["attn_output.weight"], t["attn_output.bias"] = _rnd(rng, E, H * D, scale=sa), _rnd(rng, E)
    t["attn_sinks.weight"] = _rnd(rng, H, scale=1.0)
    t["ffn_gate_inp.weight"], t["ffn_gate_inp.bias"] = _rnd(rng, X, E, scale=se), _rnd(rng, X)
    t["ffn_gate_exps.weight"] = _rnd(rng, X, FF, E, scale=se)
    t["ffn_up_exps.weight"] = _rnd(rng, X, FF, E, scale=se)
    t["ffn_down_exps.weight"] = _rnd(rng, X, E, FF, scale=sf)
    t["ffn_gate_exps.bias"], t["ffn_up_exps.bias"], t["ffn_down_exps.bias"] = (
        _rnd(rng, X, FF), _rnd(rng, X, FF), _rnd(rng, X, E))
    if spec.mode == "scripted":
        lay = Layout.of(k, n_rules(spec))
        reserved = slice(0, lay.noise0)
        t["attn_output.weight"][reserved, :] = 0.0
        t["attn_output.bias"][reserved] = 0.0
        t["ffn_down_exps.weight"][:, reserved, :] = 0.0
        t["ffn_down_exps.bias"][:, reserved] = 0.0
        if flag_head(spec) and layer == spec.n_layer - 1:
            _wire_flag_head(spec, lay, t)
    return t


def _wire_flag_head(spec: TinySpec, lay: Layout, t: dict[str, np.ndarray]) -> None:
    """Last layer (odd -> full attention), head 0: its query is large only at the last reasoning
    token (lowest-frequency RoPE pair, so scores barely depend on position) against a constant key
    -> uniform attention over the whole context; elsewhere the sink (+30) takes all attention.
    V channels 0/1 read the marker dims; W_o writes their averages into the flag dims."""
    E, H, HKV, D = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim
    wq, bq, wk, bk = t["attn_q.weight"], t["attn_q.bias"], t["attn_k.weight"], t["attn_k.bias"]
    wv, bv, wo = t["attn_v.weight"], t["attn_v.bias"], t["attn_output.weight"]
    last_reason = len(SCRIPT_REASONING)        # chain index of the last reasoning token
    lo = D // 2 - 1
    wq[0:D, :] = 0.0
    bq[0:D] = 0.0
    wq[lo, last_reason] = 8.0 / np.sqrt(E)     # q ~ 8 at the last reasoning token
    wk[0:D, :] = 0.0
    bk[0:D] = 0.0
    bk[lo] = 32.0
    t["attn_sinks.weight"][0] = 30.0
    n = 2 + lay.rules                          # V channels: tools, result, one per rule marker
    wv[0:n, :] = 0.0
    bv[0:n] = 0.0
    wv[0, lay.mark_tools] = 1.0
    wv[1, lay.mark_result] = 1.0
    for h in range(H // HKV):                  # heads sharing kv-head 0 must not leak those channels
        wo[:, h * D:h * D + n] = 0.0
    wo[lay.flag_tools, 0] = 80.0
    wo[lay.flag_result, 1] = 80.0
    for r in range(lay.rules):
        wv[2 + r, lay.mark_rule(r)] = 1.0
        wo[lay.flag_rule(r), 2 + r] = 80.0


# ---------------------------------------------------------------------------------- file

def _add_metadata(w: gguf.GGUFWriter, spec: TinySpec, vocab: Vocab) -> None:
    w.add_name(spec.name)
    w.add_block_count(spec.n_layer)
    w.add_context_length(spec.context_length)
    w.add_embedding_length(spec.n_embd)
    w.add_feed_forward_length(spec.n_ff_exp)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    w.add_key_length(spec.head_dim)
    w.add_value_length(spec.head_dim)
    w.add_rope_freq_base(150000.0)             # gpt-oss: YaRN x32 over a 4096 original context
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(32.0)
    w.add_rope_scaling_orig_ctx_len(4096)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(spec.n_expert)
    w.add_expert_used_count(spec.n_expert_used)
    w.add_expert_feed_forward_length(spec.n_ff_exp)   # required by the loader
    w.add_sliding_window(spec.sliding_window)         # required; even layers use it
    ftype = gguf.LlamaFileType
    w.add_file_type(ftype.MOSTLY_MXFP4_MOE if spec.expert_type == "mxfp4" else ftype.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-4o")
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)                  # mandatory for the "gpt2" model, even if tiny
    w.add_bos_token_id(vocab.index["<|startoftext|>"])
    w.add_eos_token_id(vocab.index["<|return|>"])
    w.add_pad_token_id(vocab.index["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(spec.chat_template if spec.chat_template is not None else HARMONY_TEMPLATE)


def _add_tensors(w: gguf.GGUFWriter, spec: TinySpec, vocab: Vocab) -> None:
    rng = np.random.default_rng(spec.seed)
    emb, lm = embeddings_and_head(spec, vocab, rng)
    w.add_tensor("token_embd.weight", emb.astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
    w.add_tensor("output.weight", lm.astype(np.float16))
    ones = np.ones(spec.n_embd, dtype=np.float32)
    for il in range(spec.n_layer):
        t = block_weights(spec, il, len(vocab.script_ids), rng)
        p = f"blk.{il}."
        # Same tensor order as the reference generator (keeps files byte-identical).
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "post_attention_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", t[name + ".weight"].astype(np.float16))
            w.add_tensor(p + name + ".bias", t[name + ".bias"])
        for name in ("attn_sinks.weight", "ffn_gate_inp.weight", "ffn_gate_inp.bias"):
            w.add_tensor(p + name, t[name])
        for name in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            x = t[name + ".weight"]
            if spec.expert_type == "mxfp4":
                w.add_tensor(p + name + ".weight", gguf.quants.quantize(x, QT.MXFP4), raw_dtype=QT.MXFP4)
            else:
                w.add_tensor(p + name + ".weight", x.astype(np.float16) if spec.expert_type == "f16" else x)
        for name in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            w.add_tensor(p + name + ".bias", t[name + ".bias"])


# ---------------------------------------------------------------------------------- release layout

Q8, MX = QT.Q8_0, QT.MXFP4
_BLOCK_BYTES = {Q8: 34, MX: 17}
_Q8_D = 3e-4           # Q8_0 scale of the random blocks: element rms ~0.02 (like the tiny model's weights)
_Q8_D_WRITER = 1e-6    # ... of the blocks that write the residual stream: keep the script dims dominant
_MX_E_WRITER = 8       # MXFP4 writers: scale bytes 8 lower (256x smaller elements)
_WRITER_BIAS = 0.002


def pad_vocab(vocab: Vocab, n_vocab: int) -> Vocab:
    """Append unique dummy NORMAL tokens up to `n_vocab` entries. No merge leads to them, so no prompt
    ever contains one; they only give token_embd/output (and the sampler) the real vocab size."""
    if not n_vocab or n_vocab == len(vocab.tokens):
        return vocab
    if n_vocab < len(vocab.tokens):
        raise ParameterError("n_vocab", n_vocab, f"0 or at least {len(vocab.tokens)} (the vocab's own size)")
    tokens, types, index = list(vocab.tokens), list(vocab.types), dict(vocab.index)
    i = 0
    while len(tokens) < n_vocab:
        text = f"dummy{i}"
        i += 1
        if text not in index:
            index[text] = len(tokens)
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    return Vocab(tokens, types, vocab.merges, index, vocab.script_ids)


class _Pools:
    """Random quantized blocks to cut tensors from (values don't steer these kernels' speed)."""

    def __init__(self, rng: np.random.Generator, n_blocks: int):
        mx = rng.integers(0, 256, size=(n_blocks, 17), dtype=np.uint8)
        mx[:, 0] = rng.integers(119, 122, size=n_blocks, dtype=np.uint8)   # E8M0: |w| ~ 2^-9..2^-7 x {0..6}
        q8 = rng.integers(0, 256, size=(n_blocks, 34), dtype=np.uint8)
        q8[:, 0:2] = np.array([_Q8_D], dtype=np.float16).view(np.uint8)
        mxw = mx.copy()
        mxw[:, 0] -= _MX_E_WRITER
        q8w = q8.copy()
        q8w[:, 0:2] = np.array([_Q8_D_WRITER], dtype=np.float16).view(np.uint8)
        self.pools = {(MX, False): mx, (MX, True): mxw, (Q8, False): q8, (Q8, True): q8w}
        self.rng = rng

    def take(self, kind: QT, n_blocks: int, writer: bool = False) -> np.ndarray:
        """n_blocks random blocks, shape (n_blocks, block bytes): views where possible, wrapping the pool."""
        pool = self.pools[(kind, writer)]
        off = int(self.rng.integers(0, len(pool)))
        if off + n_blocks <= len(pool):
            return pool[off:off + n_blocks]
        parts, left = [], n_blocks
        while left:
            part = pool[off:off + left]
            parts.append(part)
            left -= len(part)
            off = 0
        return np.concatenate(parts)


def _q8_rows(rows: np.ndarray) -> np.ndarray:
    """Quantize float rows exactly as gguf does, as (rows, blocks, 34) bytes."""
    q = gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), Q8)
    return q.reshape(rows.shape[0], -1, 34)


class _Release:
    """Tensor list and streamed data of the release layout."""

    def __init__(self, spec: TinySpec, vocab: Vocab, pool_blocks: int = 1 << 21):
        self.spec, self.vocab = spec, vocab
        self.rng = np.random.default_rng(spec.seed)
        self.scripted = spec.mode == "scripted"
        self.k = len(vocab.script_ids)
        self.lay = Layout.of(self.k, n_rules(spec))
        self.reserved = self.lay.noise0 if self.scripted else 0
        self.pool_blocks = pool_blocks
        self._pools: _Pools | None = None
        E, nv = spec.n_embd, len(vocab.tokens)
        self.head_cols = min(E, -(-max(self.reserved, 1) // 32) * 32)   # scripted dims live in these blocks
        self._heads: tuple[np.ndarray, np.ndarray] | None = None
        H, HKV, D, X, FF = spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_expert, spec.n_ff_exp
        plan: list[tuple[str, tuple[int, ...], object]] = [
            ("token_embd.weight", (nv, E), Q8), ("output_norm.weight", (E,), "ones"), ("output.weight", (nv, E), Q8)]
        for il in range(spec.n_layer):
            p = f"blk.{il}."
            plan += [(p + "attn_norm.weight", (E,), "ones"), (p + "post_attention_norm.weight", (E,), "ones"),
                     (p + "attn_q.weight", (H * D, E), Q8), (p + "attn_q.bias", (H * D,), 0.02),
                     (p + "attn_k.weight", (HKV * D, E), Q8), (p + "attn_k.bias", (HKV * D,), 0.02),
                     (p + "attn_v.weight", (HKV * D, E), Q8), (p + "attn_v.bias", (HKV * D,), 0.02),
                     (p + "attn_output.weight", (E, H * D), Q8), (p + "attn_output.bias", (E,), "writer"),
                     (p + "attn_sinks.weight", (H,), 1.0),
                     (p + "ffn_gate_inp.weight", (X, E), 1 / np.sqrt(E)), (p + "ffn_gate_inp.bias", (X,), 0.02),
                     (p + "ffn_gate_exps.weight", (X, FF, E), MX), (p + "ffn_up_exps.weight", (X, FF, E), MX),
                     (p + "ffn_down_exps.weight", (X, E, FF), MX),
                     (p + "ffn_gate_exps.bias", (X, FF), 0.02), (p + "ffn_up_exps.bias", (X, FF), 0.02),
                     (p + "ffn_down_exps.bias", (X, E), "writer")]
        self.plan = plan

    @property
    def pools(self) -> _Pools:
        if self._pools is None:      # only when data is written (the plan alone is cheap)
            self._pools = _Pools(self.rng, self.pool_blocks)
        return self._pools

    @staticmethod
    def nbytes(shape: tuple[int, ...], kind: object) -> int:
        n = int(np.prod(shape))
        return n // 32 * _BLOCK_BYTES[kind] if kind in _BLOCK_BYTES else n * 4

    # -- the scripted columns of token_embd and output (same wiring as embeddings_and_head) --
    def _head_columns(self) -> tuple[np.ndarray, np.ndarray]:
        emb, lm = script_columns(self.spec, self.vocab, self.lay, self.head_cols)
        return _q8_rows(emb), _q8_rows(lm)

    # -- data --
    def chunks(self, name: str, shape: tuple[int, ...], kind: object):
        """Yield the tensor's bytes in pieces (numpy arrays or bytes)."""
        spec, rng = self.spec, self.rng
        last = name.startswith(f"blk.{spec.n_layer - 1}.")
        flag_head_here = flag_head(spec) and last
        if kind == "ones":
            yield np.ones(shape, np.float32)
        elif kind == "writer":                   # residual-stream biases: small, zero on the reserved dims
            b = (rng.standard_normal(shape, dtype=np.float32) * np.float32(_WRITER_BIAS if self.scripted else 0.02))
            b[..., :self.reserved] = 0.0
            yield b
        elif not isinstance(kind, QT):
            t = rng.standard_normal(shape, dtype=np.float32) * np.float32(kind)
            if flag_head_here:
                self._flag_head_f32(name, t)
            yield t
        elif name in ("token_embd.weight", "output.weight"):
            yield from self._vocab_matrix(name, shape)
        elif name.endswith("ffn_down_exps.weight"):
            X, E, FF = shape
            row_blocks = FF // 32
            for _ in range(X):                  # per expert: reserved rows zero, the rest small
                if self.reserved:
                    yield bytes(self.reserved * row_blocks * 17)
                yield self.pools.take(MX, (E - self.reserved) * row_blocks, writer=self.scripted)
        elif kind == MX:
            n = int(np.prod(shape)) // 32
            step = 1 << 22
            for start in range(0, n, step):
                yield self.pools.take(MX, min(step, n - start))
        else:                                   # Q8_0 attention matrices
            yield self._attention(name, shape, flag_head_here)

    def _vocab_matrix(self, name: str, shape: tuple[int, ...]):
        nv, E = shape
        nb, hb = E // 32, self.head_cols // 32
        if self.scripted and self._heads is None:
            self._heads = self._head_columns()
        head = None if not self.scripted else self._heads[0 if name == "token_embd.weight" else 1]
        step = max(1, (32 << 20) // (nb * 34))
        for r0 in range(0, nv, step):
            n = min(step, nv - r0)
            if name == "output.weight" and self.scripted:
                rows = np.zeros((n, nb, 34), np.uint8)     # the random computation never reaches the logits
            else:
                rows = self.pools.take(Q8, n * nb).reshape(n, nb, 34).copy()
            if head is not None:
                rows[:, :hb, :] = head[r0:r0 + n]
            yield rows

    def _attention(self, name: str, shape: tuple[int, ...], flag_head: bool) -> np.ndarray:
        rows_n, cols = shape
        nb = cols // 32
        writer = name.endswith("attn_output.weight") and self.scripted
        t = self.pools.take(Q8, rows_n * nb, writer=writer).reshape(rows_n, nb, 34).copy()
        if writer:
            t[:self.reserved] = 0                # never write the script / marker dims
        if flag_head:
            self._flag_head_q8(name, t)
        return t

    # -- the tool flag head (last layer, head 0), as _wire_flag_head but on quantized rows --
    def _flag_head_q8(self, name: str, t: np.ndarray) -> None:
        spec, lay = self.spec, self.lay
        E, H, HKV, D = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim
        lo = D // 2 - 1

        def row(values: dict[int, float], width: int) -> np.ndarray:
            r = np.zeros((1, width), np.float32)
            for col, v in values.items():
                r[0, col] = v
            return _q8_rows(r)[0]

        if name.endswith("attn_q.weight"):
            t[0:D] = 0
            t[lo] = row({len(SCRIPT_REASONING): 8.0 / np.sqrt(E)}, E)
        elif name.endswith("attn_k.weight"):
            t[0:D] = 0
        elif name.endswith("attn_v.weight"):
            t[0] = row({lay.mark_tools: 1.0}, E)
            t[1] = row({lay.mark_result: 1.0}, E)
            for r in range(lay.rules):
                t[2 + r] = row({lay.mark_rule(r): 1.0}, E)
        elif name.endswith("attn_output.weight"):
            for h in range(H // HKV):            # heads sharing kv-head 0 must not leak the flag channels
                for c in range(h * D, h * D + 2 + lay.rules):
                    t[:, c // 32, 2 + c % 32] = 0
            gain = 80.0 * np.sqrt(64.0 / E)      # 80 at the tiny model's width; keeps the flags moderate
            t[lay.flag_tools] = row({0: gain}, H * D)
            t[lay.flag_result] = row({1: gain}, H * D)
            for r in range(lay.rules):
                t[lay.flag_rule(r)] = row({2 + r: gain}, H * D)

    def _flag_head_f32(self, name: str, t: np.ndarray) -> None:
        D, lo = self.spec.head_dim, self.spec.head_dim // 2 - 1
        if name.endswith("attn_q.bias"):
            t[0:D] = 0.0
        elif name.endswith("attn_k.bias"):
            t[0:D] = 0.0
            t[lo] = 32.0
        elif name.endswith("attn_v.bias"):
            t[0:2 + self.lay.rules] = 0.0
        elif name.endswith("attn_sinks.weight"):
            t[0] = 30.0


def _write_tiny(partial: Path, spec: TinySpec, vocab: Vocab) -> None:
    w = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT_OSS])   # "gpt-oss"
    try:
        _add_metadata(w, spec, vocab)
        _add_tensors(w, spec, vocab)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()


def stream_tensors(w: gguf.GGUFWriter, plan, nbytes, chunks, progress=None) -> None:
    """Write `plan`'s tensors (name, shape, kind) after the header: `nbytes(shape, kind)` each, from the pieces
    `chunks(name, shape, kind)` yields (numpy arrays or bytes); `progress` gets a line every ~5 % of the bytes."""
    total = sum(nbytes(shape, kind) for _, shape, kind in plan)
    fout, done, t0, shown = w.fout[0], 0, time.monotonic(), 0
    for name, shape, kind in plan:
        w.write_padding(fout, fout.tell())
        want, wrote = nbytes(shape, kind), 0
        for piece in chunks(name, shape, kind):
            mv = memoryview(np.ascontiguousarray(piece) if isinstance(piece, np.ndarray) else piece).cast("B")
            fout.write(mv)
            wrote += len(mv)
        if wrote != want:
            raise AssertionError(f"{name}: wrote {wrote} bytes, expected {want}")
        w.write_padding(fout, want)
        done += want
        if progress and (done - shown >= total / 20 or done == total):
            shown, secs = done, max(time.monotonic() - t0, 1e-9)
            progress(f"generating: {done / 2**30:.1f} of {total / 2**30:.1f} GiB ({100 * done / total:.0f} %), "
                     f"{done / secs / 1e9:.2f} GB/s")
    fout.flush()


def _write_release(partial: Path, spec: TinySpec, vocab: Vocab, progress=None) -> None:
    rel = _Release(spec, vocab)
    w = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT_OSS])
    try:
        _add_metadata(w, spec, vocab)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for name, shape, kind in rel.plan:
            w.add_tensor_info(name, shape, np.dtype(np.float32), rel.nbytes(shape, kind),
                              raw_dtype=kind if isinstance(kind, QT) else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        stream_tensors(w, rel.plan, rel.nbytes, rel.chunks, progress)
    finally:
        w.close()


def write_in_place(path: str | os.PathLike, write) -> Path:
    """Run `write(partial)` on `<path>.partial`, sync it and rename it to `path`: `path` is the old file or the
    whole new one, never half of one (a failed write leaves no .partial)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    try:
        write(partial)
        with open(partial, "rb+") as f:   # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def generate(path: str | os.PathLike, spec: TinySpec = TinySpec(), progress=None) -> GeneratedModel:
    """Write the tiny gpt-oss GGUF for `spec` to `path` (parents created) and describe it.

    Written to `<path>.partial` and renamed into place, so `path` is either the old file or the
    complete new one, never half of one."""
    t0 = time.perf_counter()
    validate(spec)
    vocab = pad_vocab(build_vocab(script_chain(spec), spec.vocab_words, markers(spec)), spec.n_vocab)
    final = write_in_place(path, lambda partial: _write_release(partial, spec, vocab, progress)
                           if spec.quant == "release" else _write_tiny(partial, spec, vocab))
    return GeneratedModel(final, final.stat().st_size, len(vocab.tokens), time.perf_counter() - t0, spec)


# ---------------------------------------------------------------------------------------------- split

_GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def split_gguf(src: str | os.PathLike, dest_dir: str | os.PathLike, stem: str, n_shards: int) -> list[Path]:
    """Split the GGUF `src` into `n_shards` files `<dest_dir>/<stem>-0000i-of-0000n.gguf`, as llama.cpp's
    gguf-split writes them: the first shard holds all of src's metadata, every shard holds
    `split.no` (u16), `split.count` (u16) and `split.tensors.count` (i32), the tensors are distributed
    in order by bytes (each shard gets at least one), and each shard is a valid GGUF of its own.

    The header is parsed with plain reads (strings stepped over, never decoded) and metadata is copied
    byte for byte; tensor data is copied with os.copy_file_range (pread/write in 16 MiB pieces where
    that is unavailable), so a 59 GiB file splits at disk speed in constant memory. Each shard is
    written to `<name>.partial`, fsynced and renamed into place."""
    import struct
    src, dest_dir = Path(src), Path(dest_dir)
    check_int("n_shards", n_shards, 1, 99999)
    u32, u64 = struct.Struct("<I"), struct.Struct("<Q")
    with open(src, "rb") as f:
        def rd(n: int) -> bytes:
            b = f.read(n)
            if len(b) != n:
                raise ParameterError("src", str(src), "a complete GGUF file (its header is truncated)")
            return b

        def skip_value(vtype: int) -> None:
            if vtype == 8:                                            # string
                f.seek(u64.unpack(rd(8))[0], os.SEEK_CUR)
            elif vtype == 9:                                          # array
                itype, n = u32.unpack(rd(4))[0], u64.unpack(rd(8))[0]
                if itype in _GGUF_SCALAR:
                    f.seek(n * struct.calcsize(_GGUF_SCALAR[itype]), os.SEEK_CUR)
                else:
                    for _ in range(n):
                        skip_value(itype)
            else:
                f.seek(struct.calcsize(_GGUF_SCALAR[vtype]), os.SEEK_CUR)

        if rd(4) != b"GGUF":
            raise ParameterError("src", str(src), "a GGUF file (it does not start with the GGUF magic bytes)")
        version = u32.unpack(rd(4))[0]
        n_tensors, n_kv = u64.unpack(rd(8))[0], u64.unpack(rd(8))[0]
        kvs: list[tuple[str, int, int]] = []                        # key, start, end (raw bytes in src)
        alignment = 32
        for _ in range(n_kv):
            start = f.tell()
            key = rd(u64.unpack(rd(8))[0]).decode("utf-8")
            vtype = u32.unpack(rd(4))[0]
            if key == "general.alignment" and vtype == 4:
                alignment = u32.unpack(rd(4))[0]
            else:
                skip_value(vtype)
            kvs.append((key, start, f.tell()))
        tensors: list[tuple[bytes, int, int]] = []                  # raw info without offset, offset, nbytes
        for _ in range(n_tensors):
            name = rd(u64.unpack(rd(8))[0])
            n_dims = u32.unpack(rd(4))[0]
            dims = struct.unpack(f"<{n_dims}Q", rd(8 * n_dims))
            ttype = u32.unpack(rd(4))[0]
            offset = u64.unpack(rd(8))[0]
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
            n = 1
            for d in dims:
                n *= d
            raw = u64.pack(len(name)) + name + u32.pack(n_dims) + struct.pack(f"<{n_dims}Q", *dims) + u32.pack(ttype)
            tensors.append((raw, offset, n // block * size))
        data_start = -(-f.tell() // alignment) * alignment
        meta = b"".join(_read_at(f, s, e - s) for key, s, e in kvs if not key.startswith("split."))
        n_meta = sum(1 for key, _s, _e in kvs if not key.startswith("split."))
    if not 1 <= n_shards <= max(1, len(tensors)):
        raise ParameterError("n_shards", n_shards, f"1 to {len(tensors)} (the number of tensors in {src.name})")

    # cut the tensor list into n_shards runs of about equal bytes
    total = sum(t[2] for t in tensors) or 1
    groups: list[list[tuple[bytes, int, int]]] = [[] for _ in range(n_shards)]
    acc = 0
    for i, t in enumerate(tensors):
        k = min(n_shards - 1, acc * n_shards // total)
        k = max(k, min(n_shards - 1, n_shards - (len(tensors) - i)))   # leave one tensor for each later shard
        while k > 0 and not groups[k - 1]:
            k -= 1                                                       # and none empty before it
        groups[k].append(t)
        acc += t[2]

    def kv(key: str, vtype: int, value: bytes) -> bytes:
        return u64.pack(len(key)) + key.encode() + u32.pack(vtype) + value

    dest_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    src_fd = os.open(src, os.O_RDONLY)
    try:
        for i, group in enumerate(groups):
            final = dest_dir / f"{stem}-{i + 1:05d}-of-{n_shards:05d}.gguf"
            partial = final.with_name(final.name + ".partial")
            split_kvs = (kv("split.no", 2, struct.pack("<H", i)) + kv("split.count", 2, struct.pack("<H", n_shards))
                         + kv("split.tensors.count", 5, struct.pack("<i", len(tensors))))
            head = [b"GGUF", u32.pack(version), u64.pack(len(group)),
                    u64.pack((n_meta if i == 0 else 0) + 3), meta if i == 0 else b"", split_kvs]
            offset = 0
            for raw, _src_off, nbytes in group:
                head.append(raw + u64.pack(offset))
                offset += -(-nbytes // alignment) * alignment
            header = b"".join(head)
            header += b"\0" * (-len(header) % alignment)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, header)
                for _raw, src_off, nbytes in group:
                    _copy_range(src_fd, fd, data_start + src_off, nbytes)
                    _write_all(fd, b"\0" * (-nbytes % alignment))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                partial.unlink(missing_ok=True)
                raise
            os.close(fd)
            os.replace(partial, final)
            out.append(final)
    finally:
        os.close(src_fd)
    return out


def _read_at(f, start: int, n: int) -> bytes:
    f.seek(start)
    return f.read(n)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_range(src_fd: int, dst_fd: int, offset: int, n: int) -> None:
    """Copy n bytes of src from `offset` to dst's current position, in the kernel where it can."""
    end = offset + n
    try:
        while offset < end:
            done = os.copy_file_range(src_fd, dst_fd, min(end - offset, 1 << 30), offset)
            if done == 0:
                raise ParameterError("src", f"fd {src_fd}", "a complete GGUF file (its tensor data is truncated)")
            offset += done
        return
    except (AttributeError, OSError):
        pass                                       # no copy_file_range here (or across these filesystems)
    while offset < end:
        piece = os.pread(src_fd, min(end - offset, 16 << 20), offset)
        if not piece:
            raise ParameterError("src", f"fd {src_fd}", "a complete GGUF file (its tensor data is truncated)")
        _write_all(dst_fd, piece)
        offset += len(piece)
