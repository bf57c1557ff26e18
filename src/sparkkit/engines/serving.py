"""The serving settings: one object that 02 plans with and 05 launches with.

02 turns its parameters into a `Serving`, plans memory from it (`plan.plan_memory(arch, **s.plan_kwargs())`)
and writes it to the state's `plan` section; 05 reads that same object back and each engine renders it
into its own flags (llama.cpp's -c/-np/--kv-unified/--cache-ram, SGLang's --context-length and
--mem-fraction-static, vLLM's --max-model-len and --gpu-memory-utilization, Ollama's num_ctx). Nothing
that changes memory is defaulted in two places.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Serving:
    engine: str
    context: int                       # KV tokens shared by all slots (vLLM/SGLang: per sequence)
    slots: int = 1                     # concurrent sequences: -np, --max-running-requests, --max-num-seqs
    kv_type: str = "f16"               # the engine-neutral name (f16, q8_0, fp8, …); each engine spells it
    ubatch: int = 2048                 # llama.cpp -ub (prefill micro-batch)
    kv_unified: bool = True            # llama.cpp --kv-unified: one KV pool for all slots
    swa_full: bool = False             # llama.cpp --swa-full: full-size sliding-window KV (not the default)
    flash_attn: str = "on"             # llama.cpp -fa
    cache_ram_mib: int | None = None   # llama.cpp --cache-ram: the host prompt cache 02 counted
    ctx_checkpoints: int = 32          # llama.cpp --ctx-checkpoints per slot (its default, counted by 02)
    mem_fraction: float | None = None  # SGLang --mem-fraction-static / vLLM --gpu-memory-utilization
    split: tuple[int, ...] = ()        # llama.cpp over two boxes (-ts): layers per device, RPC servers first
    rpc: tuple[str, ...] = ()          # llama.cpp --rpc: the rpc-server endpoints (host:port), in that order

    def plan_kwargs(self) -> dict[str, Any]:
        """The keywords of `plan.plan_memory` this object fixes."""
        kw: dict[str, Any] = {"context": self.context, "slots": self.slots, "kv_type": self.kv_type,
                              "ubatch": self.ubatch, "engine": self.engine, "kv_unified": self.kv_unified,
                              "swa_full": self.swa_full, "mem_fraction": self.mem_fraction,
                              "ctx_checkpoints": self.ctx_checkpoints}
        if self.cache_ram_mib is not None:
            kw["cache_ram"] = self.cache_ram_mib * 2**20
        return kw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Serving":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for k in ("split", "rpc"):              # JSON gives lists back
            if k in kw:
                kw[k] = tuple(kw[k] or ())
        return cls(**kw)
