"""vLLM on the Spark: NVIDIA's NGC image in Docker with gpt-oss's reasoning and tool-call parsers and
02's memory fraction (research/engines.md §4). The container half is sparkkit.engines.container."""
from __future__ import annotations

import shlex
import sys
from typing import Any

from . import EngineSpec, container

SPEC = EngineSpec(
    name="vllm", label="vLLM", runs_as="container", weights="safetensors",
    weights_home="$SPARKKIT_HOME/models", kv_types=("f16", "bf16", "fp8"), default_port=8000, health="/health",
    served_name="--served-model-name (the catalogue name; Claude Code cannot use names with '/')",
    install=container.INSTALL_DOCKER + "; then 04 pulls the image", messages=None)

# NVIDIA's DGX Spark playbook image (nvidia/vllm/README.md lists 26.02 … 26.05.post1-py3 at its HEAD), pinned by
# its linux/arm64 manifest digest with NGC's compressed size (a public NVIDIA vLLM installer's table "Platform
# manifests and decimal compressed sizes published by NGC"; tests/replay/recordings/docker.json `images`).
IMAGE: dict[str, Any] = {"ref": "nvcr.io/nvidia/vllm:26.05.post1-py3",
                         "digest": "sha256:9204569b17ee4c0eff75194b8e6e458479c8aee18953b5ab9cf359fcdac659e2",
                         "size_bytes": 9603085145, "size_source": "NGC's compressed size, linux/arm64",
                         "source": "NVIDIA/dgx-spark-playbooks nvidia/vllm/README.md; digest and size: NGC"}
# --gpu-memory-utilization: on the Spark's unified memory cudaMemGetInfo under-reports and values above
# ~0.87 fail before vLLM 0.24 (vllm-project/vllm#35313); 0.80 leaves the desktop room (engines.md §4).
MEM_FRACTION = 0.80
KV_DTYPE = {"f16": None, "bf16": "bfloat16", "fp8": "fp8"}   # --kv-cache-dtype (None: auto)


def served_name(model: dict[str, Any]) -> str:
    return model.get("alias") or model["model"]


def engine_args(serving: Any, model: dict[str, Any], port: int, keyed: bool = False, bind: str = "0.0.0.0") -> list[str]:
    # vLLM reads the key from VLLM_API_KEY (in the --env-file), so it is on no command line.
    flags = ["vllm", "serve", "/model", "--served-model-name", served_name(model), "--host", bind,
             "--port", str(port), "--tool-call-parser", "openai", "--enable-auto-tool-choice",
             "--reasoning-parser", "openai_gptoss", "--max-model-len", str(serving.context),
             "--max-num-seqs", str(serving.slots),
             "--gpu-memory-utilization", str(serving.mem_fraction or MEM_FRACTION)]
    if KV_DTYPE.get(serving.kv_type):
        flags += ["--kv-cache-dtype", KV_DTYPE[serving.kv_type]]
    return flags


# ----------------------------------------------------------------------------- two Sparks (the state's "pair")
# NVIDIA's "Run on two Sparks" (dgx-spark-playbooks nvidia/vllm/README.md): a Ray head on node 1 and a Ray
# worker on node 2 (vLLM's run_cluster.sh: host network, `ray start --block --head --node-ip-address=H
# --port=6379` / `ray start --block --address=H:6379`), each with the link's interface in the NCCL/Gloo/UCX
# variables, then `vllm serve … --tensor-parallel-size 2 --distributed-executor-backend ray` on the head.
# sparkkit runs that serve as the head container's own process, once `ray status` counts both GPUs, so the
# container is the server (its exit, its logs, its stop) exactly as on one Spark.
RAY_PORT = 6379
PAIR_ORDER = ("head", "worker")     # the worker joins the head's Ray cluster; the serve waits for it
# The 26.05 NGC image ships without Ray: the playbook pip-installs it before `ray start` (only when missing here).
RAY_INSTALL = "(command -v ray >/dev/null || pip install -q --root-user-action=ignore 'ray[default]>=2.9')"


def pair_args(serving: Any, model: dict[str, Any], port: int, keyed: bool, pair: dict[str, Any], role: str,
              bind: str) -> tuple[dict[str, str], list[str]]:
    """(environment, container command) of one side of a two-Spark launch (role: head | worker)."""
    head, me, link = container.link_env(pair, role)
    env = {"VLLM_HOST_IP": me, **link, "RAY_memory_monitor_refresh_ms": "0",
           "RAY_NODE_IP_ADDRESS": me, "RAY_OVERRIDE_NODE_IP_ADDRESS": me}       # run_cluster.sh's Ray IP pins
    if role == "worker":
        return env, ["bash", "-c", f"{RAY_INSTALL} && exec ray start --block --address={head}:{RAY_PORT} "
                                   f"--node-ip-address={me}"]
    serve = engine_args(serving, model, port, keyed, bind) + ["--tensor-parallel-size", "2",
                                                             "--distributed-executor-backend", "ray"]
    script = (f"{RAY_INSTALL} && ray start --head --node-ip-address={head} --port={RAY_PORT} "
              "&& until ray status 2>/dev/null | grep -q '/2.0 GPU'; do sleep 2; done "
              f"&& exec {shlex.join(serve)}")
    return env, ["bash", "-c", script]


# The engine protocol (sparkkit.engines): the container half.
place, prepare, launch, is_running, stop, command = container.protocol(sys.modules[__name__])
