"""The embedded engine: llama.cpp's own server, from the pinned xllamacpp wheel, on the CPU.

It is what `make run` serves where there is no GB10. It takes the same `Launch` as a native
`llama-server` and maps each field to llama.cpp's `common_params` (xllamacpp has no argv
parser). Run as its own process, detached from the notebook kernel:

    python -m sparkkit.engines.embedded launch.json

and stopped with SIGTERM (or SIGINT).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .launch import ALL_LAYERS, Launch

# The one pin: pyproject's xllamacpp==, the llama.cpp release 02's memory model replays
# (llamacpp_memory) and the source 04 builds for CUDA (engines.llamacpp.SDISTS) all follow it.
PINNED_XLLAMACPP = "2026.10.11549"   # = llama.cpp b11549 (2026-10-10)
LLAMA_CPP_RELEASE = "b" + PINNED_XLLAMACPP.rsplit(".", 1)[-1]   # xllamacpp YYYY.MM.N wraps llama.cpp release bN


def runtime_info() -> dict[str, Any]:
    """Version and CPU features of the embedded llama.cpp (imports xllamacpp, ~0.1 s)."""
    import xllamacpp

    from importlib.metadata import version
    return {"runtime": "embedded", "package": "xllamacpp", "version": version("xllamacpp"),
            "pinned": PINNED_XLLAMACPP, "system_info": xllamacpp.get_system_info().strip()}


def to_params(launch: Launch):
    """`Launch` → `xllamacpp.CommonParams` (field names follow llama.cpp's common_params)."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = launch.model
    p.model_alias = {launch.alias}
    p.hostnames = [launch.host]
    p.port = launch.port
    p.n_ctx = launch.context
    p.n_parallel = launch.slots
    p.kv_unified = launch.kv_unified
    p.cache_type_k = p.cache_type_v = getattr(xlc.ggml_type, f"GGML_TYPE_{launch.kv_type.upper()}")
    p.n_gpu_layers = -1 if launch.gpu_layers >= ALL_LAYERS else launch.gpu_layers
    p.flash_attn_type = {"on": xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                         "off": xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED,
                         "auto": xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO}[launch.flash_attn]
    p.load_mode = {"none": xlc.llama_load_mode.LLAMA_LOAD_MODE_NONE,
                   "dio": xlc.llama_load_mode.LLAMA_LOAD_MODE_DIRECT_IO,
                   "mmap": xlc.llama_load_mode.LLAMA_LOAD_MODE_MMAP,
                   "auto": xlc.llama_load_mode.LLAMA_LOAD_MODE_AUTO}[launch.load_mode]
    p.n_ubatch = launch.ubatch
    p.n_batch = launch.batch
    p.use_jinja = launch.jinja
    p.endpoint_metrics = launch.metrics
    p.fit_params = False   # llama.cpp's --fit would silently shrink the context we planned
    if launch.threads:
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = launch.threads
    if launch.log_verbosity is not None:
        p.verbosity = launch.log_verbosity
    if launch.cache_ram_mib is not None:
        p.cache_ram_mib = launch.cache_ram_mib
    p.swa_full = launch.swa_full
    p.n_ctx_checkpoints = launch.ctx_checkpoints
    if launch.api_key_file:
        p.api_keys = [Path(launch.api_key_file).read_text(encoding="utf-8").strip()]
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m sparkkit.engines.embedded LAUNCH.json", file=sys.stderr)
        return 2
    launch = Launch.from_dict(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    import xllamacpp as xlc

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = xlc.Server(to_params(launch))   # returns once llama.cpp listens (or raises)
    print(f"sparkkit: embedded llama.cpp listening at {server.listening_address}", file=sys.stderr, flush=True)
    stop.wait()
    # Destroying xllamacpp.Server can deadlock in its main-loop join; the OS frees everything.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
