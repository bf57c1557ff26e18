"""The owner's choices: `sparkkit run` takes them from the runbooks' parameters cells, refuses bad ones
before anything starts, hands them to the runbooks; `make stop` and `sparkkit stop` find one server."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sparkkit import choices
from sparkkit.runner import runbooks
from sparkkit.serve import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_every_choice_is_a_typed_commented_parameter_of_its_runbook():
    found = choices.parameters(ROOT / "runbooks")
    assert set(found) == set(choices.OWNER_CHOICES)
    assert (found["port"].type, found["port"].default, found["port"].runbook) == ("int", 0, "05-serve")
    assert (found["context"].type, found["context"].default) == ("int", 131072)
    assert all(p.help for p in found.values())
    # each runbook a choice is handed to declares it: nothing is injected that a runbook would not read
    cells = {nb.stem: choices.read_parameters(nb) for nb in runbooks(ROOT / "runbooks")}
    for name, (_home, to, _check) in choices.OWNER_CHOICES.items():
        for stem in to:
            assert name in cells[stem], (name, stem)


def test_the_cli_help_is_the_parameters_cell():
    out = subprocess.run([BIN / "sparkkit", "run", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(out.stdout.split())
    cell = choices.read_parameters(ROOT / "runbooks" / "05-serve.ipynb")["port"]
    assert out.returncode == 0 and "--port INT" in text and " ".join(cell.help.split()) in text


@pytest.mark.parametrize("argv, sentence", [
    (["--port", "70000"], "parameter `port`: got 70000; accepted: 0 (the engine's default port) or an integer from 1 to 65535"),
    (["--port", "eighty"], "parameter `port`: got 'eighty'; accepted: an integer"),
    (["--engine", "tgi"], "parameter `engine`: got 'tgi'"),
    (["--model", "gpt-oss-7b"], "parameter `model`: got 'gpt-oss-7b'; accepted: auto, embedded"),
    (["--context", "100"], "parameter `context`: got 100"),
    (["--host", "0.0.0.0"], "parameter `host`: got '0.0.0.0'"),
    (["--api-key-file", "/nonexistent/key"], "parameter `api_key_file`"),
])
def test_a_bad_choice_is_one_sentence_and_nothing_starts(tmp_path, argv, sentence):
    env = {**os.environ, "SPARKKIT_HOME": str(tmp_path / "home"), "SPARKKIT_RUNS": str(tmp_path / "runs")}
    out = subprocess.run([BIN / "sparkkit", "run", *argv], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and sentence in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "home").exists() and not (tmp_path / "runs").exists()   # nothing started


def test_choices_go_to_every_runbook_that_takes_them():
    given = choices.per_runbook({"engine": "llamacpp", "port": 9000, "model_dir": "/m"})
    assert given == {"01-preflight": {"engine": "llamacpp", "model_dir": "/m"}, "02-plan": {"engine": "llamacpp"},
                     "03-place-model": {"engine": "llamacpp", "model_dir": "/m"}, "04-engine": {"engine": "llamacpp"},
                     "05-serve": {"engine": "llamacpp", "port": 9000}, "06-verify": {"engine": "llamacpp"},
                     "07-wire-claude": {"engine": "llamacpp"}}


@pytest.mark.e2e
def test_sparkkit_run_takes_the_owners_choices_end_to_end(tmp_path):
    """The owner's one command, with choices, on the embedded default: every runbook, 03 beside 04,
    progress streamed with its step, the choices in the records."""
    port = free_port()
    env = {**os.environ, "SPARKKIT_HOME": str(tmp_path / "home"), "SPARKKIT_RUNS": str(tmp_path / "runs")}
    out = subprocess.run([BIN / "sparkkit", "run", "--port", str(port), "--context", "65536",
                          "--model-dir", str(tmp_path / "weights"), "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "▶ 03-place-model ∥ 04-engine … (side by side)" in out.stdout
    assert "  06 │ [1/" in out.stdout                                  # 06's progress, as it happened
    rec = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run").glob("0*.json")}
    assert {s: r["verdict"] for s, r in rec.items()} == {nb.stem: "pass" for nb in runbooks(ROOT / "runbooks")}
    assert rec["02-plan"]["results"]["context"] == 65536
    assert rec["03-place-model"]["results"]["path"].startswith(str(tmp_path / "weights"))
    assert rec["05-serve"]["results"]["url"] == f"http://127.0.0.1:{port}"
    assert "stopped the sparkkit server" in out.stdout                  # embedded default: not left running
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    summary = out.stdout[re.search(r"^step +verdict", out.stdout, re.M).start():]
    assert "…" not in summary                                          # whole cells in the summary


def test_make_stop_and_sparkkit_stop_in_a_plain_shell_find_the_same_server(tmp_path):
    """No SPARKKIT_HOME anywhere: the server a runbook started is the one `make stop` stops."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPARKKIT_HOME", "SPARKKIT_RUNS", "MAKEFLAGS")}
    env["HOME"] = str(tmp_path)
    port = free_port()
    start = ("from sparkkit import serve\nfrom sparkkit.download import place_embedded\n"
             "from sparkkit.engines.launch import Launch\nfrom sparkkit.records import home\n"
             f"m = place_embedded(home() / 'models').path\n"
             f"serve.start(Launch(model=m, alias='tiny', context=4096, port={port}, threads=1), {{'kind': 'embedded'}})\n")
    out = subprocess.run([sys.executable, "-c", start], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / ".sparkkit" / "state.json").is_file()
    status = subprocess.run([BIN / "sparkkit", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["running"] is True
    out = subprocess.run(["make", "-s", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "stopped the sparkkit server" in out.stdout, out.stdout + out.stderr
    status = subprocess.run([BIN / "sparkkit", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["running"] is False
