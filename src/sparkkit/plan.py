"""The memory and speed plan for serving a model (runbook 02), and the context tuner's core.

Memory follows what llama.cpp allocates for gpt-oss (research/spark.md §7, gpu-standin.md §4):
only the full-attention layers hold KV for the whole context; the sliding-window layers hold
`window × slots + ubatch` cells rounded up to 256; a unified pool is shared by all slots. Decode
speed follows the bandwidth roofline: a token reads the active weights plus the KV it attends
to, at ~77 % of peak bandwidth (what llama.cpp reaches on a Spark, gpu-standin.md §6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from .errors import ParameterError, check_choice, check_int
from .model import GIB, Architecture

MIB = 1024**2
KV_BYTES_PER_ELEMENT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
# llama.cpp's default host prompt cache (--cache-ram 8192 MiB); on GB10 host RAM *is* GPU memory.
LLAMACPP_CACHE_RAM = 8192 * MIB
# Compute buffers llama.cpp logged for gpt-oss at -ub 2048: CUDA 484.07 MiB + host 182.08 MiB
# (gpu-standin.md §4); they scale with ubatch and, roughly, with the hidden size.
COMPUTE_PER_UBATCH_TOKEN = (484.07 + 182.08) / 2048 * MIB
ROOFLINE_EFFICIENCY = 0.77
GB10_BANDWIDTH = 273e9      # bytes/s, LPDDR5x (NVIDIA spec)
TIGHT = 0.90                # above 90 % of usable memory the desktop and page cache start to fight it

# Published llama.cpp gpt-oss numbers on a DGX Spark (spark.md §8: llama.cpp benches/dgx-spark.md,
# b6918, llama-bench -fa 1 -ub 2048 -p 2048 -n 32): depth → (prefill tok/s, decode tok/s).
PUBLISHED_SPARK = {
    "gpt-oss-120b": {0: (1937.5, 59.0), 4096: (1653.9, 53.95), 8192: (1580.6, 51.85),
                     16384: (1411.4, 48.03), 32768: (1155.4, 41.35)},
    "gpt-oss-20b": {0: (3782.8, 84.10), 32768: (1899.4, 59.85)},
}


def _pad(n: int, to: int = 256) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class Plan:
    arch: Architecture
    context: int
    slots: int
    kv_type: str
    ubatch: int
    usable_bytes: int
    rows: tuple[tuple[str, int, str], ...]   # (component, bytes, how it was computed)

    @property
    def total_bytes(self) -> int:
        return sum(b for _, b, _ in self.rows)

    @property
    def verdict(self) -> str:
        if self.total_bytes <= TIGHT * self.usable_bytes:
            return "fits"
        return "tight" if self.total_bytes <= self.usable_bytes else "does not fit"

    def kv_bytes(self) -> int:
        return sum(b for name, b, _ in self.rows if name.startswith("KV"))

    def table(self) -> pd.DataFrame:
        df = pd.DataFrame([{"component": n, "GiB": round(b / GIB, 3), "how": how} for n, b, how in self.rows])
        total = pd.DataFrame([{"component": "total", "GiB": round(self.total_bytes / GIB, 3),
                               "how": f"{self.verdict}: usable {self.usable_bytes / GIB:.1f} GiB"}])
        return pd.concat([df, total], ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.arch.name, "context": self.context, "slots": self.slots, "kv_type": self.kv_type,
                "ubatch": self.ubatch, "usable_bytes": self.usable_bytes, "total_bytes": self.total_bytes,
                "kv_bytes": self.kv_bytes(), "verdict": self.verdict,
                "rows": [{"component": n, "bytes": b, "how": h} for n, b, h in self.rows]}


def validate(arch: Architecture, context: int, slots: int, kv_type: str, ubatch: int = 2048) -> None:
    check_int("context", context, 256, arch.context_max)
    check_int("slots", slots, 1, 256)
    check_choice("kv_type", kv_type, KV_BYTES_PER_ELEMENT)
    check_int("ubatch", ubatch, 1, 65536)
    if context // slots < 256:
        raise ParameterError("slots", slots, f"at most {context // 256} for context {context} "
                                             "(each slot needs >= 256 tokens)")


def plan_memory(arch: Architecture, context: int, slots: int = 1, kv_type: str = "f16", ubatch: int = 2048,
                usable_bytes: int = 0, kv_unified: bool = True, swa_full: bool = False) -> Plan:
    validate(arch, context, slots, kv_type, ubatch)
    bpe = KV_BYTES_PER_ELEMENT[kv_type]
    per_cell_layer = 2 * arch.n_head_kv * arch.head_dim * bpe      # K + V, one token, one layer
    rows: list[tuple[str, int, str]] = [("weights", arch.weights_bytes, "model file size")]
    full_layers = arch.n_layer if swa_full else arch.n_full_layers
    rows.append(("KV full attention", int(full_layers * context * per_cell_layer),
                 f"{full_layers} layers × {context} tokens × {per_cell_layer / 1024:.2f} KiB ({kv_type})"))
    if arch.n_swa_layers and not swa_full:
        seqs = 1 if kv_unified else slots
        cells = min(context, _pad(arch.sliding_window * (slots if kv_unified else 1) + ubatch))
        rows.append(("KV sliding window", int(arch.n_swa_layers * seqs * cells * per_cell_layer),
                     f"{arch.n_swa_layers} layers × {seqs} × {cells} cells (window {arch.sliding_window} + ubatch)"))
    rows.append(("compute buffers", int(COMPUTE_PER_UBATCH_TOKEN * ubatch * arch.n_embd / 2880),
                 f"ubatch {ubatch}, scaled from llama.cpp's log for gpt-oss"))
    rows.append(("output buffer", int(arch.n_vocab * 4 * slots), "logits, f32, per slot"))
    rows.append(("host prompt cache", min(LLAMACPP_CACHE_RAM, int(context * arch.n_full_layers * per_cell_layer)),
                 "llama.cpp --cache-ram (≤ 8 GiB; shares unified memory on GB10)"))
    return Plan(arch, context, slots, kv_type, ubatch, int(usable_bytes), tuple(rows))


def largest_context(arch: Architecture, slots: int = 1, kv_type: str = "f16", ubatch: int = 2048,
                    usable_bytes: int = 0) -> int:
    """The largest context (multiple of 256) whose plan is not 'does not fit'; 0 if none."""
    lo, hi = 256 * slots, arch.context_max
    if plan_memory(arch, lo, slots, kv_type, ubatch, usable_bytes).verdict == "does not fit":
        return 0
    while hi - lo > 256:
        mid = _pad((lo + hi) // 2)
        mid = min(mid, hi)
        if plan_memory(arch, mid, slots, kv_type, ubatch, usable_bytes).verdict != "does not fit":
            lo = mid
        else:
            hi = mid - 256 if mid == hi else mid
    return hi if plan_memory(arch, hi, slots, kv_type, ubatch, usable_bytes).verdict != "does not fit" else lo


def forecast(arch: Architecture, depths: list[int], kv_type: str = "f16",
             bandwidth: float = GB10_BANDWIDTH) -> pd.DataFrame:
    """Decode roofline by context depth, next to what llama.cpp measured on a Spark (if published)."""
    bpe = KV_BYTES_PER_ELEMENT[kv_type]
    per_cell_layer = 2 * arch.n_head_kv * arch.head_dim * bpe
    published = PUBLISHED_SPARK.get(arch.name, {})
    rows = []
    for d in depths:
        kv_read = per_cell_layer * (arch.n_full_layers * d + arch.n_swa_layers * min(d, arch.sliding_window))
        bytes_per_token = arch.active_bytes_per_token + kv_read
        pub = published.get(d)
        rows.append({"depth": d, "bytes/token (GB)": round(bytes_per_token / 1e9, 3),
                     "decode ceiling (tok/s)": round(bandwidth / bytes_per_token, 1),
                     "decode forecast (tok/s)": round(ROOFLINE_EFFICIENCY * bandwidth / bytes_per_token, 1),
                     "published decode (tok/s)": pub[1] if pub else None,
                     "published prefill (tok/s)": pub[0] if pub else None})
    return pd.DataFrame(rows)


def sweep(arch: Architecture, slots: int, kv_type: str, ubatch: int, usable_bytes: int,
          points: int = 16) -> pd.DataFrame:
    """Memory total and decode forecast across the context range (for the tuner's plot)."""
    step = max(256, _pad(arch.context_max // points))
    contexts = sorted({min(arch.context_max, c) for c in range(max(256 * slots, step), arch.context_max + step, step)})
    fc = forecast(arch, contexts, kv_type).set_index("depth")
    return pd.DataFrame([{"context": c,
                          "memory (GiB)": plan_memory(arch, c, slots, kv_type, ubatch, usable_bytes).total_bytes / GIB,
                          "decode forecast at full depth (tok/s)": fc.loc[c, "decode forecast (tok/s)"]}
                         for c in contexts])


@dataclass
class PlanView:
    plan: Plan
    largest: int
    curve: pd.DataFrame

    def record(self) -> tuple[str, str, dict[str, Any]]:
        p = self.plan
        verdict = {"fits": "pass", "tight": "warn", "does not fit": "fail"}[p.verdict]
        headline = (f"{p.verdict}: {p.total_bytes / GIB:.2f} GiB of {p.usable_bytes / GIB:.1f} usable at context "
                    f"{p.context} × {p.slots} slot(s), KV {p.kv_type} {p.kv_bytes() / GIB:.3f} GiB; "
                    f"largest context that fits {self.largest}")
        return verdict, headline, {**p.to_dict(), "largest_context": self.largest, "arch": p.arch.to_dict()}

    def figure(self) -> matplotlib.figure.Figure:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.plot(self.curve["context"], self.curve["memory (GiB)"], marker=".", label="planned memory")
        ax.axhline(self.plan.usable_bytes / GIB, color="red", linestyle="--", label="usable memory")
        ax.axvline(self.plan.context, color="gray", linestyle=":", label=f"chosen context {self.plan.context}")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("GiB")
        ax2 = ax.twinx()
        ax2.plot(self.curve["context"], self.curve["decode forecast at full depth (tok/s)"], color="green",
                 alpha=0.6, label=f"decode forecast @ {GB10_BANDWIDTH / 1e9:.0f} GB/s")
        ax2.set_ylabel("tok/s at full depth")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
        ax.legend(lines, labels, fontsize=7, loc="upper left")
        ax.set_title(f"{self.plan.arch.name}: {self.plan.verdict}, largest context that fits {self.largest}")
        fig.tight_layout()
        plt.close(fig)   # returned for display; don't also auto-show it
        return fig


def plan_view(arch: Architecture, context: int, slots: int, kv_type: str, ubatch: int, usable_bytes: int) -> PlanView:
    plan = plan_memory(arch, context, slots, kv_type, ubatch, usable_bytes)
    return PlanView(plan, largest_context(arch, slots, kv_type, ubatch, usable_bytes),
                    sweep(arch, slots, kv_type, ubatch, usable_bytes))


def run(context: int = 131072, slots: int = 1, kv_type: str = "f16", ubatch: int = 2048) -> PlanView:
    """Runbook 02: plan the chosen model against this host; `context=0` takes the largest that fits."""
    from . import host, records
    from .model import architecture

    state = records.load_state()
    if "choice" not in state or "host" not in state:
        host.run()                      # 02 alone: detect the host and the default model first
        state = records.load_state()
    placed = state.get("model", {})
    model_path = placed.get("path") if placed.get("model") == state["choice"]["model"] else None
    arch = architecture(state["choice"]["model"], model_path)
    usable = int(state["host"]["usable_bytes"])
    if context == 0:
        context = largest_context(arch, slots, kv_type, ubatch, usable)
        if context == 0:
            raise ParameterError("context", 0, f"a size that fits — not even {256 * slots} tokens fit in "
                                               f"{usable / GIB:.1f} GiB usable")
    view = plan_view(arch, context, slots, kv_type, ubatch, usable)
    records.update_state("plan", {**view.plan.to_dict(), "largest_context": view.largest,
                                  "for_model": state["choice"]["model"]})
    return view
