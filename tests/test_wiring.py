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
