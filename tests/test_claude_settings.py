"""07's settings writer: merge, back up, never clobber."""
import json

import pytest

from sparkkit import claude
from sparkkit.errors import SparkkitError


def env():
    return claude.settings_env("http://127.0.0.1:8080", "gpt-oss-120b", 131072, None)


def test_env_block_points_every_tier_at_the_served_model():
    e = env()
    assert e["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8080"          # no /v1: the CLI appends it
    for tier in ("OPUS", "SONNET", "HAIKU"):
        assert e[f"ANTHROPIC_DEFAULT_{tier}_MODEL"] == "gpt-oss-120b"
    assert e["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    assert e["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "131072"
    assert claude.settings_env("u", "m", 1, "sk-9")["ANTHROPIC_AUTH_TOKEN"] == "sk-9"


def test_new_file_is_created(tmp_path):
    w = claude.write_settings(tmp_path / ".claude" / "settings.json", env())
    assert w.backup is None and "ANTHROPIC_BASE_URL" in w.added
    assert json.loads(w.path.read_text())["env"] == env()


def test_existing_settings_are_merged_after_a_backup(tmp_path):
    path = tmp_path / "settings.json"
    original = {"permissions": {"allow": ["Bash(ls)"]},
                "env": {"ANTHROPIC_BASE_URL": "https://old.example", "MY_VAR": "keep me"}}
    path.write_text(json.dumps(original))
    w = claude.write_settings(path, env())
    merged = json.loads(path.read_text())
    assert merged["permissions"] == original["permissions"]
    assert merged["env"]["MY_VAR"] == "keep me" and merged["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert json.loads(w.backup.read_text()) == original
    assert w.changed == ["ANTHROPIC_BASE_URL"] and w.kept == ["MY_VAR"]
    w2 = claude.write_settings(path, env())          # a second run keeps the first backup too
    assert w2.backup != w.backup and w.backup.exists() and w2.changed == []


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", '{"env": "not an object"}'])
def test_unusable_settings_file_is_left_untouched(tmp_path, content):
    path = tmp_path / "settings.json"
    path.write_text(content)
    with pytest.raises(SparkkitError, match="will not overwrite|fix or move"):
        claude.write_settings(path, env())
    assert path.read_text() == content and list(tmp_path.iterdir()) == [path]
