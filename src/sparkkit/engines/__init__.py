"""Serving engines. llama.cpp is implemented; the others are named so errors can say so."""
from __future__ import annotations

from ..errors import ParameterError

ENGINES = ("llamacpp",)
NOT_YET = ("ollama", "sglang", "vllm")


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ParameterError("engine", engine, ", ".join(ENGINES) + f" ({', '.join(NOT_YET)}: not supported yet)")
    return engine
