"""`sparkkit unwire` restores exactly what was there; `sparkkit wired` says where Claude Code points."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sparkkit import claude, wiring

ENV = claude.settings_env("http://127.0.0.1:8080", "gpt-oss-120b", 131072, None)


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "owner"))
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "sk"))
    (tmp_path / "owner" / ".claude").mkdir(parents=True)
    return tmp_path / "owner"


def test_unwire_gives_back_the_file_byte_for_byte_with_its_mode(user_home):
    path = user_home / ".claude" / "settings.json"
    original = b'{\n  "permissions": {"allow": ["Bash(ls)"]},\n  "env": {"ANTHROPIC_MODEL": "claude-opus", "X": "1"}\n}\n'
    path.write_bytes(original)
    os.chmod(path, 0o640)
    claude.write_settings(path, ENV)
    claude.write_settings(path, {**ENV, "ANTHROPIC_MODEL": "gpt-oss-20b"})        # 07 re-run, another model
    assert json.loads(path.read_text())["env"]["ANTHROPIC_MODEL"] == "gpt-oss-20b"
    assert "restored" in wiring.unwire("user")
    assert path.read_bytes() == original and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "nothing to undo" in wiring.unwire("user")                               # twice: one sentence


def test_unwire_removes_a_file_that_was_not_there(user_home):
    path = user_home / ".claude" / "settings.json"
    claude.write_settings(path, ENV)
    assert wiring.unwire("user").startswith("removed") and not path.exists()


def test_a_file_edited_since_keeps_the_owners_edits(user_home):
    path = user_home / ".claude" / "settings.json"
    path.write_text(json.dumps({"env": {"ANTHROPIC_MODEL": "claude-opus"}}))
    claude.write_settings(path, ENV)
    data = json.loads(path.read_text())
    data["theme"] = "dark"                                                          # the owner, by hand
    path.write_text(json.dumps(data))
    assert "changed by hand" in wiring.unwire("user")
    assert json.loads(path.read_text()) == {"env": {"ANTHROPIC_MODEL": "claude-opus"}, "theme": "dark"}


def test_the_wiring_record_is_private_and_the_cli_verbs_speak_in_sentences(user_home, tmp_path):
    path = user_home / ".claude" / "settings.json"
    path.write_text('{"env": {}}')
    claude.write_settings(path, claude.settings_env("http://127.0.0.1:9", "gpt-oss-120b", 131072, "sk-key"))
    recs = list((tmp_path / "sk" / "claude-wiring").glob("*.json"))
    assert len(recs) == 1 and stat.S_IMODE(recs[0].stat().st_mode) == 0o600
    bin_ = Path(sys.executable).parent / "sparkkit"
    env = {**os.environ}
    out = subprocess.run([str(bin_), "wired"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "http://127.0.0.1:9" in out.stdout and "gpt-oss-120b" in out.stdout
    out = subprocess.run([str(bin_), "unwire"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "restored" in out.stdout and path.read_text() == '{"env": {}}'
    out = subprocess.run([str(bin_), "unwire", "sandbox"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "nothing to undo" in out.stdout


def sparkkit(*args, timeout=60):
    return subprocess.run([str(Path(sys.executable).parent / "sparkkit"), *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=timeout)


def test_use_cloud_undoes_every_place_sparkkit_wired_byte_for_byte(user_home, tmp_path):
    user = user_home / ".claude" / "settings.json"
    mine = b'{"env": {"ANTHROPIC_MODEL": "claude-opus"}, "model": "opus"}\n'
    user.write_bytes(mine)
    os.chmod(user, 0o640)
    project = tmp_path / "proj"
    project.mkdir()
    claude.write_settings(user, ENV)
    claude.write_settings(claude.settings_path("project", str(project)), ENV)
    assert {s for s, _, _ in wiring.wired_places()} == {"user", "project"}
    out = sparkkit("use", "cloud")
    assert out.returncode == 0, out.stderr
    assert "byte for byte" in out.stdout and "there was none before" in out.stdout
    assert user.read_bytes() == mine and stat.S_IMODE(user.stat().st_mode) == 0o640
    assert not (project / ".claude" / "settings.local.json").exists() and wiring.wired_places() == []
    out = sparkkit("use", "cloud")
    assert out.returncode == 0 and "wired Claude Code nowhere" in out.stdout


def test_use_a_model_wires_only_when_it_is_served_already_else_runs_the_chain(user_home, tmp_path, monkeypatch):
    """The decision `sparkkit use MODEL` makes, against a live HTTP server standing in for 05's (any /health 200)."""
    import http.server
    import threading
    from sparkkit import records

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        records.update_state("model", {"model": "gpt-oss-20b", "path": "/m.gguf", "alias": "gpt-oss-20b"})
        records.update_state("server", {"engine": "llamacpp", "base_url": url, "pid": 1})
        project = tmp_path / "proj"
        project.mkdir()
        claude.write_settings(claude.settings_path("project", str(project)), ENV)   # the one place wired now
        only, chosen, why = wiring.switch_plan("gpt-oss-20b")
        assert only == ("07-wire-claude",) and chosen == {"scope": "project", "project_dir": str(project)}
        assert "served already" in why
        only, chosen, why = wiring.switch_plan("gpt-oss-120b", scope="user")
        assert only == () and chosen == {"model": "gpt-oss-120b", "scope": "user"} and "serves gpt-oss-20b" in why
    finally:
        srv.shutdown()
    only, _, why = wiring.switch_plan("gpt-oss-20b")       # the server is gone: the whole chain again
    assert only == () and why.startswith("no sparkkit server answers")
    with pytest.raises(ValueError, match="`scope`"):
        wiring.switch_plan("gpt-oss-20b", scope="everywhere")
    out = sparkkit("use", "gpt-oss-999b")
    assert out.returncode == 2 and "`MODEL`" in out.stderr and "cloud or one of" in out.stderr
