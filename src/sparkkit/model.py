"""What a model is, as far as memory and speed are concerned: its architecture and files.

The architecture comes from the model itself when it is on disk — a GGUF's metadata and tensor
infos (header only: `GGUFHeader` parses them with the `gguf` package's own reader but skips over
the 201k-entry vocabulary instead of building a numpy view per string, so a 60 GB split GGUF is
read in ~0.1 s), or a Hugging Face `config.json` next to safetensors — and from the catalogue
below otherwise, where every number carries its source.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ParameterError, SparkkitError

GIB = 1024**3


@dataclass(frozen=True)
class Architecture:
    name: str
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_embd: int
    sliding_window: int          # 0 = no sliding-window layers
    n_swa_layers: int            # gpt-oss: every other layer (the even ones) is sliding-window
    n_expert: int
    n_expert_used: int
    context_max: int
    n_vocab: int
    weights_bytes: int           # what the engine loads (GGUF tensor data, or the safetensors)
    params_total: float
    params_active: float
    active_bytes_per_token: float  # weights read per decoded token (attention, router, k experts, head)
    arch: str = "gpt-oss"        # llama.cpp's architecture name (general.architecture)
    n_ff_exp: int = 0            # expert feed-forward width
    source: str = ""             # where these numbers came from

    @property
    def n_full_layers(self) -> int:
        return self.n_layer - self.n_swa_layers

    def kv_bytes_per_token_layer(self, bytes_per_element: float = 2.0) -> float:
        """K + V of one token in one layer."""
        return 2 * self.n_head_kv * self.head_dim * bytes_per_element

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CatalogueEntry:
    arch: Architecture
    hf_repo: str | None            # where 03 downloads the GGUF from
    hf_files: tuple[str, ...]      # shards; the first is what -m points at
    sources: dict[str, str]        # Architecture field -> where its number comes from
    servable: bool = True          # False: planned only — 02 plans it, 01 does not offer it (nothing for 03
                                   # to place or 05 to serve); every entry below is servable (03 places
                                   # qwen3-235b-a22b-2507's shards; serving it takes a pair of GB10s)


_OSS_CONFIG = "openai/gpt-oss-{}/config.json (HF; quoted in research/spark.md §7 and peers.md §4)"
_BENCH = "llama.cpp benches/dgx-spark.md, llama-bench 'size'/'params' of {} (build 2f68ce7cf; research/spark.md §7)"
_QWEN_CONFIG = ("Qwen/Qwen3-Coder-30B-A3B-Instruct config.json (HF; the same file is mirrored verbatim at "
                "github.com/ztxz16/fastllm Qwen3-Coder-30B-A3B-Instruct/config.json)")


def _shape_sources(config: str, **extra: str) -> dict[str, str]:
    keys = ("n_layer", "n_head", "n_head_kv", "head_dim", "n_embd", "sliding_window", "n_swa_layers", "n_expert",
            "n_expert_used", "context_max", "n_vocab", "n_ff_exp")
    return {**{k: config for k in keys}, **extra}


def qwen3_coder_active_bytes() -> float:
    """Bytes a Qwen3-Coder-30B-A3B Q8_0 GGUF reads per decoded token, from its config shapes: Q8_0
    (34 bytes per 32 weights) attention (q 2048→4096, k/v 2048→512, o 4096→2048), 8 of 128 experts
    (3 × 2048 × 768 each) and the output head (151936 × 2048), plus the F32 router (2048 × 128),
    which llama-quantize leaves unquantized; per layer × 48. No published tensor listing was found,
    so this is computed, not measured (≈3.27 GB; gpt-oss-120b's 3.594 GB is measured)."""
    q8 = 34 / 32
    attn = 2048 * 4096 + 2 * 2048 * 512 + 4096 * 2048
    experts = 8 * 3 * 2048 * 768
    return 48 * ((attn + experts) * q8 + 2048 * 128 * 4) + 151936 * 2048 * q8


# Qwen3-235B-A22B-Instruct-2507: a qwen3moe larger than one GB10 (its Q4_K_M GGUF is 132.85 GiB), the
# catalogue's model for a pair of boxes.
_QWEN235_CONFIG = ("Qwen/Qwen3-235B-A22B-Instruct-2507 config.json (HF): num_hidden_layers 94, num_attention_heads 64, "
                   "num_key_value_heads 4, head_dim 128, hidden_size 4096, use_sliding_window false, num_experts 128, "
                   "num_experts_per_tok 8, moe_intermediate_size 1536, max_position_embeddings 262144, "
                   "rope_theta 5000000, vocab_size 151936, tie_word_embeddings false (quoted whole in public code, "
                   "e.g. a dashboard's _DEMO_CONFIG 'mirroring Qwen3-235B'); Qwen's model card (verbatim in "
                   "github.com/akash-network/awesome-akash Qwen3-235B-A22B-Instruct-2507/README.md): 94 layers, "
                   "64 Q / 4 KV heads, 128 experts, 8 activated, 262,144 tokens natively; the widths (4096, 1536, 128, "
                   "151936) also in THUDM/slime scripts/models/qwen3-235B-A22B.sh")
_QWEN235_REPO = "bartowski/Qwen_Qwen3-235B-A22B-Instruct-2507-GGUF"
_QWEN235_QUANT = "Qwen_Qwen3-235B-A22B-Instruct-2507-Q4_K_M"
# The four Q4_K_M shards' sizes in the Hub's tree listing (api/models/<repo>/tree/main?recursive=true) of the repo,
# as a public test of a Hugging Face GGUF picker holds it (its fixture is that listing; the test sums the set as
# 39_856_336_448 + 39_847_230_560 * 2 + 23_096_107_744; which shard carries which of the two ~39.85 GB sizes is
# that order, the first holding the ~9.1 MB header with the tokenizer).
QWEN235_SHARD_BYTES = (39_856_336_448, 39_847_230_560, 39_847_230_560, 23_096_107_744)


def qwen3_235b_active_bytes() -> float:
    """Bytes the Q4_K_M GGUF of Qwen3-235B-A22B reads per decoded token, from its config shapes: attention
    (q 4096→8192, k/v 4096→512, o 8192→4096), 8 of 128 experts (3 × 4096 × 1536 each) and the output head
    (151936 × 4096) at the file's average 4.854 bits per weight (142,646,905,312 bytes over 235,093,634,560
    weights: Q4_K_M mixes Q4_K and Q6_K per tensor, and no tensor listing was found), plus the F32 router
    (4096 × 128); per layer × 94. Computed, not measured (≈13.25 GB)."""
    bpw = sum(QWEN235_SHARD_BYTES) * 8 / 235_093_634_560
    attn = 4096 * 8192 + 2 * 4096 * 512 + 8192 * 4096
    experts = 8 * 3 * 4096 * 1536
    return (94 * (attn + experts) + 151936 * 4096) * bpw / 8 + 94 * 4096 * 128 * 4


CATALOGUE: dict[str, CatalogueEntry] = {
    "gpt-oss-120b": CatalogueEntry(
        Architecture("gpt-oss-120b", n_layer=36, n_head=64, n_head_kv=8, head_dim=64, n_embd=2880,
                     sliding_window=128, n_swa_layers=18, n_expert=128, n_expert_used=4, context_max=131072,
                     n_vocab=201088, weights_bytes=int(59.02 * GIB), params_total=116.83e9, params_active=5.1e9,
                     active_bytes_per_token=3.594e9, arch="gpt-oss", n_ff_exp=2880, source="catalogue"),
        "ggml-org/gpt-oss-120b-GGUF",
        ("gpt-oss-120b-mxfp4-00001-of-00003.gguf", "gpt-oss-120b-mxfp4-00002-of-00003.gguf",
         "gpt-oss-120b-mxfp4-00003-of-00003.gguf"),
        _shape_sources(
            _OSS_CONFIG.format("120b") + ": num_hidden_layers 36, num_attention_heads 64, num_key_value_heads 8, "
            "head_dim 64, hidden_size 2880, intermediate_size 2880, sliding_window 128, layer_types "
            "[sliding, full] × 18, num_local_experts 128, experts_per_token 4, max_position_embeddings 131072, "
            "vocab_size 201088",
            weights_bytes=_BENCH.format("ggml-org/gpt-oss-120b-GGUF: 59.02 GiB"),
            params_total=_BENCH.format("ggml-org/gpt-oss-120b-GGUF: 116.83 B"),
            params_active="OpenAI model card: 117B total / 5.1B active (research/spark.md §7)",
            active_bytes_per_token="tensor sizes of the ggml-org GGUF: attention Q8_0 1015.2 MB + 4 of 128 experts "
                                   "MXFP4 1903.6 MB + router 53.1 MB + output head 615.3 MB = 3.594 GB "
                                   "(research/gpu-standin.md §6)")),
    "gpt-oss-20b": CatalogueEntry(
        Architecture("gpt-oss-20b", n_layer=24, n_head=64, n_head_kv=8, head_dim=64, n_embd=2880,
                     sliding_window=128, n_swa_layers=12, n_expert=32, n_expert_used=4, context_max=131072,
                     n_vocab=201088, weights_bytes=int(11.27 * GIB), params_total=20.91e9, params_active=3.6e9,
                     active_bytes_per_token=2.575e9, arch="gpt-oss", n_ff_exp=2880, source="catalogue"),
        "ggml-org/gpt-oss-20b-GGUF", ("gpt-oss-20b-mxfp4.gguf",),
        _shape_sources(
            _OSS_CONFIG.format("20b") + ": as 120b but num_hidden_layers 24 (layer_types × 12) and "
            "num_local_experts 32",
            weights_bytes=_BENCH.format("ggml-org/gpt-oss-20b-GGUF: 11.27 GiB"),
            params_total=_BENCH.format("ggml-org/gpt-oss-20b-GGUF: 20.91 B"),
            params_active="OpenAI model card: 21B total / 3.6B active (research/spark.md §7)",
            active_bytes_per_token="tensor sizes of the ggml-org GGUF: attention 676.8 MB + 4 of 32 experts "
                                   "1269.0 MB + router 8.9 MB + output head 615.3 MB = 2.575 GB "
                                   "(research/gpu-standin.md §6)")),
    # (before qwen3-coder-30b-a3b, so that 01's list of models for another engine still ends with it, as
    # tests/test_host.py pins)
    # Larger than one GB10 (132.85 GiB of weights against ~117.7 GiB usable), half of it fits one (66.4 GiB):
    # a model for a pair of boxes, each holding half its layers. 03 downloads its four shards like any other.
    "qwen3-235b-a22b-2507": CatalogueEntry(
        Architecture("Qwen3-235B-A22B-Instruct-2507", n_layer=94, n_head=64, n_head_kv=4, head_dim=128, n_embd=4096,
                     sliding_window=0, n_swa_layers=0, n_expert=128, n_expert_used=8, context_max=262144,
                     n_vocab=151936, weights_bytes=sum(QWEN235_SHARD_BYTES), params_total=235_093_634_560,
                     params_active=22e9, active_bytes_per_token=qwen3_235b_active_bytes(), arch="qwen3moe",
                     n_ff_exp=1536, source="catalogue"),
        _QWEN235_REPO,
        tuple(f"{_QWEN235_QUANT}/{_QWEN235_QUANT}-{i:05d}-of-00004.gguf" for i in range(1, 5)),
        _shape_sources(
            _QWEN235_CONFIG,
            weights_bytes=f"{_QWEN235_REPO} Q4_K_M, the sum of its four shards' sizes in the Hub's tree listing "
                          "(39,856,336,448 + 39,847,230,560 + 39,847,230,560 + 23,096,107,744 = 142,646,905,312 "
                          "bytes = 132.85 GiB, as a public test of an HF GGUF picker quotes that listing); file "
                          "bytes, so the ~9 MB of GGUF headers count as weights (slightly over the tensor data); "
                          "other listings of the same set say 142 GB in 4 shards",
            params_total="computed from the config shapes (94 × (attention 71,303,168 + norms 8,448 + router "
                         "524,288 + 128 experts × 18,874,368) + 2 × 151936 × 4096 + 4096 = 235,093,634,560); "
                         "llama-bench prints 235.09 B for a qwen3moe 235B.A22B Q4_K_M GGUF",
            params_active="Qwen model card: 235B in total and 22B activated",
            active_bytes_per_token="computed from the config shapes at the file's average bits per weight "
                                   "(qwen3_235b_active_bytes: 8 of 128 experts, attention, head, F32 router); "
                                   "not measured")),
    "qwen3-coder-30b-a3b": CatalogueEntry(
        Architecture("Qwen3-Coder-30B-A3B-Instruct", n_layer=48, n_head=32, n_head_kv=4, head_dim=128, n_embd=2048,
                     sliding_window=0, n_swa_layers=0, n_expert=128, n_expert_used=8, context_max=262144,
                     n_vocab=151936, weights_bytes=int(30.25 * GIB), params_total=30.53e9, params_active=3.3e9,
                     active_bytes_per_token=qwen3_coder_active_bytes(), arch="qwen3moe", n_ff_exp=768,
                     source="catalogue"),
        "ggml-org/Qwen3-Coder-30B-A3B-Instruct-Q8_0-GGUF", ("qwen3-coder-30b-a3b-instruct-q8_0.gguf",),
        _shape_sources(
            _QWEN_CONFIG + ": num_hidden_layers 48, num_attention_heads 32, num_key_value_heads 4, head_dim 128, "
            "hidden_size 2048, use_sliding_window false (so no sliding-window layers), num_experts 128, "
            "num_experts_per_tok 8, moe_intermediate_size 768, max_position_embeddings 262144, vocab_size 151936",
            weights_bytes=_BENCH.format("ggml-org/Qwen3-Coder-30B-A3B-Instruct-Q8_0-GGUF: 30.25 GiB"),
            params_total=_BENCH.format("ggml-org/Qwen3-Coder-30B-A3B-Instruct-Q8_0-GGUF: 30.53 B"),
            params_active="Qwen model card: 30.5B in total and 3.3B activated",
            active_bytes_per_token="computed from the config shapes (qwen3_coder_active_bytes: Q8_0 attention, "
                                   "8 of 128 experts and head, F32 router); not measured")),
}

# What each engine loads for a catalogue model (spark.md §7): SGLang/vLLM the root safetensors of
# the HF repo, Ollama its own blob (ollama.com/library/gpt-oss). None, or a model missing here: not
# in our sources (01 and 02 then fall back to the catalogue's GGUF size and say so). llama.cpp: the
# catalogue's GGUF size.
ENGINE_WEIGHTS: dict[str, dict[str, float | None]] = {
    "gpt-oss-120b": {"vllm": 65e9, "sglang": 65e9, "ollama": 65e9},
    "gpt-oss-20b": {"vllm": 13.8e9, "sglang": 13.8e9, "ollama": 14e9},
    # model.safetensors.index.json total_size of Qwen/Qwen3-Coder-30B-A3B-Instruct (BF16)
    "qwen3-coder-30b-a3b": {"vllm": 61064245248, "sglang": 61064245248, "ollama": None},
    # not in our sources: its BF16 safetensors' total_size, and an Ollama tag of the 2507 Instruct
    "qwen3-235b-a22b-2507": {"vllm": None, "sglang": None, "ollama": None},
}


# Where each weights layout of a catalogue model comes from (engines.EngineSpec.weights): the root
# safetensors of the maker's Hub repo (SGLang, vLLM) and the Ollama library tag (ollama.com/library).
WEIGHTS_SOURCES: dict[str, dict[str, str]] = {
    "gpt-oss-120b": {"safetensors": "openai/gpt-oss-120b", "ollama": "gpt-oss:120b"},
    "gpt-oss-20b": {"safetensors": "openai/gpt-oss-20b", "ollama": "gpt-oss:20b"},
    "qwen3-coder-30b-a3b": {"safetensors": "Qwen/Qwen3-Coder-30B-A3B-Instruct", "ollama": "qwen3-coder:30b"},
}


def engine_download_bytes(model: str, engine: str) -> int | None:
    """What `engine` itself downloads of catalogue `model` (ENGINE_WEIGHTS); None where our sources don't say."""
    size = ENGINE_WEIGHTS.get(model, {}).get(engine)
    return int(size) if size else None


SERVABLE = tuple(k for k, e in CATALOGUE.items() if e.servable)
# The tiny stand-ins sparkkit generates and serves on the CPU where there is no GB10 (the embedded default),
# each with the catalogue model whose architecture, chat template and tool-call format it has.
EMBEDDED = {"embedded": "gpt-oss-120b", "embedded-qwen3-coder": "qwen3-coder-30b-a3b"}
MODEL_CHOICES = ("auto", *EMBEDDED, *SERVABLE)


def is_embedded(model: str) -> bool:
    return model in EMBEDDED


# ---------------------------------------------------------------------------------------------- GGUF

def _gguf_reader_class():
    import gguf
    import numpy as np
    from gguf import GGUFValueType

    class GGUFHeader(gguf.GGUFReader):
        """`gguf.GGUFReader`, header only: the package parses magic, version, byte order, metadata and
        tensor infos as usual; arrays are kept whole (one numpy view, not one per element) and arrays
        of strings (the vocabulary, the merges) are stepped over, keeping only their length — the
        per-element parsing is what makes GGUFReader take ~12 s on gpt-oss-120b's header. Tensor
        data is never touched (`tensor_infos` instead of memory-mapped `tensors`)."""

        def _get_field_parts(self, orig_offs, raw_type):
            if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            itype = GGUFValueType(raw_itype[0])
            offs, n = orig_offs + 12, int(alen[0])
            types = [GGUFValueType.ARRAY, itype]
            if itype == GGUFValueType.STRING:
                unpack, mv = struct.Struct("<Q" if self.byte_order == "I" else ">Q").unpack_from, memoryview(self.data)
                for _ in range(n):
                    offs += 8 + unpack(mv, offs)[0]
                return offs - orig_offs, [raw_itype, alen], [], types
            nptype = self.gguf_scalar_to_np.get(itype)
            if nptype is None:                                    # nested arrays: the package's own way
                return super()._get_field_parts(orig_offs, raw_type)
            values = self._get(offs, nptype, n)
            return 12 + int(values.nbytes), [raw_itype, alen, values], [2], types

        def _build_tensors(self, start_offs, fields):
            from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
            self.tensor_infos = []
            self.data_end = start_offs          # where the last tensor's bytes end: a cut file ends before it
            for field in fields:
                _nl, name, _nd, dims, raw_dtype, offset = field.parts
                qtype = GGMLQuantizationType(int(raw_dtype[0]))
                n = int(np.prod(dims)) if len(dims) else 1
                block, size = GGML_QUANT_SIZES[qtype]
                self.tensor_infos.append((bytes(name).decode("utf-8"), n, n // block * size))
                self.data_end = max(self.data_end, start_offs + int(offset[0]) + n // block * size)

        def value(self, key: str, default=None):
            f = self.fields.get(key)
            if f is None:
                return default
            if f.types and f.types[0] == GGUFValueType.ARRAY:
                return f.contents() if f.data else None
            return f.contents()

        def array_len(self, key: str) -> int:
            f = self.fields.get(key)
            return int(f.parts[4][0]) if f is not None and f.types and f.types[0] == GGUFValueType.ARRAY else 0

    return GGUFHeader


def read_gguf_header(path: str | Path):
    """A `GGUFHeader` for `path`, or a ParameterError naming the file when it is not a GGUF."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ParameterError("model", str(path), f"a readable GGUF file ({e.strerror})") from e
    if magic != b"GGUF":
        raise ParameterError("model", str(path), "a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        return _gguf_reader_class()(path)
    except (ValueError, KeyError, IndexError, struct.error) as e:
        raise ParameterError("model", str(path), f"a well-formed GGUF file (reading its header failed: {e})") from e


_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def _shards(first: Path) -> list[Path]:
    """All shards of a split GGUF (name-00001-of-0000N.gguf), or just the file; missing ones are an error."""
    m = _SPLIT.search(first.name)
    if not m:
        return [first]
    total = int(m.group(2))
    paths = [first.with_name(_SPLIT.sub(f"-{i:05d}-of-{total:05d}.gguf", first.name)) for i in range(1, total + 1)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise ParameterError("model", str(first), f"all {total} shards of the split GGUF in one folder "
                                                  f"(missing: {', '.join(missing)})")
    return paths


def from_gguf(path: str | Path) -> Architecture:
    """Read the architecture from a GGUF's metadata and tensor infos (a split GGUF: pass any shard's
    path; the first holds the metadata, every shard's tensor infos are read)."""
    path = Path(path)
    m = _SPLIT.search(path.name)
    if m and m.group(1) != "00001":
        path = path.with_name(_SPLIT.sub(f"-00001-of-{m.group(2)}.gguf", path.name))
    shards = _shards(path)
    head = read_gguf_header(shards[0])
    arch = head.value("general.architecture")
    if not arch:
        raise ParameterError("model", str(path), "a GGUF file with general.architecture")
    tensors = list(head.tensor_infos)
    heads = [(shards[0], head)] + [(shard, read_gguf_header(shard)) for shard in shards[1:]]
    for shard, h in heads:
        have = shard.stat().st_size
        if h.data_end > have:   # the header promises bytes the file does not hold: a cut copy
            raise ParameterError("model", str(shard), f"a complete GGUF — its tensors need {h.data_end:,} bytes but "
                                                      f"the file holds {have:,} (a cut download or copy: re-run "
                                                      "03-place-model, which checks each file's sha256)")
    for _shard, h in heads[1:]:
        tensors += h.tensor_infos

    def k(name: str, default=None):
        v = head.value(f"{arch}.{name}", default)
        return default if v is None else v

    try:
        n_layer = int(k("block_count"))
        n_embd = int(k("embedding_length"))
        n_head = int(k("attention.head_count"))
    except (TypeError, ValueError) as e:
        raise ParameterError("model", str(path), f"a GGUF with {arch}.block_count, embedding_length and "
                                                 "attention.head_count") from e
    n_head_kv = k("attention.head_count_kv", n_head)
    n_head_kv = int(n_head_kv[0] if isinstance(n_head_kv, list) else n_head_kv)
    window = int(k("attention.sliding_window", 0) or 0)
    n_expert = int(k("expert_count", 0) or 0)
    n_used = int(k("expert_used_count", 0) or 0)
    n_ff = k("expert_feed_forward_length", 0) or k("feed_forward_length", 0) or 0
    n_ff = int(n_ff[0] if isinstance(n_ff, list) else n_ff)
    head_dim = int(k("attention.key_length", 0) or n_embd // n_head)
    # gpt-oss alternates sliding/full attention, even layers sliding (llama.cpp: load_swa_pattern(ml, 2))
    n_swa = n_layer // 2 + n_layer % 2 if (window and arch == "gpt-oss") else 0
    params = sum(n for _, n, _ in tensors)
    data = sum(b for _, _, b in tensors)
    expert = sum(b for name, _, b in tensors if "_exps." in name)
    embd = sum(b for name, _, b in tensors if name.startswith("token_embd."))
    fraction = n_used / n_expert if n_expert else 1.0
    expert_params = sum(n for name, n, _ in tensors if "_exps." in name)
    return Architecture(
        name=str(head.value("general.name") or path.stem), n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_embd=n_embd, sliding_window=window, n_swa_layers=n_swa, n_expert=n_expert,
        n_expert_used=n_used, context_max=int(k("context_length", 0) or 0),
        n_vocab=head.array_len("tokenizer.ggml.tokens") or int(k("vocab_size", 0) or 0), weights_bytes=data,
        params_total=float(params), params_active=float(params - expert_params * (1 - fraction)),
        # a decoded token reads every tensor but the embedding table (one row) and k of n experts
        active_bytes_per_token=float(data - embd - expert + expert * fraction), arch=str(arch), n_ff_exp=n_ff,
        source=f"GGUF header of {path.name}" + (f" (+{len(shards) - 1} shards)" if len(shards) > 1 else ""))


# ---------------------------------------------------------------------------------------------- HF config

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1}


def from_hf_config(path: str | Path) -> Architecture:
    """The architecture of a Hugging Face model folder (config.json, safetensors) — what vLLM and
    SGLang load. Weight bytes: model.safetensors.index.json's total_size, else the .safetensors
    files; MXFP4-quantized experts (gpt-oss) count 17 bytes per 32 weights, the rest its dtype."""
    path = Path(path)
    cfg_path = path / "config.json" if path.is_dir() else path
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ParameterError("model", str(path),
                             f"a Hugging Face model folder with a readable config.json ({e})") from e
    if "text_config" in cfg:
        cfg = {**cfg["text_config"], "quantization_config": cfg.get("quantization_config")}
    try:
        n_layer, n_embd = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
        n_head = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError) as e:
        raise ParameterError("model", str(path), "a config.json with num_hidden_layers, hidden_size and "
                                                 "num_attention_heads") from e
    n_head_kv = int(cfg.get("num_key_value_heads") or n_head)
    head_dim = int(cfg.get("head_dim") or n_embd // n_head)
    n_expert = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    n_used = int(cfg.get("experts_per_token") or cfg.get("num_experts_per_tok") or 0)
    n_ff = int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 0)
    layer_types = cfg.get("layer_types") or []
    window = int(cfg.get("sliding_window") or 0) if (layer_types or cfg.get("use_sliding_window")) else 0
    n_swa = sum(1 for t in layer_types if t == "sliding_attention") if layer_types else (n_layer if window else 0)
    vocab = int(cfg.get("vocab_size") or 0)
    mxfp4 = (cfg.get("quantization_config") or {}).get("quant_method") == "mxfp4"
    dense_b = _DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"), 2)
    attn = n_embd * head_dim * (n_head + 2 * n_head_kv) + n_head * head_dim * n_embd
    router = n_embd * n_expert
    expert = 3 * n_embd * n_ff
    head = vocab * n_embd * (1 if cfg.get("tie_word_embeddings") else 2)
    params = n_layer * (attn + router + n_expert * expert) + head
    expert_b = 17 / 32 if mxfp4 else dense_b
    est_bytes = n_layer * ((attn + router) * dense_b + n_expert * expert * expert_b) + head * dense_b
    weights, how = _safetensors_bytes(path if path.is_dir() else path.parent), "safetensors"
    if not weights:
        weights, how = int(est_bytes), "estimated from config.json shapes (no safetensors found)"
    used = n_used or n_expert
    active = n_layer * ((attn + router) * dense_b + used * expert * expert_b) + vocab * n_embd * dense_b
    return Architecture(
        name=str(cfg.get("_name_or_path") or (path if path.is_dir() else path.parent).name), n_layer=n_layer,
        n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_embd=n_embd, sliding_window=window,
        n_swa_layers=n_swa, n_expert=n_expert, n_expert_used=n_used,
        context_max=int(cfg.get("max_position_embeddings") or 0), n_vocab=vocab, weights_bytes=weights,
        params_total=float(params), params_active=float(params - n_layer * (n_expert - used) * expert),
        active_bytes_per_token=float(active), arch={"gpt_oss": "gpt-oss", "qwen3_moe": "qwen3moe"}.get(
            cfg.get("model_type"), str(cfg.get("model_type"))), n_ff_exp=n_ff,
        source=f"config.json of {cfg_path.parent.name}; weights {how}")


def _safetensors_bytes(folder: Path) -> int:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            return int(json.loads(index.read_text())["metadata"]["total_size"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------- lookup

def architecture(model: str, path: str | Path | None = None) -> Architecture:
    """The model's architecture: from its files when present (GGUF, or a folder with config.json),
    else from the catalogue."""
    if path and Path(path).exists():
        p = Path(path)
        if p.is_dir() or p.suffix == ".json":
            return from_hf_config(p)
        return from_gguf(p)
    if model in CATALOGUE:
        return CATALOGUE[model].arch
    if model == "embedded":
        from .tinymodel import TinySpec
        return embedded_architecture(TinySpec())
    if model == "embedded-qwen3-coder":
        from .tinyqwen import QwenSpec
        q = QwenSpec()
        approx_bytes = 2_500_000
        return Architecture(
            name="tiny-qwen3-coder", n_layer=q.n_layer, n_head=q.n_head, n_head_kv=q.n_head_kv,
            head_dim=q.head_dim, n_embd=q.n_embd, sliding_window=0, n_swa_layers=0, n_expert=q.n_expert,
            n_expert_used=q.n_expert_used, context_max=q.context_length, n_vocab=5300, weights_bytes=approx_bytes,
            params_total=6e5, params_active=3e5, active_bytes_per_token=approx_bytes / 2, arch="qwen3moe",
            n_ff_exp=q.n_ff_exp, source="tinyqwen.QwenSpec (before 03 generates the file)")
    raise SparkkitError(f"no architecture known for {model!r} and no model file at {path}")


def embedded_architecture(spec) -> Architecture:
    """The embedded tiny model's shapes, known before 03 generates it (sizes are approximate; 02
    reads the real ones from the file once 03 has placed it)."""
    approx_bytes = 220 * 1024
    return Architecture(
        name="tiny-gpt-oss", n_layer=spec.n_layer, n_head=spec.n_head, n_head_kv=spec.n_head_kv,
        head_dim=spec.head_dim, n_embd=spec.n_embd, sliding_window=spec.sliding_window,
        n_swa_layers=spec.n_layer // 2 + spec.n_layer % 2, n_expert=spec.n_expert,
        n_expert_used=spec.n_expert_used, context_max=spec.context_length, n_vocab=350,
        weights_bytes=approx_bytes, params_total=1e5, params_active=5e4, active_bytes_per_token=approx_bytes / 2,
        arch="gpt-oss", n_ff_exp=spec.n_ff_exp, source="tinymodel.TinySpec (before 03 generates the file)")


def resolve(model: str, target: str) -> str:
    """`auto` → gpt-oss-120b on a GB10 box, the embedded tiny model elsewhere."""
    from .errors import check_choice
    check_choice("model", model, MODEL_CHOICES)
    if model == "auto":
        return "gpt-oss-120b" if target == "gb10" else "embedded"
    return model


def with_size(arch: Architecture, weights_bytes: int) -> Architecture:
    return replace(arch, weights_bytes=weights_bytes)


ARCH_FIELDS = tuple(f.name for f in fields(Architecture))
