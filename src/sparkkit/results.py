"""What each step's record holds under `results`: typed models, and the versioned JSON Schema made from them.

A record (`records.finish`) is ``{"schema": "sparkkit.record/1", "results_schema": "sparkkit.results/1",
"step", "verdict", "headline", "finished_at", "results"}``. The models below say, step by step, which
fields `results` has and their types; most are the dataclasses the steps already return (01's
`HostReport`, 03's `Placed`, 04's `EngineReady`, …), the rest describe the dicts a step assembles.

`schema()` turns them into one JSON Schema (draft 2020-12) for a whole record; it is committed as
``sparkkit/data/schema/results-1.json`` so people and other tools can read and compare records without
sparkkit (as llama-benchy publishes its report schema). Every record is checked against that file as it
is written: one that does not follow it is a sparkkit bug, refused with one sentence naming the field,
its results kept beside the record. `tests/test_results.py` keeps the committed file equal to `schema()`.

Change a model: bump `VERSION` when a field is removed or changes type (an added optional field is not
a new version), then regenerate: ``python -m sparkkit.results > src/sparkkit/data/schema/results-1.json``
(the file name follows the version).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

VERSION = 1
RESULTS_SCHEMA = f"sparkkit.results/{VERSION}"
SCHEMA_FILE = Path(__file__).parent / "data" / "schema" / f"results-{VERSION}.json"
STEPS = ("01-preflight", "02-plan", "03-place-model", "04-engine", "05-serve", "06-verify", "07-wire-claude")


def _as(name: str, **kw: Any):
    """A field whose JSON key is not a Python name ("tok/s", "load time (s)")."""
    return field(metadata={"json": name}, **kw)


# ----------------------------------------------------------------------------- the dicts steps assemble
@dataclass
class Failure:
    """04 and 05 when they stop on an error: the error's text (the verdict is fail)."""
    error: str


@dataclass
class PairResults:
    """01 with -p peer: the second GB10 of a pair (sparkkit.pair.PairReport.section(); the state's "pair")."""
    peer: str                      # the parameter as given
    transport: Literal["ssh", "snapshot", "loopback"]
    host: str                      # ssh: user@host or host; else ""
    head_addr: str                 # this box's IPv4 on the ConnectX-7 link ("127.0.0.1" for loopback)
    peer_addr: str                 # the second box's IPv4 on the link
    iface: str                     # this box's link interface, or ""
    peer_iface: str
    link_mbps: int | None
    mtu: int | None
    peer_gpu_index: int | None     # loopback:N → N
    peer_usable_bytes: int | None  # the second box's usable memory, measured as 01 measures one box
    peer_gpu: str | None
    status: Literal["pass", "warn", "fail"]
    checks: list[Check]


@dataclass
class PlanRow:
    component: str
    bytes: int
    how: str


@dataclass
class BoxResult:
    """02 for a pair: one box's share (`plan.BoxPlan.to_dict()`)."""
    name: str
    device: str
    layers: str
    n_layers: int
    output: bool
    usable_bytes: int
    total_bytes: int
    verdict: Literal["fits", "tight", "does not fit"]
    rows: list[PlanRow]


@dataclass
class PlanResults:
    """02-plan: `plan.Plan.to_dict()` plus the largest context that fits and the architecture."""
    model: str
    engine: str
    backend: str
    context: int
    slots: int
    kv_type: str
    ubatch: int
    usable_bytes: int
    total_bytes: int
    kv_bytes: int
    verdict: Literal["fits", "tight", "does not fit"]
    refusal: str
    notes: list[str]
    cache_ram_mib: int | None
    serving: "Serving | None"
    rows: list[PlanRow]
    aside: list[PlanRow]
    largest_context: int
    arch: "Architecture"
    adopted_in_tuner: bool = False      # the tuner's "Use for 05-serve" rewrote this record
    boxes: list[BoxResult] = field(default_factory=list)   # a pair (01's peer): each box's share


@dataclass
class ServeResults:
    """05-serve: `serve.Started.as_row()`, the command line, what became of an earlier server, notes."""
    engine: str
    pid: int | None
    container: str
    url: str
    load_time_s: float = _as("load time (s)")
    log: str = ""
    command: str = ""
    argv: list[str] = field(default_factory=list)
    replaced: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchRun:
    """06: one request of the benchmark (llama-bench's terms)."""
    test: str
    kind: Literal["pp", "tg", "tg agent", "context"]
    depth: int
    repeat: int
    tok_s: float | None = _as("tok/s")
    new_prompt_tokens: float | None = _as("new prompt tokens", default=None)
    cached: float | None = None
    generated: float | None = None
    ttft_s: float | None = _as("TTFT (s)", default=None)
    total_s: float | None = _as("total (s)", default=None)
    source: str = ""


@dataclass
class BenchSummary:
    """06: the median of each test."""
    test: str
    depth: int
    tok_s: float | None = _as("tok/s")
    sd: float | None = _as("± sd", default=None)
    new_prompt_tokens: float | None = _as("new prompt tokens", default=None)
    cached: float | None = None
    ttft_s: float | None = _as("TTFT (s)", default=None)
    runs: int = 0


@dataclass
class VerifyResults:
    """06-verify: the probes, every benchmark request, the medians, and the headline's figures (at the
    shallowest depth: `ttft_s` an agent turn's, its context cached; `cold_ttft_s` a whole new context's)."""
    probes: list["Probe"]
    bench: list[BenchRun]
    summary: list[BenchSummary]
    decode_tps: float | None
    agent_decode_tps: float | None
    prefill_tps: float | None
    ttft_s: float | None
    depth: int
    cold_ttft_s: float | None = None
    cold_depth: int | None = None


@dataclass
class GoalResult:
    """07's agent loop: a goal, what was measured, and the ratio (≥ 1 meets it)."""
    name: str
    measured: float | None
    goal: float
    unit: str
    higher_is_better: bool = True
    detail: str = ""
    ratio: float | None = None
    met: bool | None = None


@dataclass
class AgentLoopResults:
    """07 with `-p agent_loop True`: `agentloop.LoopReport.record()`."""
    launch: dict[str, Any]
    sessions: list["SessionRun"]
    requests: list[dict[str, Any]]
    goals: list[GoalResult]
    decode_step_s: float | None
    server_step_s: float | None
    notes: list[str]


@dataclass
class WireResults:
    """07-wire-claude: the scope and what it changed for whom, the settings written (None: scope launcher writes
    none), the real CLI's turn, the bridge if one stands in front."""
    settings: str | None
    backup: str
    added: list[str]
    changed: list[str]
    kept: list[str]
    env: dict[str, str]
    cli_version: str | None    # None: the CLI was not run (run_cli False)
    prompt: str
    cli: "CliRun | None"
    notes: list[str]
    bridge: dict[str, Any] | None
    scope: str = ""
    for_whom: str = ""
    agent_loop: AgentLoopResults | None = None


# ----------------------------------------------------------------------------- the models, step by step
def models() -> dict[str, tuple[type, ...]]:
    """Each step's result models (a record's results follow one of them)."""
    from .agentloop import SessionRun
    from .claude import CliRun
    from .download import Placed
    from .engines import container, ollama
    from .engines.llamacpp import EngineReady
    from .engines.serving import Serving
    from .host import Check, HostReport
    from .model import Architecture
    from .verify import Probe
    # the forward references above, resolved where the models are read
    from . import results as importable     # PairResults (host.HostReport.pair) is this module's, also as __main__
    for names in (globals(), vars(importable)):
        names.update(Serving=Serving, Architecture=Architecture, Probe=Probe, SessionRun=SessionRun, CliRun=CliRun,
                     Check=Check)
    return {"01-preflight": (HostReport,), "02-plan": (PlanResults,), "03-place-model": (Placed,),
            "04-engine": (EngineReady, container.Ready, ollama.Ready, Failure),
            "05-serve": (ServeResults, Failure), "06-verify": (VerifyResults,), "07-wire-claude": (WireResults,)}


def _def_name(cls: type) -> str:
    if cls.__name__ == "Ready":                                    # container.Ready, ollama.Ready
        return cls.__module__.rsplit(".", 1)[-1].capitalize() + "Ready"
    return cls.__name__


class _Gen:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def of(self, tp: Any) -> dict[str, Any]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return {}
        if tp is type(None) or tp is None:
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str or tp is Path:
            return {"type": "string"}
        if origin is Literal:
            return {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            parts = [self.of(a) for a in args]
            simple = [p.get("type") for p in parts]
            if all(isinstance(t, str) and len(p) == 1 for t, p in zip(simple, parts)):
                return {"type": simple}
            return {"anyOf": parts}
        if origin in (list, tuple):
            item = args[0] if args else Any
            return {"type": "array", "items": self.of(item)}
        if origin is dict or tp is dict:
            return {"type": "object", "additionalProperties": self.of(args[1]) if args else {}}
        if tp is list:
            return {"type": "array"}
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp)
        raise TypeError(f"no JSON Schema for {tp!r}")

    def dataclass(self, cls: type) -> dict[str, Any]:
        name = _def_name(cls)
        if name not in self.defs:
            self.defs[name] = {}                                       # recursion guard
            hints = typing.get_type_hints(cls)      # each in its own module (results' own: see models())
            props, required = {}, []
            for f in dataclasses.fields(cls):
                key = f.metadata.get("json", f.name)
                props[key] = self.of(hints[f.name])
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(key)
            doc = (cls.__doc__ or "").strip()
            self.defs[name] = {"type": "object", **({"description": doc.splitlines()[0]} if doc and
                                                    not doc.startswith(cls.__name__ + "(") else {}),
                               "properties": props, "required": required, "additionalProperties": False}
        return {"$ref": f"#/$defs/{name}"}


def schema() -> dict[str, Any]:
    """The JSON Schema of a whole record, each step's results typed by its models."""
    g = _Gen()
    by_step = {}
    for step, classes in models().items():
        refs = [g.dataclass(c) for c in classes]
        by_step[step] = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": RESULTS_SCHEMA,
        "title": "A sparkkit run record (runs/<run>/NN-step.json)",
        "description": "Written by sparkkit.records.finish; `results` typed per step by sparkkit.results' models.",
        "type": "object",
        "properties": {
            "schema": {"const": "sparkkit.record/1"},
            "results_schema": {"const": RESULTS_SCHEMA},
            "step": {"enum": list(STEPS)},
            "verdict": {"enum": ["pass", "warn", "fail"]},
            "headline": {"type": "string"},
            "finished_at": {"type": "string"},
            "results": {"type": "object"},
        },
        "required": ["schema", "results_schema", "step", "verdict", "headline", "finished_at", "results"],
        "additionalProperties": False,
        "allOf": [{"if": {"properties": {"step": {"const": step}}},
                   "then": {"properties": {"results": by_step[step]}}} for step in STEPS],
        "$defs": dict(sorted(g.defs.items())),
    }


def dumps() -> str:
    """The schema file's text, exactly as committed."""
    return json.dumps(schema(), indent=1, ensure_ascii=False) + "\n"


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema
    data = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(data)


def problems(record: dict[str, Any]) -> list[str]:
    """Where `record` (as JSON reads it back) departs from the committed schema: one line each, most
    specific first; empty when it follows it."""
    found = [_closest(e) for e in _validator().iter_errors(record)]
    found.sort(key=lambda e: -len(e.absolute_path))
    return [f"`{'.'.join(str(p) for p in e.absolute_path) or 'the record'}`: {e.message[:300]}" for e in found]


def _closest(e):
    """For "not valid under any of the given schemas" (04's and 05's kinds of result), the error of the
    kind the results come closest to: the branch with the fewest errors, most specific first."""
    from collections import defaultdict
    while e.validator in ("anyOf", "oneOf") and e.context:
        branches = defaultdict(list)
        for sub in e.context:
            branches[sub.relative_schema_path[0]].append(sub)
        nearest = min(branches.values(), key=len)
        e = max(nearest, key=lambda s: len(s.absolute_path))
    return e


if __name__ == "__main__":
    import sys
    sys.stdout.write(dumps())
