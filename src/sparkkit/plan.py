"""The memory and speed plan for serving a model (runbook 02), and the context tuner's core.

Memory, per engine, against the usable memory 01 measured (MemAvailable + SwapFree − headroom):

- **llamacpp**: what llama.cpp itself allocates — the weights; the KV cache per layer type (gpt-oss:
  the 18 full-attention layers hold the whole context, the 18 sliding-window layers only
  `pad256(window × slots + ubatch)` cells; `--kv-unified` shares one pool among the slots, without
  it each slot gets its own stream); the compute buffers, replayed from llama.cpp's own graph and
  allocator (sparkkit.llamacpp_memory, checked against the engine's log); the output buffer; and
  the server's own reserves: the host prompt cache (`--cache-ram`, 8 GiB by default) and up to 32
  sliding-window context checkpoints per slot (`--ctx-checkpoints`).
- **vllm** / **sglang**: KV for all layers (neither engine keeps gpt-oss's sliding layers small);
  each takes a fixed fraction of the GPU memory at start (`--gpu-memory-utilization`,
  `--mem-fraction-static`) and fills what the weights leave with KV cache.
- **ollama**: its own reservation for gpt-oss (sliding layers sized at 4096 × parallel + batch),
  with the context Ollama picks by itself unless OLLAMA_CONTEXT_LENGTH says otherwise.

Speed: decode is bandwidth-bound — a token reads the active weights plus the KV it attends to, at
~77 % of the GB10's 273 GB/s (what llama.cpp reaches there, gpu-standin.md §6); prefill is
compute-bound — 2 FLOPs per active weight plus attention, at the rate llama.cpp reaches on a Spark
for gpt-oss-120b. Both fall with context depth and sit next to the published Spark numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from . import llamacpp_memory as lcm
from .errors import ParameterError, check_choice, check_int
from . import engines as _engines
from .engines.launch import CTX_CHECKPOINTS
from .engines.serving import Serving
from .model import CATALOGUE, EMBEDDED, GIB, Architecture, engine_download_bytes, is_embedded
from .tables import WholeTable

MIB = 1024**2
# The engines, their names and KV types: one registry (sparkkit.engines), read here.
ENGINES = _engines.ENGINES
ENGINE_NAMES = {name: s.label for name, s in _engines.specs().items()}
KV_TYPES = {name: s.kv_types for name, s in _engines.specs().items()}
KV_BYTES_PER_ELEMENT = {**lcm.KV_TYPE_BYTES, "fp8": 1.0}
# Quantized KV types store blocks of this many values; llama.cpp refuses them when a head's size is not a
# multiple (ggml's row size must be whole blocks).
KV_BLOCK = {"q8_0": 32, "q4_0": 32}
BACKENDS = ("cuda", "cpu")
TIGHT = 0.90                # above 90 % of usable memory the desktop and page cache start to fight it

# llama-server's own reserves (common/common.h of b11549, tools/server): the host prompt cache
# (--cache-ram, MiB; it always keeps at least one saved state, even one larger than the limit) and
# the context checkpoints of models with sliding-window attention (--ctx-checkpoints per slot).
LLAMACPP_CACHE_RAM = 8192 * MIB
# sparkkit sizes the cache for the model and passes it (--cache-ram), so plan and launch agree: room for
# CACHE_RAM_STATES whole-context slot states, at least CACHE_RAM_MIN, at most llama.cpp's 8 GiB default
# (gpt-oss-120b and -20b keep the 8 GiB; the embedded tiny model gets 256 MiB and plans on a 4 GiB host).
CACHE_RAM_STATES = 4
CACHE_RAM_MIN = 256 * MIB
LLAMACPP_CTX_CHECKPOINTS = CTX_CHECKPOINTS   # llama-server's default (engines.launch)
# CUDA context, cuBLAS workspaces and the like beyond the logged buffers: nvidia-smi showed
# +596…600 MiB over the sum of llama.cpp's buffers for gpt-oss 20b and 120b (gpu-standin.md §4), and
# 597…600 MiB for b11549 on an H100 across eight shapes and settings (sparkkit's own check, 2026-11-26).
CUDA_RUNTIME = 600 * MIB
# What cudaMemGetInfo calls "total" on a GB10 (spark.md §2) — the base of the vLLM/SGLang fractions.
GB10_TOTAL = int(121.69 * GIB)
# The memory fraction vLLM/SGLang take at start: each engine module's MEM_FRACTION (engines.md §3–4).
MEM_FRACTION = {name: _engines.module(name).MEM_FRACTION for name in ("sglang", "vllm")}
# Ollama (engines.md §2, peers.md §4): default context by VRAM since v0.15.5 (<24 GiB 4k, 24–48 GiB
# 32k, ≥48 GiB 256k, clamped to the model's maximum); its gpt-oss estimate keeps the sliding layers
# at 4096 × parallel + batch tokens; its compute graph ≈ 4 × parallel + context/1024 + 110 MiB.
OLLAMA_BATCH = 512
OLLAMA_SWA_TOKENS = 4096
# What each engine loads for a catalogue model: sparkkit.model.ENGINE_WEIGHTS (01 reads it too).

ROOFLINE_EFFICIENCY = 0.77  # llama.cpp decode reaches 75–79 % of the Spark's bandwidth (gpu-standin.md §6)
GB10_BANDWIDTH = 273e9      # bytes/s, LPDDR5x (NVIDIA spec)

# Published Spark numbers (llama.cpp benches/dgx-spark.md, build 2f68ce7cf, llama-bench -fa 1 -ub 2048
# -p 2048 -n 32, mmap 0; research/spark.md §8): depth → (prefill tok/s, decode tok/s).
PUBLISHED_SPARK = {
    "gpt-oss-120b": {0: (1937.54, 59.02), 4096: (1653.89, 53.95), 8192: (1580.60, 51.85),
                     16384: (1411.42, 48.03), 32768: (1155.40, 41.35)},
    "gpt-oss-20b": {0: (3782.76, 84.10), 4096: (3030.29, 77.36), 8192: (2852.09, 74.00),
                    16384: (2470.31, 68.85), 32768: (1899.37, 59.85)},
    "qwen3-coder-30b-a3b": {0: (3175.62, 60.92), 4096: (2704.06, 53.52), 8192: (2381.88, 48.58),
                            16384: (1900.91, 40.81), 32768: (1292.19, 30.80)},
}
# Other engines on a Spark, batch 1 (research/spark.md §8): (engine, model, prefill, decode, source).
PUBLISHED_OTHER = (
    ("llama.cpp + native MXFP4 (PR #17906)", "gpt-oss-120b", 2438.1, 57.8, "NVIDIA forum, Dec 2025"),
    ("Ollama v0.12.6", "gpt-oss-120b", 1169.0, 41.14, "ollama.com/blog/nvidia-spark-performance"),
    ("SGLang (lmsysorg/sglang:spark)", "gpt-oss-120b", None, 50.0, "LMSYS blog 2025-11-03"),
    ("vLLM, tuned MXFP4 build", "gpt-oss-120b", None, 58.8, "Spark Arena leaderboard"),
    ("vLLM, stock NGC container", "gpt-oss-120b", None, 36.5, "dgx-spark-playbooks#79: ~33–40"),
    ("Ollama v0.12.6", "gpt-oss-20b", 3224.0, 58.27, "ollama.com/blog/nvidia-spark-performance"),
    ("SGLang", "gpt-oss-20b", None, 70.0, "LMSYS blog 2025-11-03"),
)


def _pad(n: int, to: int = 256) -> int:
    return -(-n // to) * to


def catalogue_key(arch: Architecture) -> str | None:
    """The catalogue model this architecture is (by name, else by shape), for published numbers."""
    for key, entry in CATALOGUE.items():
        if arch.name in (key, entry.arch.name):
            return key
    for key, entry in CATALOGUE.items():
        a = entry.arch
        if (a.arch, a.n_layer, a.n_embd, a.n_expert, a.n_head_kv) == (arch.arch, arch.n_layer, arch.n_embd,
                                                                       arch.n_expert, arch.n_head_kv):
            return key
    return None


@dataclass(frozen=True)
class Plan:
    arch: Architecture
    context: int
    slots: int
    kv_type: str
    ubatch: int
    usable_bytes: int
    rows: tuple[tuple[str, int, str], ...]   # (component, bytes, how it was computed) — counted
    engine: str = "llamacpp"
    backend: str = "cuda"
    aside: tuple[tuple[str, int, str], ...] = ()   # shown, not counted against usable memory
    refusal: str = ""        # why the engine itself would refuse this plan (vLLM/SGLang: KV pool too small)
    notes: tuple[str, ...] = ()
    cache_ram: int = 0       # llama.cpp's host prompt cache, bytes: 05 passes it as --cache-ram (MiB)
    serving: Serving | None = None   # the settings this plan counted: 05 launches exactly these
    boxes: tuple["BoxPlan", ...] = ()   # a pair: what each box holds (rows above are their sum)

    @property
    def total_bytes(self) -> int:
        return sum(b for _, b, _ in self.rows)

    @property
    def verdict(self) -> str:
        if self.boxes:                  # a pair fits only where each box fits
            order = ("fits", "tight", "does not fit")
            return "does not fit" if self.refusal else max((b.verdict for b in self.boxes), key=order.index)
        if self.refusal or self.total_bytes > self.usable_bytes:
            return "does not fit"
        return "fits" if self.total_bytes <= TIGHT * self.usable_bytes else "tight"

    def boxes_table(self) -> pd.DataFrame:
        """A pair's plan, one column per box (GiB), components as rows: the table people compare."""
        names = [b.name for b in self.boxes]
        comps: list[str] = []
        for b in self.boxes:
            comps += [n for n, _, _ in b.rows if n not in comps]
        rows = [{"component": c, **{b.name: round(next((x for n, x, _ in b.rows if n == c), 0) / GIB, 3)
                                    for b in self.boxes}} for c in comps]
        rows.append({"component": "total", **{b.name: round(b.total_bytes / GIB, 3) for b in self.boxes}})
        rows.append({"component": "usable", **{b.name: round(b.usable_bytes / GIB, 3) for b in self.boxes}})
        rows.append({"component": "verdict", **{b.name: b.verdict for b in self.boxes}})
        rows.append({"component": "layers", **{b.name: b.layer_text for b in self.boxes}})
        rows.append({"component": "llama.cpp device", **{b.name: b.device for b in self.boxes}})
        del names
        return WholeTable(rows)

    def kv_bytes(self) -> int:
        return sum(b for name, b, _ in self.rows if name.startswith("KV"))

    def row(self, name: str) -> int:
        return next(b for n, b, _ in (*self.rows, *self.aside) if n == name)

    def table(self) -> pd.DataFrame:
        rows = [{"component": n, "GiB": round(b / GIB, 3), "how": how} for n, b, how in self.rows]
        rows += [{"component": f"({n})", "GiB": round(b / GIB, 3), "how": f"not counted: {how}"}
                 for n, b, how in self.aside]
        why = self.refusal or f"usable {self.usable_bytes / GIB:.1f} GiB"
        rows.append({"component": "total", "GiB": round(self.total_bytes / GIB, 3), "how": f"{self.verdict}: {why}"})
        return WholeTable(rows)            # "every row says how it was computed": whole, not cut at 50 characters

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.arch.name, "engine": self.engine, "backend": self.backend, "context": self.context,
                "slots": self.slots, "kv_type": self.kv_type, "ubatch": self.ubatch, "usable_bytes": self.usable_bytes,
                "total_bytes": self.total_bytes, "kv_bytes": self.kv_bytes(), "verdict": self.verdict,
                "refusal": self.refusal, "notes": list(self.notes),
                "cache_ram_mib": self.cache_ram // MIB if self.cache_ram else None,
                "serving": self.serving.to_dict() if self.serving else None,
                "rows": [{"component": n, "bytes": b, "how": h} for n, b, h in self.rows],
                "aside": [{"component": n, "bytes": b, "how": h} for n, b, h in self.aside],
                "boxes": [b.to_dict() for b in self.boxes]}


@dataclass(frozen=True)
class BoxPlan:
    """One box of a pair: the layers llama.cpp puts on it and what they and the box's own reserves take."""
    name: str                 # "this box" / the peer's name
    device: str               # how llama.cpp's log names its buffers: CUDA0, RPC0[addr:port]
    layers: tuple[int, ...]   # the repeating layers it holds (0-based)
    output: bool              # it holds the output layer (norm + head)
    usable_bytes: int
    rows: tuple[tuple[str, int, str], ...]

    @property
    def total_bytes(self) -> int:
        return sum(b for _, b, _ in self.rows)

    @property
    def verdict(self) -> str:
        if self.total_bytes > self.usable_bytes:
            return "does not fit"
        return "fits" if self.total_bytes <= TIGHT * self.usable_bytes else "tight"

    @property
    def layer_text(self) -> str:
        if "tensor-parallel" in self.device:
            return "every layer, half of each"
        if not self.layers:
            return "output only" if self.output else "none"
        return f"{self.layers[0]}–{self.layers[-1]}" + (" + output" if self.output else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "layers": self.layer_text, "n_layers": len(self.layers),
                "output": self.output, "usable_bytes": self.usable_bytes, "total_bytes": self.total_bytes,
                "verdict": self.verdict, "rows": [{"component": n, "bytes": b, "how": h} for n, b, h in self.rows]}


RPC_PORT = 50052            # rpc-server's default port (llama.cpp tools/rpc)


@dataclass(frozen=True)
class PairSpec:
    """What 02 plans a pair of boxes with (llama.cpp over its RPC backend), from 01's `pair` section."""
    peer_name: str
    head_usable: int
    peer_usable: int
    rpc: tuple[str, ...]             # --rpc endpoints, llama.cpp's device order: the peer, then a CPU head's own
    layers: Any                      # split.LayerBytes
    split: tuple[int, ...] = ()      # fixed layer counts (else balanced by 02)


def kv_types_for(arch: Architecture, engine: str = "llamacpp") -> tuple[str, ...]:
    """The KV cache types `engine` accepts for `arch` (quantized blocks must divide the head size)."""
    return tuple(t for t in KV_TYPES[engine] if engine not in ("llamacpp", "ollama")
                 or arch.head_dim % KV_BLOCK.get(t, 1) == 0)


def validate(arch: Architecture, context: int, slots: int, kv_type: str, ubatch: int = 2048,
             engine: str = "llamacpp") -> None:
    """One clear error per bad parameter, naming it and what it accepts."""
    check_choice("engine", engine, ENGINES)
    check_int("context", context, 256, arch.context_max)
    check_int("slots", slots, 1, 256)
    check_choice("kv_type", kv_type, KV_TYPES[engine])
    check_int("ubatch", ubatch, 1, 65536)
    if kv_type not in kv_types_for(arch, engine):
        block = KV_BLOCK[kv_type]
        raise ParameterError("kv_type", kv_type, f"{', '.join(kv_types_for(arch, engine))} for {arch.name}: its head "
                                                 f"size {arch.head_dim} is "
                                                 f"not a multiple of {kv_type}'s {block}-value blocks, so llama.cpp "
                                                 "refuses that KV cache type")
    if context // slots < 256:
        raise ParameterError("slots", slots, f"1 to {max(context // 256, 1)} for context {context} "
                                             "(each slot needs >= 256 tokens)")


def plan_memory(arch: Architecture, context: int, slots: int = 1, kv_type: str = "f16", ubatch: int = 2048,
                usable_bytes: int = 0, kv_unified: bool = True, swa_full: bool = False, engine: str = "llamacpp",
                backend: str = "cuda", discrete_gpu: bool = False, total_memory: int = GB10_TOTAL,
                mem_fraction: float | None = None, cache_ram: int | None = None,
                ctx_checkpoints: int = LLAMACPP_CTX_CHECKPOINTS, pair: PairSpec | None = None) -> Plan:
    """The plan for `engine` serving `arch` with `context` tokens shared by `slots` (llama.cpp: a
    unified KV pool unless kv_unified is False). `backend`: llama.cpp's cuda build (GB10, a GPU)
    or the CPU (the embedded engine). `discrete_gpu`: usable memory is the GPU's own; what lives in
    host RAM is shown aside. `total_memory`: the base of vLLM/SGLang's memory fraction."""
    validate(arch, context, slots, kv_type, ubatch, engine)
    check_choice("backend", backend, BACKENDS)
    if engine == "llamacpp":
        if cache_ram is None:
            cache_ram = cache_ram_for(arch, context, slots, kv_type, ubatch, kv_unified, swa_full)
        plan = _plan_llamacpp(arch, context, slots, kv_type, ubatch, usable_bytes, kv_unified, swa_full, backend,
                              discrete_gpu, cache_ram, ctx_checkpoints)
        serving = Serving(engine, context, slots, kv_type, ubatch, kv_unified=kv_unified, swa_full=swa_full,
                          cache_ram_mib=cache_ram // MIB, ctx_checkpoints=ctx_checkpoints)
        if pair is not None:
            plan = _plan_pair(replace(plan, serving=serving), pair, backend)
            serving = replace(serving, split=plan.serving.split, rpc=pair.rpc)
    elif engine == "ollama":
        plan = _plan_ollama(arch, context, slots, kv_type, ubatch, usable_bytes, total_memory)
        serving = Serving(engine, context, slots, kv_type, ubatch)
    else:
        fraction = MEM_FRACTION[engine] if mem_fraction is None else mem_fraction
        if pair is not None:
            plan = _plan_pool_pair(arch, context, slots, kv_type, ubatch, engine, total_memory, fraction, pair)
        else:
            plan = _plan_pool(arch, context, slots, kv_type, ubatch, usable_bytes, engine, total_memory, fraction)
        serving = Serving(engine, context, slots, kv_type, ubatch, mem_fraction=fraction)
    return replace(plan, serving=serving)


def slot_state_bytes(arch: Architecture, context: int, slots: int, kv_type: str, ubatch: int,
                     unified: bool = True, swa_full: bool = False) -> int:
    """One slot's saved state (what the host prompt cache stores per prompt): its share of the KV cache."""
    lay = lcm.kv_layout(arch, context, slots, ubatch, unified, swa_full)
    full, swa = lcm.kv_bytes(arch, lay, kv_type)
    return full // max(lay.n_stream, 1) + swa // max(lay.n_stream, 1)


def cache_ram_for(arch: Architecture, context: int, slots: int = 1, kv_type: str = "f16", ubatch: int = 2048,
                  unified: bool = True, swa_full: bool = False) -> int:
    """The host prompt cache sparkkit passes as --cache-ram for this model and context (bytes, whole MiB)."""
    want = CACHE_RAM_STATES * slot_state_bytes(arch, context, slots, kv_type, ubatch, unified, swa_full)
    return -(-min(LLAMACPP_CACHE_RAM, max(CACHE_RAM_MIN, want)) // MIB) * MIB


def _plan_llamacpp(arch, context, slots, kv_type, ubatch, usable, unified, swa_full, backend, discrete,
                   cache_ram, ctx_checkpoints) -> Plan:
    lay = lcm.kv_layout(arch, context, slots, ubatch, unified, swa_full)
    per_cell = 2 * lcm.row_bytes(kv_type, arch.n_head_kv * arch.head_dim)
    full, swa = lcm.kv_bytes(arch, lay, kv_type)
    streams = f"{lay.n_stream} streams × " if lay.n_stream > 1 else ""
    dev: list[tuple[str, int, str]] = [("weights", arch.weights_bytes, f"model tensors ({arch.source or 'catalogue'})")]
    full_layers = arch.n_full_layers if not swa_full else arch.n_layer
    dev.append(("KV full attention", full + (swa if swa_full else 0),
                f"{full_layers} layers × {streams}{lay.cells_full} cells × {per_cell / 1024:.2f} KiB ({kv_type})"))
    if arch.n_swa_layers and not swa_full:
        dev.append(("KV sliding window", swa,
                    f"{arch.n_swa_layers} layers × {streams}{lay.cells_swa} cells (window {arch.sliding_window}"
                    f"{' × ' + str(slots) + ' slots' if unified and slots > 1 else ''} + ubatch {lay.ubatch}, "
                    f"padded to 256)"))
    host: list[tuple[str, int, str]] = []
    verified = arch.arch in lcm.VERIFIED_ARCHS
    how = ("llama.cpp's graph and allocator replayed" + ("" if verified else " (not checked against the engine for "
                                                              f"{arch.arch})"))
    if arch.arch in lcm.SUPPORTED_ARCHS:
        bufs = lcm.compute_buffers(arch, context, slots, ubatch, kv_type, unified, backend, swa_full)
    else:       # no graph replay: the masks plus a generous activation estimate
        est = lay.cells_full * lay.ubatch * 2 + lay.ubatch * 4 * (4 * arch.n_embd + 3 * arch.n_ff_exp *
                                                                  max(arch.n_expert_used, 1))
        bufs = {"CUDA0" if backend == "cuda" else "CPU": est}
        how = "estimate: attention mask + activations (no llama.cpp graph for this architecture)"
    if backend == "cuda" and arch.head_dim not in lcm.CUDA_FA_HEAD_DIMS:
        how = (f"rough: CUDA has no flash-attention kernel for head size {arch.head_dim}, llama.cpp runs attention "
               "on the CPU and splits the graph, which is not replayed")
    if backend == "cuda":
        dev.append(("compute buffer (GPU)", bufs["CUDA0"], f"CUDA0, ubatch {lay.ubatch}: {how}"))
        if "CUDA_Host" in bufs:
            host.append(("compute buffer (host)", bufs["CUDA_Host"], "CUDA_Host: graph inputs (attention masks) "
                                                                     "and token embeddings"))
    else:
        dev.append(("compute buffer", bufs["CPU"], f"ubatch {lay.ubatch}: {how}"))
    host.append(("output buffer", arch.n_vocab * 4 * slots, "logits, f32, one row per slot"))
    state = full // max(lay.n_stream, 1) + swa // max(lay.n_stream, 1)
    if cache_ram:
        host.append(("host prompt cache", max(cache_ram, state),
                     f"--cache-ram {cache_ram // MIB} MiB: saved prompts (at least one whole slot state, "
                     f"{state / GIB:.2f} GiB)"))
    if arch.n_swa_layers and not swa_full and ctx_checkpoints:
        ckpt = arch.n_swa_layers * min(lay.cells_swa, arch.sliding_window + lay.ubatch) * per_cell
        host.append(("context checkpoints", ctx_checkpoints * slots * ckpt,
                     f"up to {ctx_checkpoints} per slot × {ckpt / MIB:.1f} MiB of sliding-window state "
                     "(--ctx-checkpoints)"))
    if backend == "cuda":
        dev.append(("CUDA runtime", CUDA_RUNTIME, "CUDA context and workspaces beyond the buffers "
                                                  "(measured on a GPU, gpu-standin.md §4)"))
    if discrete:
        return Plan(arch, context, slots, kv_type, ubatch, int(usable), tuple(dev), "llamacpp", backend,
                    aside=tuple((n, b, "host RAM, not GPU memory") for n, b, _ in host), cache_ram=cache_ram)
    return Plan(arch, context, slots, kv_type, ubatch, int(usable), tuple(dev + host), "llamacpp", backend,
                cache_ram=cache_ram)


def _plan_pair(one: Plan, pair: PairSpec, backend: str) -> Plan:
    """`one` (the single-box plan) split over the pair the way llama.cpp splits it (sparkkit.split): each box
    holds its layers' weights and KV and computes them in a compute buffer of its own; the head alone holds
    the token embeddings, the host-side buffers, the prompt cache and the checkpoints. A CUDA box has its own
    CUDA runtime. The compute buffers are llama.cpp's graph split over the boxes and replayed, with the input
    copies pipeline parallelism keeps (llamacpp_memory.compute_buffers_split; to the 0.01 MiB on two H200s,
    records/pair)."""
    from . import split as sp
    arch, lb = one.arch, pair.layers
    rows = {n: (b, h) for n, b, h in one.rows}
    full_row = rows.get("KV full attention", (0, ""))[0]
    swa_row = rows.get("KV sliding window", (0, ""))[0]
    swa_full = one.serving.swa_full if one.serving else False
    n_swa = 0 if swa_full else arch.n_swa_layers
    is_swa = [bool(n_swa) and il % 2 == 0 for il in range(arch.n_layer)]   # gpt-oss: even layers slide
    per_full = full_row / max(arch.n_layer - n_swa, 1)
    per_swa = swa_row / max(n_swa, 1)
    dev_rows = ("compute buffer (GPU)", "compute buffer")
    compute = next((rows[n][0] for n in dev_rows if n in rows), 0)
    runtime = rows.get("CUDA runtime", (0, ""))[0]
    head_only = [(n, b, h) for n, b, h in one.rows if n in ("compute buffer (host)", "output buffer",
                                                             "host prompt cache", "context checkpoints")]
    head_fixed = lb.input + sum(b for _, b, _ in head_only)
    n_dev = len(pair.rpc) + (0 if backend == "cpu" else 1)
    names = [pair.peer_name] + ["this box"] * (n_dev - 1)
    room = (pair.peer_usable, pair.head_usable)
    fixed = (compute + runtime, head_fixed + compute + runtime)
    per_layer = (sum(lb.layers) + full_row + swa_row) // max(arch.n_layer, 1)
    split = pair.split or sp.split_for(arch.n_layer, room, fixed, per_layer)
    if len(split) != n_dev or sum(split) != arch.n_layer + 1 or min(split) < 0:
        raise ParameterError("split", ",".join(map(str, split)), f"{n_dev} layer counts (the peer's first) summing to "
                                                                 f"{arch.n_layer + 1}: {arch.n_layer} layers + the output layer")
    where = sp.device_of_layers(arch.n_layer, split)
    sv = one.serving or Serving("llamacpp", one.context)
    dev_compute, host_compute, chow = [compute] * n_dev, None, "one box's compute buffer (no graph replay here)"
    if arch.arch in lcm.SUPPORTED_ARCHS:
        align = lcm.CUDA_ALIGNMENT if backend == "cuda" else lcm.CPU_ALIGNMENT
        bufs = lcm.compute_buffers_split(arch, one.context, one.slots, one.ubatch, one.kv_type, sv.kv_unified,
                                         sv.swa_full, tuple(where), (align,) * n_dev)
        dev_compute, host_compute = list(bufs[:n_dev]), bufs[n_dev]
        chow = (f"llama.cpp's graph split over the boxes and replayed, pipeline parallel "
                f"({lcm.SCHED_MAX_COPIES} copies of every input)")
    if host_compute is not None:
        hrow = ("compute buffer (host)", host_compute, "this box's CPU: the graph inputs (attention masks), "
                f"{lcm.SCHED_MAX_COPIES} copies of each, and the token embeddings")
        if any(n == hrow[0] for n, _, _ in head_only):
            head_only = [hrow if n == hrow[0] else (n, b, h) for n, b, h in head_only]
        elif not any(n == hrow[0] for n, _, _ in one.aside):
            head_only = [hrow] + head_only
    boxes = []
    for d in range(n_dev):
        mine = tuple(il for il in range(arch.n_layer) if where[il] == d)
        out = where[arch.n_layer] == d
        head = d == n_dev - 1
        # how llama.cpp names the box's buffers: each rpc-server's first device is RPC0[endpoint]
        device = f"RPC0[{pair.rpc[d]}]" if d < len(pair.rpc) else "CUDA0"
        w = sum(lb.layers[il] for il in mine) + (lb.output if out else 0)
        r: list[tuple[str, int, str]] = [
            ("weights", w, f"layers {mine[0] if mine else '-'}–{mine[-1] if mine else '-'}"
                           f"{' + output layer' if out else ''} ({lb.source})")]
        if head:
            r.append(("token embeddings", lb.input, "the input layer: llama.cpp keeps it on the head's CPU"))
        nf = sum(1 for il in mine if not is_swa[il])
        ns = len(mine) - nf
        r.append(("KV full attention", int(per_full * nf), f"{nf} of the plan's full-attention layers"))
        if n_swa:
            r.append(("KV sliding window", int(per_swa * ns), f"{ns} of the plan's sliding-window layers"))
        r.append(("compute buffer", dev_compute[d], f"{device}: {chow}"))
        if head:
            r += head_only
        if runtime:
            r.append(("CUDA runtime", runtime, "each box runs its own CUDA context"))
        boxes.append(BoxPlan(names[d], device, mine, out, room[0] if d == 0 else room[1], tuple(r)))
    total_rows = tuple((f"{n} · {b.name}", x, h) for b in boxes for n, x, h in b.rows)
    notes = one.notes + (f"split over {n_dev} devices with -ts {','.join(map(str, split))}: layers per device, "
                         "the peer's first (llama.cpp puts RPC devices first)",)
    aside = one.aside
    if host_compute is not None and any(n == "compute buffer (host)" for n, _, _ in aside):
        aside = tuple((n, host_compute if n == "compute buffer (host)" else b, h) for n, b, h in aside)
    return replace(one, rows=total_rows, usable_bytes=sum(room), boxes=tuple(boxes), notes=notes, aside=aside,
                   serving=replace(one.serving or Serving("llamacpp", one.context), split=tuple(split)))


def _engine_weights(arch: Architecture, engine: str) -> tuple[int, str]:
    key = catalogue_key(arch)
    if arch.source.startswith("config.json"):
        return arch.weights_bytes, arch.source
    w = engine_download_bytes(key or "", engine)
    if w:
        return w, f"{ENGINE_NAMES[engine]}'s download of {key} (spark.md §7)"
    return arch.weights_bytes, f"{arch.source or 'catalogue'} (the {ENGINE_NAMES[engine]} size is not in our sources)"


def kv_per_token_all_layers(arch: Architecture, kv_type: str) -> float:
    return arch.n_layer * arch.kv_bytes_per_token_layer(KV_BYTES_PER_ELEMENT[kv_type])


def _pool_terms(arch: Architecture, engine: str, kv_type: str, fraction: float | None):
    """(fraction, its flag, weights, their source, KV bytes per token) of vLLM/SGLang's memory pool."""
    fraction = MEM_FRACTION[engine] if fraction is None else fraction
    if not 0.1 <= fraction <= 1.0:
        raise ParameterError("mem_fraction", fraction, "a fraction from 0.1 to 1.0")
    flag = "--gpu-memory-utilization" if engine == "vllm" else "--mem-fraction-static"
    return (fraction, flag, *_engine_weights(arch, engine), kv_per_token_all_layers(arch, kv_type))


def _plan_pool(arch, context, slots, kv_type, ubatch, usable, engine, total, fraction) -> Plan:
    fraction, flag, weights, wsrc, per_token = _pool_terms(arch, engine, kv_type, fraction)
    need = int(per_token * context * slots)
    reserved = int(fraction * total)
    pool = reserved - weights
    rows = [("weights", weights, wsrc),
            ("KV all layers", need, f"{arch.n_layer} layers × {context} tokens × {slots} sequence(s) × "
                                    f"{per_token / 1024:.1f} KiB/token ({kv_type}); {ENGINE_NAMES[engine]} does not "
                                    "shrink sliding-window layers")]
    refusal = ""
    if need > pool:
        refusal = (f"{ENGINE_NAMES[engine]} would refuse: its KV pool ({max(pool, 0) / GIB:.1f} GiB = {flag} "
                   f"{fraction} × {total / GIB:.1f} GiB − weights) holds {max(pool, 0) / per_token:,.0f} tokens, "
                   f"not {context * slots:,}")
    else:
        rows.append(("rest of the KV pool", pool - need, f"{ENGINE_NAMES[engine]} takes {flag} {fraction} × "
                                                         f"{total / GIB:.1f} GiB at start and fills it with KV cache"))
    notes = (f"activations and CUDA graphs come on top of {flag} (the engine measures them at start)",)
    return Plan(arch, context, slots, kv_type, ubatch, int(usable), tuple(rows), engine, "cuda",
                refusal=refusal, notes=notes)


def _plan_pool_pair(arch, context, slots, kv_type, ubatch, engine, total, fraction, pair: PairSpec) -> Plan:
    """vLLM/SGLang over two boxes, tensor parallel 2 (NVIDIA's two-Spark recipe; engines.container): every layer's
    weights and KV heads are split in half, so each box holds half the weights and half of every sequence's KV,
    and each takes its own memory fraction of its own memory at start."""
    fraction, flag, weights, wsrc, per_token = _pool_terms(arch, engine, kv_type, fraction)
    need = int(per_token * context * slots) // 2
    reserved = int(fraction * total)
    pool = reserved - weights // 2
    boxes, refusal = [], ""
    for name, rank, usable in (("this box", 0, pair.head_usable), (pair.peer_name, 1, pair.peer_usable)):
        rows = [("weights", weights // 2, f"half of {wsrc} (tensor parallel 2)"),
                ("KV all layers", need, f"half the KV heads of {arch.n_layer} layers × {context} tokens × {slots} "
                                        f"sequence(s) ({kv_type})")]
        if need <= pool:
            rows.append(("rest of the KV pool", pool - need, f"{flag} {fraction} × {total / GIB:.1f} GiB on this box"))
        boxes.append(BoxPlan(name, f"GPU 0, tensor-parallel rank {rank}", tuple(range(arch.n_layer)), True,
                             usable, tuple(rows)))
    if need > pool:
        refusal = (f"{ENGINE_NAMES[engine]} would refuse: each box's KV pool ({max(pool, 0) / GIB:.1f} GiB = {flag} "
                   f"{fraction} × {total / GIB:.1f} GiB − half the weights) holds {max(pool, 0) * 2 / per_token:,.0f} "
                   f"tokens across the pair, not {context * slots:,}")
    rows = tuple((f"{n} · {b.name}", x, h) for b in boxes for n, x, h in b.rows)
    notes = (f"tensor parallel over 2 boxes: every layer runs on both, two all-reduces per layer cross the link; "
             f"activations and CUDA graphs come on top of {flag} on each box",)
    return Plan(arch, context, slots, kv_type, ubatch, pair.head_usable + pair.peer_usable, rows, engine, "cuda",
                refusal=refusal, notes=notes, boxes=tuple(boxes))


def ollama_default_context(arch: Architecture, vram: int) -> int:
    """The context Ollama (≥ 0.15.5) picks when OLLAMA_CONTEXT_LENGTH is unset (engines.md §2)."""
    tier = 4096 if vram < 24 * GIB else 32768 if vram < 48 * GIB else 262144
    return min(tier, arch.context_max)


def _plan_ollama(arch, context, slots, kv_type, ubatch, usable, total) -> Plan:
    weights, wsrc = _engine_weights(arch, "ollama")
    per = arch.kv_bytes_per_token_layer(KV_BYTES_PER_ELEMENT[kv_type])
    default = ollama_default_context(arch, total)
    rows = [("weights", weights, wsrc),
            ("KV full attention", int(arch.n_full_layers * context * slots * per),
             f"{arch.n_full_layers} layers × {context} tokens × {slots} (OLLAMA_NUM_PARALLEL) × "
             f"{per / 1024:.2f} KiB ({kv_type})")]
    if arch.n_swa_layers:
        swa_tokens = OLLAMA_SWA_TOKENS * slots + OLLAMA_BATCH
        rows.append(("KV sliding window", int(arch.n_swa_layers * swa_tokens * per),
                     f"{arch.n_swa_layers} layers × {swa_tokens} tokens (Ollama keeps 4096 × parallel + batch, "
                     f"not the {arch.sliding_window}-token window)"))
    rows.append(("compute graph", int((4 * slots + context // 1024 + 110) * MIB),
                 "Ollama's own estimate: 4 × parallel + context/1024 + 110 MiB"))
    notes = (f"Ollama's own default context here is {default} (VRAM tier, clamped to the model's {arch.context_max});"
             f" serve {context} with OLLAMA_CONTEXT_LENGTH={context}",) if default != context else ()
    return Plan(arch, context, slots, kv_type, ubatch, int(usable), tuple(rows), "ollama", "cuda", notes=notes)


def largest_context(arch: Architecture, slots: int = 1, kv_type: str = "f16", ubatch: int = 2048,
                    usable_bytes: int = 0, **kw) -> int:
    """The largest context (a multiple of 256) whose plan is not 'does not fit'; 0 if none."""
    def ok(c: int) -> bool:
        return plan_memory(arch, c, slots, kv_type, ubatch, usable_bytes, **kw).verdict != "does not fit"

    lo = 256 * slots
    hi = arch.context_max // 256 * 256
    if hi < lo or not ok(lo):
        return 0
    if ok(hi):
        return hi
    while hi - lo > 256:                       # invariant: ok(lo), not ok(hi)
        mid = (lo + hi) // 2 // 256 * 256
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------------------------------- speed

def decode_bytes_per_token(arch: Architecture, depth: int, kv_type: str = "f16", engine: str = "llamacpp") -> float:
    per = arch.kv_bytes_per_token_layer(KV_BYTES_PER_ELEMENT[kv_type])
    swa_read = min(depth, arch.sliding_window) if arch.n_swa_layers else 0
    return arch.active_bytes_per_token + per * (arch.n_full_layers * depth + arch.n_swa_layers * swa_read)


def prefill_flops(arch: Architecture, depth: int, ubatch: int = 2048) -> tuple[float, float]:
    """(matmul FLOPs, attention FLOPs) per prompt token at `depth`: 2 per active weight; QK and PV
    over the tokens it attends to (on average the depth plus half the micro-batch; sliding layers:
    their window)."""
    seen = depth + ubatch / 2
    swa = min(seen, arch.sliding_window) if arch.n_swa_layers else 0
    attention = 4 * arch.n_head * arch.head_dim * (arch.n_full_layers * seen + arch.n_swa_layers * swa)
    return 2 * arch.params_active, attention


def _pp_rates() -> tuple[float, float]:
    """llama.cpp's effective matmul and attention FLOP rates on a Spark, solved from its published
    gpt-oss-120b prefill at depth 0 and 32768 (1937.54 and 1155.40 tok/s, benches/dgx-spark.md)."""
    a = CATALOGUE["gpt-oss-120b"].arch
    (m0, a0), (_, a1) = prefill_flops(a, 0), prefill_flops(a, 32768)
    p0, p1 = PUBLISHED_SPARK["gpt-oss-120b"][0][0], PUBLISHED_SPARK["gpt-oss-120b"][32768][0]
    inv_attn = (1 / p1 - 1 / p0) / (a1 - a0)
    inv_mm = (1 / p0 - a0 * inv_attn) / m0
    return 1 / inv_mm, 1 / inv_attn


def prefill_forecast(arch: Architecture, depth: int, ubatch: int = 2048) -> float:
    mm, attn = prefill_flops(arch, depth, ubatch)
    r_mm, r_attn = _pp_rates()
    return 1 / (mm / r_mm + attn / r_attn)


def forecast(arch: Architecture, depths: list[int], kv_type: str = "f16", bandwidth: float = GB10_BANDWIDTH,
             model: str | None = None) -> pd.DataFrame:
    """Decode roofline and prefill estimate by context depth on a GB10, next to what llama.cpp
    measured on a Spark (where published)."""
    key = model or catalogue_key(arch)
    published = PUBLISHED_SPARK.get(key or "", {})
    rows = []
    for d in depths:
        bpt = decode_bytes_per_token(arch, d, kv_type)
        pub = published.get(d)
        rows.append({"depth": d, "bytes/token (GB)": round(bpt / 1e9, 3),
                     "decode ceiling (tok/s)": round(bandwidth / bpt, 1),
                     "decode forecast (tok/s)": round(ROOFLINE_EFFICIENCY * bandwidth / bpt, 1),
                     "published decode (tok/s)": pub[1] if pub else None,
                     "prefill forecast (tok/s)": round(prefill_forecast(arch, d), 0),
                     "published prefill (tok/s)": pub[0] if pub else None})
    return WholeTable(rows)


# A pair costs time twice: llama.cpp's RPC path itself (serializing each graph, one round trip per remote
# device, pipeline hand-offs), measured on two H200s over loopback TCP where no wire is in the way
# (records/pair: gpt-oss-120b decode 148.4 tok/s split against 178.1 on one GPU, prefill 4,820 against 7,211),
# and the wire: the hidden state crosses once per device boundary (n_embd f32 values a token) plus its round trip.
RPC_DECODE_STEP_S = 1.12e-3     # per decoded token: 1/148.4 − 1/178.1 s
RPC_PREFILL_BATCH_S = 0.141     # per 2048-token prompt batch: 2048/4820 − 2048/7211 s
LINK_ROUND_TRIP_S = 50e-6       # assumed for a direct 200G link (TCP): not measured here (no two Sparks)


def link_cost_per_token(arch: Architecture, link_mbps: int | None, devices: int = 2) -> float:
    """Seconds a pair adds to one decoded token (layer split: the boxes compute one after the other)."""
    rate = (link_mbps or 200_000) * 1e6 / 8
    return (devices - 1) * (RPC_DECODE_STEP_S + arch.n_embd * 4 / rate + LINK_ROUND_TRIP_S)


def link_cost_per_batch(arch: Architecture, link_mbps: int | None, ubatch: int = 2048, devices: int = 2) -> float:
    """Seconds a pair adds to one prompt batch of `ubatch` tokens."""
    rate = (link_mbps or 200_000) * 1e6 / 8
    return (devices - 1) * (RPC_PREFILL_BATCH_S * ubatch / 2048 + arch.n_embd * 4 * ubatch / rate
                            + LINK_ROUND_TRIP_S)


def most_slots(arch: Architecture, context: int, kv_type: str, ubatch: int, usable_bytes: int, **kw) -> int:
    """The most slots (up to 64) whose plan at `context` is not 'does not fit'; 0 if not even one."""
    def ok(n: int) -> bool:
        return plan_memory(arch, context, n, kv_type, ubatch, usable_bytes, **kw).verdict != "does not fit"
    if not ok(1):
        return 0
    lo, hi = 1, 64
    if ok(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def pair_gain(arch: Architecture, slots: int, kv_type: str, ubatch: int, usable_bytes: int,
              link_mbps: int | None = None, *, pair: PairSpec, **kw) -> pd.DataFrame:
    """What two boxes buy over one, for this model: the most slots at its full context, the largest context at
    `slots`, whether it fits at all, and the decode forecast with the link's cost (llama.cpp's layer split
    computes the boxes in turn, so two boxes read the same bytes per token as one, plus the link)."""
    full = arch.context_max // 256 * 256
    one_kw = dict(kw)
    two_kw = {**kw, "pair": pair}
    one = plan_memory(arch, min(full, 32768), 1, kv_type, ubatch, usable_bytes, **one_kw)
    two = plan_memory(arch, min(full, 32768), 1, kv_type, ubatch, usable_bytes, **two_kw)
    row0 = forecast(arch, [0], kv_type).iloc[0]
    fc, pf = row0["decode forecast (tok/s)"], row0["prefill forecast (tok/s)"]
    cost = link_cost_per_token(arch, link_mbps)
    batch = link_cost_per_batch(arch, link_mbps, ubatch)
    rows = [
        {"": "fits (32k context, 1 slot)", "one box": one.verdict, "two boxes": two.verdict},
        {"": "most weights on one box (GiB)", "one box": round(arch.weights_bytes / GIB, 1),
         "two boxes": round(max(next(x for n, x, _ in b.rows if n == "weights") for b in two.boxes) / GIB, 1)},
        {"": f"most slots at full context ({full})",
         "one box": most_slots(arch, full, kv_type, ubatch, usable_bytes, **one_kw),
         "two boxes": most_slots(arch, full, kv_type, ubatch, usable_bytes, **two_kw)},
        {"": f"largest context with {slots} slot(s)",
         "one box": largest_context(arch, slots, kv_type, ubatch, usable_bytes, **one_kw),
         "two boxes": largest_context(arch, slots, kv_type, ubatch, usable_bytes, **two_kw)},
    ]
    if kw.get("engine", "llamacpp") != "llamacpp":    # tensor parallel: two all-reduces a layer, not forecast here
        rows.append({"": "speed", "one box": "see the forecast above",
                     "two boxes": "tensor parallel: not forecast (two all-reduces per layer cross the link)"})
        return WholeTable(rows)
    if forecast_means_something(arch):
        rows.append({"": "decode forecast at depth 0 (tok/s)", "one box": fc,
                     "two boxes": round(1 / (1 / fc + cost), 1)})
        rows.append({"": f"prefill forecast at depth 0 (tok/s, {ubatch}-token batches)", "one box": pf,
                     "two boxes": round(ubatch / (ubatch / pf + batch), 0)})
    rows.append({"": "the pair's cost per decoded token (µs): RPC + link", "one box": 0,
                 "two boxes": round(cost * 1e6, 1)})
    return WholeTable(rows)


def published(model: str | None) -> pd.DataFrame:
    """What other engines were measured at on a Spark for this model (batch 1, short context)."""
    rows = [{"engine": e, "prefill (tok/s)": p, "decode (tok/s)": d, "source": s}
            for e, m, p, d, s in PUBLISHED_OTHER if m == model]
    if model in PUBLISHED_SPARK:
        p, d = PUBLISHED_SPARK[model][0]
        rows.insert(0, {"engine": "llama.cpp b6918 (benches/dgx-spark.md)", "prefill (tok/s)": p,
                        "decode (tok/s)": d, "source": "ggml-org/llama.cpp"})
    return WholeTable(rows, columns=["engine", "prefill (tok/s)", "decode (tok/s)", "source"])


def forecast_means_something(arch: Architecture) -> bool:
    """Whether a GB10 speed forecast for `arch` says anything: not for the embedded tiny model (a few MB of
    weights: its "forecast" is the GB10's bandwidth over nothing, ~100,000 tok/s, which no Spark serves)."""
    return not (arch.params_total < 1e8 and catalogue_key(arch) is None)


def speed_tables(arch: Architecture, kv_type: str = "f16") -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """What 02 shows under "Speed forecast": (a sentence, the forecast by depth, other engines).
    An embedded tiny model says nothing about a GB10, so its forecast is the model it stands in for."""
    key = catalogue_key(arch)
    if not forecast_means_something(arch):
        key = next((m for m in EMBEDDED.values() if CATALOGUE[m].arch.arch == arch.arch), "gpt-oss-120b")
        arch = CATALOGUE[key].arch
        note = (f"The embedded model is a stand-in a GB10 never serves; this is what a GB10 does with {key}, "
                "the model it stands in for.")
    else:
        note = f"{arch.name} on a GB10 ({GB10_BANDWIDTH / 1e9:.0f} GB/s), KV {kv_type}."
    depths = [d for d in (0, 4096, 8192, 16384, 32768, 65536, 131072) if d <= arch.context_max]
    return note, forecast(arch, depths, kv_type, model=key), published(key)


def sweep(arch: Architecture, slots: int, kv_type: str, ubatch: int, usable_bytes: int, points: int = 16,
          **kw) -> pd.DataFrame:
    """Memory total and forecast speed across the context range (the tuner's plot)."""
    step = max(256, _pad(arch.context_max // points))
    contexts = sorted({min(arch.context_max // 256 * 256, c)
                       for c in range(max(256 * slots, step), arch.context_max + step, step)})
    fc = forecast(arch, contexts, kv_type).set_index("depth")

    def gib(c: int) -> float:
        return plan_memory(arch, c, slots, kv_type, ubatch, usable_bytes, **kw).total_bytes / GIB

    return pd.DataFrame([{"context": c, "memory (GiB)": gib(c),
                          "decode forecast at full depth (tok/s)": fc.loc[c, "decode forecast (tok/s)"],
                          "prefill forecast at full depth (tok/s)": fc.loc[c, "prefill forecast (tok/s)"]}
                         for c in contexts])


@dataclass
class PlanView:
    plan: Plan
    largest: int
    curve: pd.DataFrame
    options: dict[str, Any] = field(default_factory=dict)     # plan_memory keywords (engine excluded)
    setting: Any = None                                         # the runbook's Setting, when 02 made it
    per_slot: int = 0          # bytes each slot adds (its own sliding-window cells, checkpoints, logits, …)

    def slot_line(self) -> str:
        p = self.plan
        pool = ("one KV pool: each conversation may use the whole context" if p.engine == "llamacpp" and
                self.options.get("kv_unified", True) else f"each slot holds its own {p.context // p.slots} tokens")
        return f"{p.slots} slot(s); each slot adds {self.per_slot / MIB:.1f} MiB ({pool})"

    def record(self) -> tuple[str, str, dict[str, Any]]:
        p = self.plan
        verdict = {"fits": "pass", "tight": "warn", "does not fit": "fail"}[p.verdict]
        headline = (f"{p.verdict}: {p.total_bytes / GIB:.2f} GiB of {p.usable_bytes / GIB:.1f} usable with "
                    f"{ENGINE_NAMES[p.engine]} at context {p.context} × {p.slots} slot(s), KV {p.kv_type} "
                    f"{p.kv_bytes() / GIB:.3f} GiB; largest context that fits {self.largest}; {self.slot_line()}")
        return verdict, headline, {**p.to_dict(), "largest_context": self.largest, "arch": p.arch.to_dict()}

    def figure(self) -> matplotlib.figure.Figure:
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        ax.plot(self.curve["context"], self.curve["memory (GiB)"], marker=".", label="planned memory")
        ax.axhline(self.plan.usable_bytes / GIB, color="red", linestyle="--", label="usable memory")
        ax.axvline(self.plan.context, color="gray", linestyle=":", label=f"chosen context {self.plan.context}")
        if self.largest and self.largest != self.plan.context:
            ax.axvline(self.largest, color="red", linestyle=":", alpha=0.5, label=f"largest that fits {self.largest}")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("GiB")
        handles, labels = ax.get_legend_handles_labels()
        if forecast_means_something(self.plan.arch):
            ax2 = ax.twinx()
            ax2.plot(self.curve["context"], self.curve["decode forecast at full depth (tok/s)"], color="green",
                     alpha=0.7, label=f"decode forecast (GB10, {GB10_BANDWIDTH / 1e9:.0f} GB/s)")
            ax2.set_ylabel("decode tok/s at full depth")
            handles, labels = handles + ax2.get_legend_handles_labels()[0], labels + ax2.get_legend_handles_labels()[1]
        else:   # the tiny model's "forecast" would be ~100,000 tok/s: drawn, it would read as a real figure
            ax.text(0.98, 0.04, "no decode forecast: the embedded model is a stand-in no GB10 serves\n"
                    "(the speed forecast below is gpt-oss-120b's)", transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=7, color="dimgray")
        ax.legend(handles, labels, fontsize=7, loc="upper left")
        ax.set_title(f"{self.plan.arch.name} on {ENGINE_NAMES[self.plan.engine]}: {self.plan.verdict}, "
                     f"largest context that fits {self.largest}", fontsize=9)
        fig.tight_layout()
        plt.close(fig)   # returned for display; don't also auto-show it
        return fig


def plan_view(arch: Architecture, context: int, slots: int, kv_type: str, ubatch: int, usable_bytes: int,
              **kw) -> PlanView:
    """The plan, the largest context that fits and the context sweep: what 02 shows and the tuner redraws."""
    plan = plan_memory(arch, context, slots, kv_type, ubatch, usable_bytes, **kw)
    try:                          # what one slot costs: the plan with one slot more, or one fewer
        other = plan_memory(arch, context, slots + 1 if slots == 1 else slots - 1, kv_type, ubatch, usable_bytes, **kw)
        per_slot = abs(plan.total_bytes - other.total_bytes)
    except ValueError:            # e.g. one more slot would leave < 256 tokens each
        per_slot = 0
    return PlanView(plan, largest_context(arch, slots, kv_type, ubatch, usable_bytes, **kw),
                    sweep(arch, slots, kv_type, ubatch, usable_bytes, **kw),
                    {k: v for k, v in kw.items() if k != "engine"}, per_slot=per_slot)


# ---------------------------------------------------------------------------------------------- runbook 02

@dataclass(frozen=True)
class Setting:
    """What 02 plans for: the model and its file, the engine, and this host's memory."""
    model: str                 # the catalogue / 01 name
    arch: Architecture
    engine: str
    usable_bytes: int
    options: dict[str, Any]    # backend, discrete_gpu, total_memory for plan_memory
    adoptable: bool            # 05 serves this model with this engine, so the plan can become 05's
    why_not: str = ""


def setting(engine: str = "", model: str = "") -> Setting:
    """Read 01/03's state (running 01's detection if it never ran) into what plan_memory needs."""
    from . import host, records
    from .model import architecture

    state = records.load_state()
    if "choice" not in state or "host" not in state:
        host.run()                      # 02 alone: detect the host and the default model first
        state = records.load_state()
    choice, hst = records.section(state, "choice", "model"), records.section(state, "host")
    engine = engine or choice.get("engine", "llamacpp")
    check_choice("engine", engine, ENGINES)
    model = model or choice["model"]
    check_choice("model", model, (*EMBEDDED, *CATALOGUE))
    placed = state.get("model", {})
    path = placed.get("path") if placed.get("model") == model and engine == "llamacpp" else None
    arch = architecture(model, path)
    usable = int(hst["usable_bytes"])
    gb10 = bool(hst.get("is_gb10"))
    embedded = is_embedded(model)
    discrete = not gb10 and not embedded and _has_gpu()
    options = {"backend": "cpu" if embedded else "cuda", "discrete_gpu": discrete,
               "total_memory": GB10_TOTAL if gb10 else (usable if discrete else _mem_total() or usable)}
    pair = state.get("pair")
    if pair and engine in ("llamacpp", *MEM_FRACTION):       # Ollama has no two-box serving (01 says so)
        options["pair"] = pair_spec(pair, arch, path, usable, options["backend"])
    from .engines import ENGINES as SERVED
    adoptable = engine in SERVED and engine == choice.get("engine", "llamacpp") and model == choice["model"]
    why = "" if adoptable else (f"05 serves {choice['model']} with {choice.get('engine', 'llamacpp')} (01's choice); "
                                f"this plan for {model} with {engine} is for comparison")
    return Setting(model, arch, engine, usable, options, adoptable, why)


def pair_spec(pair: dict[str, Any], arch: Architecture, path: str | None, usable: int, backend: str) -> PairSpec:
    """01's `pair` section as 02 plans it: the peer's rpc-server on its link address (and, where this box's
    accelerator is the CPU, this box's own on loopback: llama.cpp's layer devices are GPUs or RPC servers)."""
    from . import split as sp
    peer_addr = pair.get("peer_addr") or "127.0.0.1"
    port = int(pair.get("rpc_port") or RPC_PORT)
    rpc = (f"{peer_addr}:{port}",) + ((f"127.0.0.1:{port + 1}",) if backend == "cpu" else ())
    name = pair.get("host") or pair.get("peer") or "peer"
    if pair.get("transport") == "loopback":
        name = f"box B (GPU {pair['peer_gpu_index']})" if pair.get("peer_gpu_index") is not None else "box B"
    return PairSpec(str(name), usable, int(pair.get("peer_usable_bytes") or usable), rpc, sp.layer_bytes(arch, path))


def _has_gpu() -> bool:
    try:
        from .box import gather
        from .host import this_host
        return bool(gather(this_host()).gpu.names)
    except Exception:           # no nvidia-smi, odd output: no discrete GPU to plan for
        return False


def _mem_total() -> int:
    from .box import meminfo
    from .host import this_host
    return meminfo(this_host().read("/proc/meminfo")).get("MemTotal", 0)


def adopt(view: PlanView, s: Setting) -> dict[str, Any]:
    """Make `view` the plan 05 serves next (the `plan` state section); refuse for a comparison plan."""
    from . import records
    if not s.adoptable:
        raise ParameterError("engine", s.engine, f"{s.why_not} — re-run 01 with this engine/model to serve it")
    section = {**view.plan.to_dict(), "largest_context": view.largest, "for_model": s.model}
    records.update_state("plan", section)
    return section


def run(context: int = 131072, slots: int = 0, kv_type: str = "f16", ubatch: int = 2048, engine: str = "",
        model: str = "", mem_fraction: float = 0.0) -> PlanView:
    """Runbook 02: plan the chosen model against this host; `context=0` takes the largest that fits, `slots=0` the
    engine's default (engines.EngineSpec.slots: llama.cpp 4, one per Claude Code conversation; else 1).
    Writes the `plan` section 05 reads (context, slots, kv_type, ubatch, verdict, serving, …, for_model)
    when the plan is for 01's model and engine; other engines/models are planned for comparison only.
    `mem_fraction` (SGLang/vLLM): the share of memory the engine takes at start; 0: the engine's default."""
    s = setting(engine, model)
    if slots == 0 and not isinstance(slots, bool):
        slots = _engines.spec(s.engine).slots
    if mem_fraction:
        if s.engine not in MEM_FRACTION:
            raise ParameterError("mem_fraction", mem_fraction, f"0 with {ENGINE_NAMES[s.engine]} (only SGLang and vLLM "
                                                               "take a memory fraction)")
        if isinstance(mem_fraction, bool) or not isinstance(mem_fraction, (int, float)) or \
                not 0.1 <= mem_fraction <= 0.95:
            raise ParameterError("mem_fraction", mem_fraction, "0 (the engine's default) or a fraction from 0.1 to 0.95")
        s = replace(s, options={**s.options, "mem_fraction": float(mem_fraction)})
    if isinstance(context, bool) or not isinstance(context, int) or (context != 0 and not
                                                                      256 <= context <= s.arch.context_max):
        raise ParameterError("context", context, f"0 (the largest that fits) or an integer from 256 to "
                                                 f"{s.arch.context_max}")
    if context == 0:
        check_int("slots", slots, 1, 256)
        check_choice("kv_type", kv_type, KV_TYPES[s.engine])
        context = largest_context(s.arch, slots, kv_type, ubatch, s.usable_bytes, engine=s.engine, **s.options)
        if context == 0:
            raise ParameterError("context", 0, f"a size that fits — not even {256 * slots} tokens fit in "
                                               f"{s.usable_bytes / GIB:.1f} GiB usable")
    view = plan_view(s.arch, context, slots, kv_type, ubatch, s.usable_bytes, engine=s.engine, **s.options)
    view.setting = s
    if s.adoptable:
        adopt(view, s)
    return view
