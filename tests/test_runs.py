"""`sparkkit runs`: the recorded runs listed, two compared; damaged records and unknown ids in one sentence."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sparkkit import plan, records, runs, verify
from sparkkit.__main__ import main
from sparkkit.errors import ParameterError
from sparkkit.host import run as host_run
from sparkkit.model import GIB
from sparkkit.tables import WholeTable

SNAPS = Path(__file__).parent / "snapshots"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARKKIT_RUNS", str(tmp_path / "runs"))
    records.update_state("host", {"is_gb10": False, "target": "embedded", "usable_bytes": 20 * GIB})
    records.update_state("choice", {"model": "embedded", "engine": "llamacpp", "model_dir": str(tmp_path)})
    return tmp_path


def bench_rows(decode: float) -> pd.DataFrame:
    return pd.DataFrame([{"test": f"{k} @ d0", "kind": k, "depth": 0, "repeat": 1, "tok/s": rate,
                          "new prompt tokens": 10, "cached": 0, "generated": 16, "TTFT (s)": ttft,
                          "total (s)": 0.5, "source": "engine timings"}
                         for k, rate, ttft in (("tg", decode, 0.02), ("tg agent", decode * 0.8, 0.05),
                                               ("pp", 1000.0, 0.3))])


def record_run(run_id: str, context: int, decode: float, snapshot: str | None = None) -> Path:
    """A run as the runbooks record it: 01 (a recorded host or this one), 02, 05 and 06 through records.finish."""
    run = records.runs_root() / run_id
    report, _ = host_run(engine="llamacpp", host=str(SNAPS / snapshot) if snapshot else "")
    records.finish("01-preflight", *report.record(), run)
    view = plan.run(context=context)
    records.finish("02-plan", *view.record(), run)
    records.finish("05-serve", "pass", "serving", {
        "engine": "llamacpp", "pid": 4242, "container": "", "url": "http://127.0.0.1:8080", "load time (s)": 0.42,
        "log": "/x/server.log", "command": "llama-server", "argv": ["llama-server"], "replaced": None, "notes": []}, run)
    records.finish("06-verify", *verify.record([verify.Probe("chat completion", True, 0.2, "ok")], bench_rows(decode)),
                   run)
    return run


def test_runs_are_listed_with_host_model_engine_verdicts_and_figures():
    record_run("20261129-100000", 8192, 50.0, snapshot="dgx-spark-fe-7.3.1")
    second = record_run("20261129-110000", 16384, 60.0)
    view = plan.run(context=32768)                       # 02 again in the second run: the earlier record is kept
    records.finish("02-plan", *view.record(), second)
    (second / "07-wire-claude.invalid.json").write_text("{}")   # a refused record's results: not a step's record
    t = runs.table()
    assert isinstance(t, WholeTable) and list(t["run"]) == ["20261129-100000", "20261129-110000"]
    first, last = t.iloc[0], t.iloc[1]
    assert first["host"].startswith("NVIDIA DGX Spark") and "snapshot" in first["host"]
    assert (first["model"], first["engine"], first["01"], first["02"], first["05"], first["06"], first["07"]) == (
        "gpt-oss-120b", "llamacpp", "pass", "pass", "pass", "pass", "")   # 01 chose it for the recorded GB10
    assert (first["context"], first["decode (tok/s)"], last["context"], last["decode (tok/s)"]) == (8192, 50.0, 32768,
                                                                                                    60.0)
    text = repr(t)
    assert "32768" in text and "32768.0" not in text and "NaN" not in text and "None" not in text
    assert "<td>20261129-110000</td>" in t._repr_html_()          # a notebook shows the same table


def test_two_runs_side_by_side_mark_what_differs(capsys):
    record_run("20261129-100000", 8192, 50.0)
    record_run("20261129-110000", 16384, 50.0)
    c = runs.compare("20261129-10", "20261129-110000")             # a unique prefix names a run
    rows = c.set_index("")
    assert list(rows.columns) == ["20261129-100000", "20261129-110000", "differs"]
    assert rows.loc["context"].tolist() == [8192, 16384, "≠"]
    assert rows.loc["decode (tok/s)"].tolist() == [50.0, 50.0, ""]
    assert rows.loc["06-verify verdict"].tolist() == ["pass", "pass", ""]
    assert rows.loc["probes ok"].tolist() == ["1/1", "1/1", ""]
    assert main(["runs", "20261129-100000", "20261129-110000"]) == 0
    out = capsys.readouterr().out
    assert "decode (tok/s)" in out and "16384" in out and "≠" in out
    assert main(["runs", str(records.runs_root() / "20261129-100000")]) == 0      # a run directory's path, alone
    assert "8192" in capsys.readouterr().out
    assert main(["runs", str(records.runs_root() / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "parameter `run`" in err and "this path is not a directory" in err


def test_a_damaged_record_skips_its_run_in_one_sentence_and_nothing_is_written(capsys):
    record_run("20261129-100000", 8192, 50.0)
    bad = record_run("20261129-110000", 8192, 50.0)
    (bad / "05-serve.json").write_text("{not json")
    other = records.runs_root() / "20261129-120000"
    other.mkdir()
    (other / "06-verify.json").write_text(json.dumps({"schema": "somebody-else/2", "results": {}}))
    before = {p: p.read_bytes() for p in records.runs_root().rglob("*") if p.is_file()}
    assert main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert "20261129-100000" in out and "20261129-110000" not in out and "20261129-120000" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith("skipped run 20261129-110000: ") and "05-serve.json is not readable JSON" in lines[0]
    assert "06-verify.json is not a sparkkit record" in lines[1]
    assert {p: p.read_bytes() for p in records.runs_root().rglob("*") if p.is_file()} == before
    assert main(["runs", "20261129-110000", "20261129-100000"]) == 2     # asked for by name: the same sentence
    assert "05-serve.json is not readable JSON" in capsys.readouterr().err


def test_unknown_or_ambiguous_run_ids_are_one_sentence_naming_them(capsys):
    assert main(["runs"]) == 0
    assert "no runs recorded under" in capsys.readouterr().out          # none yet: said, not an empty table
    record_run("20261129-100000", 8192, 50.0)
    record_run("20261129-110000", 8192, 50.0)
    with pytest.raises(ParameterError, match=r"parameter `run`: got 'nope'; accepted: a run id that `sparkkit runs` "
                                             r"lists \(under .*: 20261129-100000, 20261129-110000\)"):
        runs.compare("nope", "20261129-100000")
    assert main(["runs", "20261129-1", "20261129-100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "parameter `run`: got '20261129-1'" in err and "give more of the id" in err
    assert main(["runs", "a", "b", "c"]) == 2
    assert "parameter `runs`" in capsys.readouterr().err
