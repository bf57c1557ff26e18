"""Tables people read: whole cells, integers as integers, no NaN, sparkkit's `code` as code (issue 14)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import mistune
import pandas as pd
import pytest

from sparkkit import bench, plan, records
from sparkkit.errors import ParameterError
from sparkkit.model import GIB
from sparkkit.tables import WholeTable, code_html

RUNBOOKS = sorted((Path(__file__).parents[1] / "runbooks").glob("*.ipynb"))
LONG = "apt install cuda-toolkit-13-0 && export PATH=/usr/local/cuda/bin:$PATH # a fix longer than 50 characters"


def test_whole_table_shows_whole_cells_integers_and_no_nan():
    t = WholeTable([{"check": "cuda", "fix": LONG, "count": 3.0, "rate": 1.5, "missing": None},
                    {"check": "disk", "fix": None, "count": float("nan"), "rate": float("nan"), "missing": 2.0}])
    text, page = repr(t), t._repr_html_()
    for out in (text, page):
        assert "cuda-toolkit-13-0 && export" in out.replace("&amp;", "&") and "characters" in out   # not cut
        assert "NaN" not in out and "nan" not in out and "None" not in out and "<NA>" not in out
        assert "3.0" not in out and "2.0" not in out                           # whole numbers stay whole
        assert "1.5" in out
    assert isinstance(t[["check"]], WholeTable)                                # slicing keeps it whole


def test_sparkkit_sentences_show_code_as_code_in_html_and_as_typed_in_text():
    sentence = str(ParameterError("context", 300000, "0 or an integer from 256 to 131072 <the model's max>"))
    t = WholeTable([{"probe": "plan", "detail": sentence}])
    page = t._repr_html_()
    assert "parameter <code>context</code>: got 300000" in page
    assert "&lt;the model's max&gt;" in page and "<the model" not in page      # the rest stays text
    assert "\\`" not in page and "`" not in page
    assert "parameter `context`: got 300000" in repr(t)                        # the terminal: as printed
    assert code_html("a <b> `c & d`") == "a &lt;b&gt; <code>c &amp; d</code>"


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.stem)
def test_runbook_markdown_renders_parameter_names_as_code(path):
    """The troubleshooting tables wrote `parameter \\`x\\``: Markdown has no escapes inside a code span, so
    JupyterLab showed `parameter \\` as code and the rest as literal backticks."""
    render = mistune.create_markdown(plugins=["table"])
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        page = render("".join(cell["source"]))
        assert "\\`" not in page and "<code>parameter \\</code>" not in page, path.name
        for name in ("context", "slots", "engine", "model_dir", "host", "force"):
            if f"parameter `{name}`" in "".join(cell["source"]):
                assert f"<code>parameter `{name}`</code>" in page, (path.name, name)


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path))
    monkeypatch.setenv("SPARKKIT_RUNS", str(tmp_path / "runs"))
    records.update_state("host", {"is_gb10": False, "target": "embedded", "usable_bytes": 20 * GIB})
    records.update_state("choice", {"model": "embedded", "engine": "llamacpp", "model_dir": str(tmp_path)})
    return tmp_path


def test_02_tables_are_whole_with_integers_and_no_nan(state):
    view = plan.run(context=8192)
    memory = view.plan.table()
    assert isinstance(memory, WholeTable)
    longest = max(memory["how"], key=len)
    assert len(longest) > 50 and longest in repr(memory)                 # the "how" column is whole
    note, by_depth, engines = plan.speed_tables(view.setting.arch, view.plan.kv_type)
    for t in (memory, by_depth, engines):
        assert isinstance(t, WholeTable) and "NaN" not in repr(t) and "NaN" not in t._repr_html_()
    # the prefill forecast is a whole number of tokens a second: shown as one
    first = int(by_depth["prefill forecast (tok/s)"].iloc[0])
    assert f"{first}.0" not in repr(by_depth) and str(first) in repr(by_depth)


def test_no_decode_forecast_curve_for_the_embedded_stand_in(state):
    """The tiny model's 'forecast' ran to ~120,000 tok/s on 02's plot as if a GB10 did that."""
    tiny = plan.run(context=8192)
    assert not plan.forecast_means_something(tiny.plan.arch)
    assert tiny.curve["decode forecast at full depth (tok/s)"].max() > 10_000     # what would have been drawn
    fig = tiny.figure()
    assert len(fig.axes) == 1                                                      # no forecast axis
    assert any("no decode forecast" in t.get_text() for t in fig.axes[0].texts)
    real = plan.run(context=8192, engine="llamacpp", model="gpt-oss-120b")
    assert plan.forecast_means_something(real.plan.arch)
    fig = real.figure()
    assert len(fig.axes) == 2 and max(fig.axes[1].lines[0].get_ydata()) < 100   # a Spark's tens of tok/s


def test_tuner_button_updates_02s_record_and_keeps_the_old_one(state):
    from sparkkit.tuner import ContextTuner
    run = records.run_dir("")
    view = plan.run(context=4096)
    records.finish("02-plan", *view.record(), run)
    t = ContextTuner.for_view(view, run)
    t.context.value = 16384
    t.adopt_button.click()
    rec = records.read_record(run / "02-plan.json")
    assert rec["results"]["context"] == 16384 and rec["results"]["adopted_in_tuner"] is True
    assert rec["headline"].startswith("adopted in the tuner")
    assert rec["results"]["context"] == records.load_state()["plan"]["context"]   # record and state agree
    kept = [p for p in run.glob("02-plan.*.json")]
    assert len(kept) == 1 and records.read_record(kept[0])["results"]["context"] == 4096   # never lost
    assert "record 02-plan.json updated" in t.status.value


def test_the_tuner_shows_a_refusal_with_its_parameter_as_code(state):
    from sparkkit.tuner import ContextTuner
    t = ContextTuner.for_view(plan.run(context=4096))
    t.context.value = 1024
    t.slots.value = 8                                     # 128 tokens a slot: refused, shown in the widget's HTML
    assert "parameter <code>slots</code>: got 8" in t.status.value and "`" not in t.status.value


def _runs(depths=(0, 1000)) -> pd.DataFrame:
    rows = []
    for d in depths:
        if d:
            rows.append({"test": f"context d{d}", "kind": "context", "depth": d, "repeat": 1, "tok/s": 900.0,
                         "new prompt tokens": d, "cached": 0, "generated": 1, "TTFT (s)": 1.25, "total (s)": 1.3,
                         "source": "engine"})
        for kind, rate, ttft in (("tg", 50.0, 0.02), ("tg agent", 40.0, 0.05), ("pp", 1000.0, 0.3)):
            rows.append({"test": f"{kind} @ d{d}", "kind": kind, "depth": d, "repeat": 1, "tok/s": rate,
                         "new prompt tokens": 10, "cached": d, "generated": 16, "TTFT (s)": ttft, "total (s)": 1.0,
                         "source": "engine"})
    return pd.DataFrame(rows)


def test_06_headline_and_plot_name_the_ttft_they_show():
    """06's headline quoted an agent turn's (cached) TTFT while its plot was titled 'TTFT of a cold prompt'."""
    from sparkkit import verify
    runs = _runs()
    h = bench.headline(runs)
    assert (h["ttft_s"], h["cold_ttft_s"], h["cold_depth"]) == (0.05, 1.25, 1000)
    _, text, results = verify.record([], runs)
    assert "an agent turn's TTFT 0.050 s (context cached" in text and "cold TTFT 1.250 s at depth 1000" in text
    ax = bench.figure(runs).axes[2]
    assert ax.get_title() == "time to first token (s)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["agent turn (context cached)", "cold prompt (all new)"]
    h0 = bench.headline(_runs((0,)))
    assert h0["cold_ttft_s"] is None and "cold TTFT" not in verify.record([], _runs((0,)))[1]


def test_a_record_never_holds_nan(tmp_path):
    from sparkkit import verify
    runs = _runs((0,))          # one repeat: no ± sd, NaN in pandas
    runs.loc[runs["kind"] == "pp", "tok/s"] = math.inf
    v = records.finish("06-verify", *verify.record([], runs), tmp_path)
    text = v.record_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    saved = json.loads(text)["results"]
    assert saved["summary"][0]["± sd"] is None and saved["prefill_tps"] is None
