"""The errors sparkkit raises, and the checks that raise them for bad parameters.

Every runbook parameter goes through one of these checks, so that a wrong value costs one
clear sentence naming the parameter and what it accepts, never a traceback from deep inside.
"""
from __future__ import annotations

from collections.abc import Iterable


class SparkkitError(Exception):
    """Base class: something sparkkit could not do, said in words a user can act on."""


class ParameterError(SparkkitError, ValueError):
    """A runbook or helper parameter has a value we cannot use."""

    def __init__(self, parameter: str, value: object, accepted: str):
        self.parameter, self.value, self.accepted = parameter, value, accepted
        super().__init__(f"parameter `{parameter}`: got {value!r}; accepted: {accepted}")


class ServeError(SparkkitError):
    """The model server did not start, or stopped."""


class StateError(SparkkitError):
    """An earlier step's result that this step needs is missing."""


def check_choice(parameter: str, value: object, accepted: Iterable[str]) -> str:
    accepted = list(accepted)
    if value not in accepted:
        raise ParameterError(parameter, value, ", ".join(accepted))
    return value  # type: ignore[return-value]


def check_int(parameter: str, value: object, lo: int, hi: int | None = None) -> int:
    """An int within [lo, hi]; bools are refused (papermill turns `-p x True` into a bool)."""
    bounds = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(parameter, value, bounds)
    if value < lo or (hi is not None and value > hi):
        raise ParameterError(parameter, value, bounds)
    return value
