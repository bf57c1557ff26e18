"""The typed results of each step's record, and the versioned JSON Schema committed from them (issue 14)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from sparkkit import bench, plan, records, results, verify
from sparkkit.host import run as host_run
from sparkkit.model import GIB

SNAPS = Path(__file__).parent / "snapshots"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARKKIT_RUNS", str(tmp_path / "runs"))
    return tmp_path


def test_the_committed_schema_is_the_one_the_models_make():
    """Change a model, regenerate: python -m sparkkit.results > src/sparkkit/data/schema/results-1.json"""
    assert results.SCHEMA_FILE.read_text(encoding="utf-8") == results.dumps()
    committed = json.loads(results.SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(committed)              # a valid JSON Schema itself
    assert committed["$id"] == results.RESULTS_SCHEMA == f"sparkkit.results/{results.VERSION}"
    assert results.SCHEMA_FILE.name == f"results-{results.VERSION}.json"
    assert [c["if"]["properties"]["step"]["const"] for c in committed["allOf"]] == list(results.STEPS)


def test_every_step_has_typed_results():
    models = results.models()
    assert tuple(models) == results.STEPS
    defs = json.loads(results.SCHEMA_FILE.read_text(encoding="utf-8"))["$defs"]
    # the figures people compare across runs are typed, not just present
    assert defs["PlanResults"]["properties"]["context"] == {"type": "integer"}
    assert defs["VerifyResults"]["properties"]["decode_tps"] == {"type": ["number", "null"]}
    assert defs["ServeResults"]["properties"]["load time (s)"] == {"type": "number"}
    assert "checks" in defs["HostReport"]["required"] and defs["Check"]["additionalProperties"] is False


def _plan_record(run):
    records.update_state("host", {"is_gb10": False, "target": "embedded", "usable_bytes": 20 * GIB})
    records.update_state("choice", {"model": "embedded", "engine": "llamacpp", "model_dir": str(run)})
    return records.finish("02-plan", *plan.run(context=8192).record(), run)


def test_records_the_steps_write_follow_the_schema(tmp_path):
    run = tmp_path / "run"
    report, _ = host_run(engine="llamacpp", host=str(SNAPS / "dgx-spark-fe-7.3.1"))
    records.finish("01-preflight", *report.record(), run)
    v = _plan_record(run)
    arch = v.results["arch"]
    saved = json.loads(v.record_path.read_text())["results"]
    assert saved["arch"]["active_bytes_per_token"] == arch["active_bytes_per_token"]   # a rate, not a secret
    runs = bench.pd.DataFrame([{"test": "tg16 @ d0", "kind": "tg", "depth": 0, "repeat": 1, "tok/s": 50.0,
                                "new prompt tokens": 10, "cached": None, "generated": 16, "TTFT (s)": 0.1,
                                "total (s)": 0.4, "source": "engine"}])
    records.finish("06-verify", *verify.record([verify.Probe("chat completion", True, 0.2, "ok")], runs), run)
    schema = json.loads(results.SCHEMA_FILE.read_text(encoding="utf-8"))
    for path in sorted(run.glob("*.json")):
        jsonschema.validate(json.loads(path.read_text()), schema)       # any JSON Schema tool reads them


def test_a_record_that_breaks_the_schema_is_refused_naming_the_field_and_nothing_is_lost(tmp_path):
    run = tmp_path / "run"
    good = {"engine": "llamacpp", "pid": 4242, "container": "", "url": "http://127.0.0.1:8080", "load time (s)": 0.2,
            "log": "/x/server.log", "command": "llama-server", "argv": ["llama-server"], "replaced": None, "notes": []}
    first = records.finish("05-serve", "pass", "serving", good, run)
    before = first.record_path.read_text()
    with pytest.raises(records.RecordError, match=r"05-serve's results do not follow sparkkit.results/1 at "
                                                  r"`results.pid`: 'abc' is not of type 'integer', 'null'"):
        records.finish("05-serve", "pass", "serving", {**good, "pid": "abc"}, run)
    assert first.record_path.read_text() == before                      # the good record is not replaced
    kept = json.loads((run / "05-serve.invalid.json").read_text())
    assert kept["results"]["pid"] == "abc"                              # … and the bad one is kept beside it
    with pytest.raises(records.RecordError, match="`results`: 'url' is a required property"):
        records.finish("05-serve", "pass", "serving", {k: v for k, v in good.items() if k != "url"}, run)
    with pytest.raises(records.RecordError, match="Additional properties are not allowed .'speed' was unexpected"):
        records.finish("05-serve", "pass", "serving", {**good, "speed": 3}, run)
    with pytest.raises(records.RecordError, match="`step`: '08-extra' is not one of"):
        records.finish("08-extra", "pass", "x", {}, run)
    assert sorted(p.name for p in run.glob("05-serve*.json")) == ["05-serve.invalid.json", "05-serve.json"]
