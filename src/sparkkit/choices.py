"""The owner's choices for `sparkkit run`, read from the runbooks' own parameters cells.

A runbook's `parameters` cell is the one source of a choice's name, type, default and help text
(`papermill --help-notebook` shows the same cell). `sparkkit run` builds its options from those
cells, refuses a bad value with the same check the runbook's helper makes (before anything starts,
not after a 63 GB download), and hands each value to every runbook that takes it.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ParameterError, check_choice, check_int


@dataclass(frozen=True)
class Parameter:
    """One line of a parameters cell: `name: type = default  # help`."""

    name: str
    type: str          # str | int | bool | list | float
    default: Any
    help: str
    runbook: str


def read_parameters(notebook: Path) -> dict[str, Parameter]:
    """The parameters cell of `notebook`, line by line (each line a typed, commented assignment)."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cell = next((c for c in nb["cells"] if "parameters" in (c.get("metadata", {}).get("tags") or [])), None)
    if cell is None:
        return {}
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    found: dict[str, Parameter] = {}
    for line in source.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        node = ast.parse(line).body[0]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(node.annotation, ast.Name) and node.value is not None):
            continue
        comment = line[node.end_col_offset:].strip()
        found[node.target.id] = Parameter(node.target.id, node.annotation.id, ast.literal_eval(node.value),
                                          comment[1:].strip() if comment.startswith("#") else "",
                                          Path(notebook).stem)
    return found


def _check_model(v: str) -> None:
    from .model import MODEL_CHOICES
    check_choice("model", v, MODEL_CHOICES)


def _check_scope(v: str) -> None:
    from .claude import SCOPES
    check_choice("scope", v, SCOPES)


def _check_engine(v: str) -> None:
    from .engines import check_engine
    check_engine(v)


def _check_context(v: int) -> None:
    from .model import CATALOGUE
    top = max(e.arch.context_max for e in CATALOGUE.values())
    if isinstance(v, bool) or not isinstance(v, int) or (v != 0 and not 256 <= v <= top):
        raise ParameterError("context", v, f"0 (the largest that fits) or an integer from 256 to {top} "
                                           "(02 checks the chosen model's own maximum)")


def _check_model_dir(v: str) -> None:
    p = Path(v).expanduser()
    if v and p.exists() and not p.is_dir():
        raise ParameterError("model_dir", v, "a directory (it is a file)")


def _pair_parse(v: str) -> None:
    from .pair import parse
    parse(v)             # one sentence naming `peer` when it is none of user@host, a snapshot directory, loopback[:N]


def _check_port(v: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not (v == 0 or 1 <= v <= 65535):
        raise ParameterError("port", v, "0 (the engine's default port) or an integer from 1 to 65535")


def _check_key_file(v: str) -> None:
    if v and not Path(v).expanduser().is_file():
        raise ParameterError("api_key_file", v, "the path of a file that holds the key (mode 0600), or empty")


# name → (the runbook whose parameters cell defines it, the runbooks it is handed to, its check)
OWNER_CHOICES: dict[str, tuple[str, tuple[str, ...], Callable[[Any], None]]] = {
    "model": ("01-preflight", ("01-preflight",), _check_model),
    "engine": ("01-preflight", ("01-preflight", "02-plan", "03-place-model", "04-engine", "05-serve", "06-verify",
                                "07-wire-claude"), _check_engine),
    "model_dir": ("01-preflight", ("01-preflight", "03-place-model"), _check_model_dir),
    "peer": ("01-preflight", ("01-preflight",), lambda v: _pair_parse(v)),   # 02 and 05 read 01's pair section
    "hf_endpoint": ("03-place-model", ("03-place-model",), lambda v: None),
    "context": ("02-plan", ("02-plan",), _check_context),
    "host": ("05-serve", ("05-serve",), lambda v: None),        # checked with the key below
    "port": ("05-serve", ("05-serve",), _check_port),
    "api_key_file": ("05-serve", ("05-serve",), _check_key_file),
    "scope": ("07-wire-claude", ("07-wire-claude",), _check_scope),
    "project_dir": ("07-wire-claude", ("07-wire-claude",), lambda v: None),   # 07 names a missing directory
}


def parameters(directory: Path) -> dict[str, Parameter]:
    """The owner's choices as the runbooks in `directory` declare them."""
    cells = {nb.stem: read_parameters(nb) for nb in sorted(Path(directory).glob("[0-9][0-9]-*.ipynb"))}
    found = {}
    for name, (home, _to, _check) in OWNER_CHOICES.items():
        if name not in cells.get(home, {}):
            raise ParameterError(name, None, f"a parameter of runbooks/{home}.ipynb (its parameters cell lacks it)")
        found[name] = cells[home][name]
    return found


def convert(p: Parameter, text: str) -> Any:
    """A command-line string as the parameter's declared type; one sentence when it is not one."""
    if p.type == "int":
        try:
            return int(text)
        except ValueError:
            raise ParameterError(p.name, text, "an integer") from None
    if p.type == "bool":
        low = text.lower()
        if low not in ("true", "false", "yes", "no", "1", "0"):
            raise ParameterError(p.name, text, "true or false")
        return low in ("true", "yes", "1")
    return text


def check(values: dict[str, Any]) -> None:
    """Refuse a bad choice now, with the runbook's own sentence."""
    from .engines.launch import check_bind
    for name, value in values.items():
        OWNER_CHOICES[name][2](value)
    if "host" in values or "api_key_file" in values:
        check_bind(values.get("host", "127.0.0.1"), bool(values.get("api_key_file")))


def per_runbook(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{runbook stem: {parameter: value}} for the choices the owner made (defaults are left to the cells)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        for stem in OWNER_CHOICES[name][1]:
            out.setdefault(stem, {})[name] = value
    return out
