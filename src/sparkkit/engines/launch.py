"""One description of a llama.cpp server launch, rendered two ways.

`Launch` says what to serve and how (model, context, slots, KV type, GPU layers, flash
attention, no-mmap, micro-batch, Jinja, alias, host, port, API key). The same object becomes

- a `llama-server` command line (`to_argv`) — what runs on the Spark, adapted to the flags
  the installed build really has (`ServerFlags.from_help`: llama.cpp renamed `--no-mmap` to
  `-lm/--load-mode` in 2026 and builds differ), and
- the parameters of the embedded llama.cpp server (`sparkkit.engines.embedded`), which is the
  same server code inside the xllamacpp wheel — what runs where there is no GB10.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ParameterError, check_choice, check_int

KV_TYPES = ("f16", "bf16", "q8_0", "q4_0", "f32")
FLASH_ATTN = ("on", "off", "auto")
LOAD_MODES = ("none", "dio", "mmap", "auto")   # none/dio = no mmap (the Spark's slow-mmap bug)
ALL_LAYERS = 999
CTX_CHECKPOINTS = 32                            # llama-server's default --ctx-checkpoints (common/common.h, b11549)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, has_key: bool) -> None:
    """Secure by default: loopback, or the LAN only behind an API key."""
    if not is_loopback(host) and not has_key:
        raise ParameterError("host", host, "127.0.0.1 (default), or a LAN address together with an API key "
                                           "(-p api_key_file <a 0600 file holding it>; sparkkit run --api-key-file) — an open server "
                                           "on the LAN runs anyone's prompts")


@dataclass(frozen=True)
class Launch:
    model: str                      # GGUF path (first shard of a split model)
    alias: str = "gpt-oss-120b"     # the name clients send and /v1/models reports
    context: int = 131072           # -c: total KV tokens (shared by all slots when kv_unified)
    slots: int = 1                  # -np: concurrent sequences
    kv_unified: bool = True         # --kv-unified: one pool for all slots
    kv_type: str = "f16"            # -ctk/-ctv
    gpu_layers: int = ALL_LAYERS    # -ngl: everything on the GPU (unified memory on GB10)
    flash_attn: str = "on"          # -fa
    load_mode: str = "none"         # -lm none (or --no-mmap on older builds)
    ubatch: int = 2048              # -ub: faster prefill on the Spark
    batch: int = 2048               # -b
    jinja: bool = True              # --jinja: harmony parsing, tool calls
    host: str = "127.0.0.1"
    port: int = 8080
    api_key_file: str | None = None  # --api-key-file; required when host is not loopback
    metrics: bool = True            # --metrics: /metrics for the bench step
    threads: int | None = None      # -t; None = the engine's default
    log_verbosity: int | None = None  # -lv; 4 makes llama.cpp log its KV cache and compute buffer sizes
    cache_ram_mib: int | None = None  # --cache-ram: the host prompt cache 02 planned (None: llama.cpp's 8192)
    swa_full: bool = False          # --swa-full: full-size sliding-window KV (02 counts it when planned)
    ctx_checkpoints: int = CTX_CHECKPOINTS   # --ctx-checkpoints per slot (passed only when not llama.cpp's default)
    rpc: tuple[str, ...] = ()       # --rpc: rpc-server endpoints of the other box(es) of a pair (02's plan)
    tensor_split: tuple[int, ...] = ()   # -ts: layers per device, RPC servers first (02's per-box plan)
    cuda_devices: str | None = None  # CUDA_VISIBLE_DEVICES for the server (a pair stood in by one machine's GPUs)
    extra: tuple[str, ...] = field(default_factory=tuple)  # verbatim extra llama-server flags

    def __post_init__(self) -> None:
        check_int("context", self.context, 256)
        check_int("slots", self.slots, 1, 256)
        check_choice("kv_type", self.kv_type, KV_TYPES)
        check_choice("flash_attn", self.flash_attn, FLASH_ATTN)
        check_choice("load_mode", self.load_mode, LOAD_MODES)
        check_int("port", self.port, 1, 65535)
        check_int("ubatch", self.ubatch, 1)
        check_int("batch", self.batch, 1)
        check_bind(self.host, bool(self.api_key_file))

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"   # IPv6: bracketed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_serving(cls, serving: Any, model: str, alias: str, host: str = "127.0.0.1", port: int = 8080,
                     api_key_file: str | None = None, threads: int | None = None) -> "Launch":
        """The llama-server launch of 02's serving settings: every field that changes memory comes from them."""
        return cls(model=model, alias=alias, context=serving.context, slots=serving.slots,
                   kv_unified=serving.kv_unified, kv_type=serving.kv_type, flash_attn=serving.flash_attn,
                   ubatch=serving.ubatch, batch=max(serving.ubatch, 2048), host=host, port=port,
                   api_key_file=api_key_file, threads=threads, cache_ram_mib=serving.cache_ram_mib,
                   swa_full=serving.swa_full, ctx_checkpoints=serving.ctx_checkpoints,
                   rpc=tuple(serving.rpc), tensor_split=tuple(serving.split))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Launch":
        data = dict(data)
        for k in ("extra", "rpc", "tensor_split"):
            data[k] = tuple(data.get(k) or ())
        return cls(**data)


@dataclass(frozen=True)
class ServerFlags:
    """Which spellings a given llama-server build accepts (read from its --help)."""

    load_mode: bool = True          # -lm/--load-mode (2026+)
    no_mmap: bool = False           # --no-mmap (before llama.cpp PR #20834)
    flash_attn_value: bool = True   # -fa on|off|auto (older builds: bare -fa)
    kv_unified: bool = True
    jinja: bool = True
    api_key_file: bool = True
    cache_ram: bool = True          # --cache-ram (llama.cpp PR #16391, 2025-10)

    @classmethod
    def from_help(cls, help_text: str) -> "ServerFlags":
        def has(flag: str) -> bool:
            return re.search(rf"(^|[\s,]){re.escape(flag)}(?=[\s,=]|$)", help_text, re.M) is not None
        return cls(
            load_mode=has("--load-mode"),
            no_mmap=has("--no-mmap"),
            flash_attn_value=bool(re.search(r"--flash-attn\s+\[?(on|FA)", help_text)) or "on|off" in help_text,
            kv_unified=has("--kv-unified"),
            jinja=has("--jinja"),
            api_key_file=has("--api-key-file"),
            cache_ram=has("--cache-ram"),
        )


def to_argv(launch: Launch, binary: str = "llama-server", flags: ServerFlags = ServerFlags()) -> list[str]:
    """The `llama-server` command line for `launch`, in the spelling `flags` says the build has."""
    a = [binary, "-m", launch.model, "--alias", launch.alias, "--host", launch.host, "--port", str(launch.port),
         "-c", str(launch.context), "-np", str(launch.slots), "-ngl", str(launch.gpu_layers)]
    a += ["-fa", launch.flash_attn] if flags.flash_attn_value else (["-fa"] if launch.flash_attn == "on" else [])
    if launch.load_mode in ("none", "dio"):
        if flags.load_mode:
            a += ["-lm", launch.load_mode]
        elif flags.no_mmap:
            a += ["--no-mmap"]
    elif flags.load_mode:
        a += ["-lm", launch.load_mode]
    a += ["-ub", str(launch.ubatch), "-b", str(launch.batch)]
    if launch.kv_type != "f16":
        a += ["-ctk", launch.kv_type, "-ctv", launch.kv_type]
    if launch.kv_unified and flags.kv_unified:
        a += ["--kv-unified"]
    # By default no --swa-full and llama.cpp's own --ctx-checkpoints: its sliding-window checkpoints are what
    # let an agent's next turn reuse gpt-oss's cache. On the H100 stand-in --swa-full (which needs none) took
    # 5 GB more and was slower in the same call: prefill −10 %, decode −6 % at depth 8192
    # (records/gpu-standin/h100-run7-b11549-decode-split). Both are passed only when 02 planned otherwise.
    if launch.swa_full:
        a += ["--swa-full"]
    if launch.ctx_checkpoints != CTX_CHECKPOINTS:
        a += ["--ctx-checkpoints", str(launch.ctx_checkpoints)]
    if launch.jinja and flags.jinja:
        a += ["--jinja"]
    if launch.metrics:
        a += ["--metrics"]
    if launch.threads:
        a += ["-t", str(launch.threads)]
    if launch.log_verbosity is not None:
        a += ["-lv", str(launch.log_verbosity)]
    if launch.cache_ram_mib is not None and flags.cache_ram:
        a += ["--cache-ram", str(launch.cache_ram_mib)]
    if launch.rpc:
        a += ["--rpc", ",".join(launch.rpc)]
    if launch.tensor_split:
        a += ["-ts", ",".join(str(n) for n in launch.tensor_split)]
    if launch.api_key_file:
        a += ["--api-key-file", launch.api_key_file]
    return a + list(launch.extra)


def command_line(argv: list[str]) -> str:
    """A copy-pasteable shell line (the key itself is never on it: it lives in a file)."""
    return shlex.join(argv)
