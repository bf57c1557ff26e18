import json
import os
import stat

import pytest

from sparkkit import records


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARKKIT_RUNS", str(tmp_path / "runs"))
    return tmp_path


def test_state_sections_are_written_private_and_replaceable():
    records.update_state("server", {"pid": 1})
    records.update_state("plan", {"context": 4096})
    records.update_state("server", None)
    state = records.load_state()
    assert state == {"schema": records.STATE_SCHEMA, "plan": {"context": 4096}}
    assert stat.S_IMODE(os.stat(records.state_path()).st_mode) == 0o600


def test_run_dir_is_remembered_and_an_explicit_one_wins(tmp_path):
    first = records.run_dir()
    assert first.parent == tmp_path / "runs" and records.run_dir() == first
    explicit = records.run_dir(str(tmp_path / "mine"))
    assert explicit == (tmp_path / "mine").resolve() and records.run_dir() == explicit


def wired(env, bridge=None):
    """07's results as claude.Wiring.record() writes them (the CLI not run)."""
    return {"settings": "/h/.claude/settings.json", "backup": "", "added": sorted(env), "changed": [], "kept": [],
            "env": env, "cli_version": "2.1.332", "prompt": "", "cli": None, "notes": [], "bridge": bridge}


def test_finish_writes_a_redacted_record_and_raises_on_fail(tmp_path):
    run = records.run_dir()
    env = {"ANTHROPIC_AUTH_TOKEN": "sk-9", "DGX_SERIAL_NUMBER": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080",
           "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "131072"}
    v = records.finish("07-wire-claude", "pass", "ok", wired(env, {"api_key": "sk-123", "nested": {"HF_TOKEN": "hf_x"},
                                                                   "prompt tokens": 512, "bytes_per_token": 9}), run)
    data = json.loads(v.record_path.read_text())
    assert data["schema"] == "sparkkit.record/1" and data["verdict"] == "pass"
    assert data["results_schema"] == "sparkkit.results/1"
    assert data["results"]["env"] == {"ANTHROPIC_AUTH_TOKEN": "***", "DGX_SERIAL_NUMBER": "***",
                                      "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080",
                                      "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "131072"}
    assert data["results"]["bridge"] == {"api_key": "***", "nested": {"HF_TOKEN": "***"}, "prompt tokens": 512,
                                         "bytes_per_token": 9}     # a rate per token is no secret
    assert "sk-123" not in v.record_path.read_text() and "sk-9" not in v.record_path.read_text()
    with pytest.raises(records.StepFailed, match="05-serve: FAIL"):
        records.finish("05-serve", "fail", "broken", {"error": "the port is taken"}, run)
    assert json.loads((run / "05-serve.json").read_text())["verdict"] == "fail"


def test_a_rate_per_token_is_no_secret():
    """02's record carried the architecture's active_bytes_per_token as "***" (a key ending in _token)."""
    assert not any(records.is_secret(k) for k in ("active_bytes_per_token", "bytes per token", "per_token",
                                                  "prompt tokens", "completion_tokens"))
    assert all(records.is_secret(k) for k in ("HF_TOKEN", "ANTHROPIC_AUTH_TOKEN", "token", "api_key", "paper_token"))
    assert records.redact({"arch": {"active_bytes_per_token": 3.5e9}}) == {"arch": {"active_bytes_per_token": 3.5e9}}


def test_corrupt_state_file_is_reported_not_overwritten():
    records.state_path().parent.mkdir(parents=True)
    records.state_path().write_text("{not json")
    with pytest.raises(records.SparkkitError, match="not readable JSON"):
        records.update_state("x", 1)
    assert records.state_path().read_text() == "{not json"


def test_rerunning_a_step_keeps_the_earlier_record():
    run = records.run_dir()
    records.finish("07-wire-claude", "pass", "first", wired({}), run)
    records.finish("07-wire-claude", "warn", "second", wired({}), run)
    records.finish("07-wire-claude", "pass", "third", wired({}), run)      # same second: nothing is lost either
    kept = sorted(p.name for p in run.glob("07-wire-claude*.json"))
    assert len(kept) == 3 and json.loads((run / "07-wire-claude.json").read_text())["headline"] == "third"
    older = {json.loads(p.read_text())["headline"] for p in run.glob("07-wire-claude.*.json")}
    assert older == {"first", "second"}


def test_two_processes_writing_state_at_once_lose_no_section(tmp_path):
    """03 and 04 run side by side under `sparkkit run`: each writes its own section, many times."""
    import subprocess
    import sys
    code = ("import sys; from sparkkit import records\n"
            "for i in range(150): records.update_state(sys.argv[1], {'i': i})\n")
    env = {**os.environ, "SPARKKIT_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-c", code, name], env=env, stderr=subprocess.PIPE)
             for name in ("model", "engine", "plan")]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    state = records.load_state()
    assert {k: state[k] for k in ("model", "engine", "plan")} == {k: {"i": 149} for k in ("model", "engine", "plan")}
    leftovers = [p.name for p in records.state_path().parent.iterdir() if p.name.endswith(".partial")]
    assert leftovers == [] and stat.S_IMODE(os.stat(records.state_path()).st_mode) == 0o600
