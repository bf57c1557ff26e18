"""sparkkit: runbooks that turn a GB10 box into a local gpt-oss coding backend for Claude Code.

Each runbook step calls one helper here; the modules are one domain noun each:
host (01), plan + tuner (02), model + download + tinymodel (03), engines (04), serve (05),
verify + bench (06), claude (07), records (state file and run records), runner (`make run`).
"""
from .errors import ParameterError, ServeError, SparkkitError, StateError
from .records import StepFailed

__version__ = "0.1.0"
__all__ = ["ParameterError", "ServeError", "SparkkitError", "StateError", "StepFailed", "__version__"]
