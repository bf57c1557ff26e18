"""SGLang on the Spark: the LMSYS/NVIDIA GB10 image in Docker, gpt-oss's reasoning and tool-call parsers,
02's memory fraction (research/engines.md §3). The container half is sparkkit.engines.container."""
from __future__ import annotations

import sys
from typing import Any

from . import EngineSpec, container

SPEC = EngineSpec(
    name="sglang", label="SGLang", runs_as="container", weights="safetensors",
    weights_home="$SPARKKIT_HOME/models", kv_types=("f16", "bf16", "fp8"), default_port=30000, health="/health",
    served_name="--served-model-name (the catalogue name; Claude Code cannot use names with '/')",
    install=container.INSTALL_DOCKER + "; then 04 pulls the image", messages=None)

# The image NVIDIA's DGX Spark playbook runs (nvidia/sglang/README.md at its 2026-07-24 HEAD): a moving tag
# whose digest no source we have publishes, so 04 records the digest it pulled and 05 runs exactly that
# (the older `lmsysorg/sglang:spark`, pinned by users at sha256:16dec654…, predates /v1/messages).
IMAGE: dict[str, Any] = {"ref": "lmsysorg/sglang:latest-cu130", "digest": "", "size_bytes": None,
                         "source": "NVIDIA/dgx-spark-playbooks nvidia/sglang/README.md"}
# --mem-fraction-static: SGLang picks ≈0.8–0.9 by itself; the Spark playbook passes 0.75 to leave the
# desktop and page cache room (engines.md §3).
MEM_FRACTION = 0.75
KV_DTYPE = {"f16": None, "bf16": "bf16", "fp8": "fp8_e4m3"}   # --kv-cache-dtype (None: auto = the model's)


def served_name(model: dict[str, Any]) -> str:
    return model.get("alias") or model["model"]


def engine_args(serving: Any, model: dict[str, Any], port: int, keyed: bool = False, bind: str = "0.0.0.0",
                dist: list[str] | None = None) -> list[str]:
    flags = ["--model-path", "/model", "--served-model-name", served_name(model), "--host", bind,
             "--port", str(port), *(dist or ["--tp", "1"]), "--reasoning-parser", "gpt-oss", "--tool-call-parser", "gpt-oss",
             "--context-length", str(serving.context), "--max-running-requests", str(serving.slots),
             "--mem-fraction-static", str(serving.mem_fraction or MEM_FRACTION), "--enable-metrics"]
    if KV_DTYPE.get(serving.kv_type):
        flags += ["--kv-cache-dtype", KV_DTYPE[serving.kv_type]]
    base = ["python3", "-m", "sglang.launch_server", *flags]
    if keyed:   # the key comes from --env-file, so it is on no command line on the host
        return ["sh", "-c", 'exec "$@" --api-key "$SPARKKIT_API_KEY"', "sglang", *base]
    return base


# ----------------------------------------------------------------------------- two Sparks (the state's "pair")
# SGLang's multi-node tensor parallel: the same launch_server on both nodes with `--tp 2 --nnodes 2 --node-rank R
# --dist-init-addr HEAD:PORT` (sgl-project/sglang PR #550, docs multi_node); rank 0 serves the API. The link's
# interface goes into the NCCL/Gloo/TP variables as in NVIDIA's two-Spark recipe, and SGLANG_HOST_IP pins the
# cross-node ZeroMQ queue to the link (without it a two-Spark TP=2 start hangs after NCCL init:
# MiaAI-Lab/Qwen3.8-Flash-Next-Dual-DGX-Sparks#3, fixed by its PR #9).
DIST_PORT = 20000
PAIR_ORDER = ("worker", "head")     # rank 1 waits at the rendezvous; rank 0 then opens it and serves


def pair_args(serving: Any, model: dict[str, Any], port: int, keyed: bool, pair: dict[str, Any], role: str,
              bind: str) -> tuple[dict[str, str], list[str]]:
    """(environment, container command) of one side of a two-Spark launch (role: head | worker)."""
    head, me, link = container.link_env(pair, role)
    env = {"SGLANG_HOST_IP": me, **link}
    dist = ["--tp", "2", "--nnodes", "2", "--node-rank", "0" if role == "head" else "1",
            "--dist-init-addr", f"{head}:{DIST_PORT}"]
    # the worker serves no API (the key stays on the head); its --host is the peer's own loopback
    return env, engine_args(serving, model, port, keyed and role == "head",
                            bind if role == "head" else "127.0.0.1", dist)


# The engine protocol (sparkkit.engines): the container half, with SGLang's swap warning at launch.
place, prepare, _launch, is_running, stop, command = container.protocol(sys.modules[__name__])


def launch(serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None):
    swap = swap_warning(model["model"])
    if swap:
        print(swap, flush=True)
    started = _launch(serving, model, host, port, key_file)
    if swap:
        started.notes.append(swap)
    return started


def swap_warning(model: str) -> str:
    """The swap 01 asks for when SGLang loads gpt-oss-120b (LMSYS; sglang#37931: 64 GB cured the load OOM),
    said again at launch when this box still lacks it."""
    from .. import host
    check = host._swap(host.gather(host.this_host()), host.need_for(model, "sglang"))
    if check.status != "warn":
        return ""
    return f"warning: swap {check.value} — the load may run out of memory; 01's fix: {check.fix}"
