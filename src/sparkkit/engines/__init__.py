"""The serving engines: one registry entry and one module per engine, behind one small protocol.

Every fact about an engine that more than one runbook needs lives in its `EngineSpec` here (name,
label, how it runs, where its weights go and in which layout, KV types, default port, how the
served model is named, how to install it). What an engine *does* lives in its module
(`sparkkit.engines.<name>`), which 03–05 reach only through `module(name)`:

    place(model, model_dir, hf_endpoint="", revision="main", **kw) -> download.Placed   # 03
    prepare(**params) -> Ready                                                        # 04
    launch(serving, model, host, port, key_file) -> serve.Started                     # 05
    is_running(server) -> bool ; stop(server, timeout, remove) -> bool               # stop/status
    command(serving, model, host, port) -> list[str]          # the same launch, as the owner would type it

Adding an engine is one module with a `SPEC` and those functions, its line in `MODULES`, and its tests.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from ..errors import ParameterError


@dataclass(frozen=True)
class EngineSpec:
    name: str                    # the parameter value: llamacpp | ollama | sglang | vllm
    label: str                   # what people call it
    runs_as: str                 # process (sparkkit starts it) | service (systemd, the owner's) | container (Docker)
    weights: str                 # layout it loads: gguf | ollama (its own store) | safetensors (root of the HF repo)
    weights_home: str            # where 01/03 put (or find) them by default
    kv_types: tuple[str, ...]    # what 02 accepts for -p kv_type with this engine
    default_port: int
    health: str                  # the path that answers 200 when the server is up
    served_name: str             # how the served model gets the name clients send
    install: str                 # the command that installs it (04 shows it when it is missing)
    messages: bool | None        # /v1/messages (Claude Code's API): True always, None: depends on version — probe
    slots: int = 1               # the concurrent conversations 02 plans when -p slots is 0


MODULES = {"llamacpp": "sparkkit.engines.llamacpp", "ollama": "sparkkit.engines.ollama",
           "sglang": "sparkkit.engines.sglang", "vllm": "sparkkit.engines.vllm"}
ENGINES = tuple(MODULES)


class Engine(Protocol):
    SPEC: EngineSpec

    def place(self, model: str, model_dir: str, hf_endpoint: str = "", revision: str = "main", **kw: Any) -> Any: ...
    def prepare(self, **params: Any) -> Any: ...
    def launch(self, serving: Any, model: dict[str, Any], host: str, port: int, key_file: str | None) -> Any: ...
    def is_running(self, server: dict[str, Any]) -> bool: ...
    def stop(self, server: dict[str, Any], timeout: float = 15.0, remove: bool = True) -> bool: ...
    def command(self, serving: Any, model: dict[str, Any], host: str, port: int) -> list[str]: ...


def check_engine(engine: str) -> str:
    if engine not in MODULES:
        raise ParameterError("engine", engine, " | ".join(ENGINES))
    return engine


def module(engine: str) -> ModuleType:
    """The module that implements `engine` (see the protocol above)."""
    return importlib.import_module(MODULES[check_engine(engine)])


def spec(engine: str) -> EngineSpec:
    return module(engine).SPEC


def label(engine: str) -> str:
    return spec(engine).label


def specs() -> dict[str, EngineSpec]:
    return {name: spec(name) for name in ENGINES}


def prepare(engine: str = "", **params: Any) -> Any:
    """Runbook 04: make 01's engine ready (llama.cpp: build or the embedded one; Ollama: its service;
    SGLang/vLLM: Docker and the pinned image). `params` are 04's own; each engine takes what it knows."""
    from ..serve import chosen_engine
    engine = chosen_engine(engine, "04-engine")
    if engine == "llamacpp":
        return module(engine).prepare(engine=engine, **params)
    return module(engine).prepare(**params)
