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


def test_a_symlinked_settings_file_is_written_through_keeping_its_mode(tmp_path):
    import os
    import stat
    real = tmp_path / "dotfiles" / "claude-settings.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"env": {"MY_VAR": "x"}}))
    os.chmod(real, 0o640)
    link = tmp_path / ".claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    w = claude.write_settings(link, env())
    assert link.is_symlink() and os.readlink(link) == str(real)             # still the owner's link
    assert json.loads(real.read_text())["env"]["MY_VAR"] == "x"
    assert w.backup.parent == real.parent                                    # the backup beside the target
    assert stat.S_IMODE(real.stat().st_mode) == 0o640 and stat.S_IMODE(w.backup.stat().st_mode) == 0o600
    keyed = claude.write_settings(link, claude.settings_env("http://h:1", "m", 1, "sk-secret"))
    assert stat.S_IMODE(real.stat().st_mode) == 0o600                        # it holds a key now: private
    assert stat.S_IMODE(keyed.backup.stat().st_mode) == 0o600
    assert not [p for p in real.parent.iterdir() if p.name.endswith(".partial")]


def test_a_new_settings_file_is_private(tmp_path):
    import os
    import stat
    w = claude.write_settings(tmp_path / ".claude" / "settings.json", env())
    assert stat.S_IMODE(os.stat(w.path).st_mode) == 0o600


def test_a_read_only_settings_file_is_refused_not_overwritten(tmp_path):
    import os
    path = tmp_path / "settings.json"
    path.write_text('{"env": {}}')
    os.chmod(path, 0o444)
    with pytest.raises(SparkkitError, match="read-only: sparkkit will not overwrite it"):
        claude.write_settings(path, env())
    assert path.read_text() == '{"env": {}}' and sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_a_file_that_cannot_be_replaced_leaves_no_partial(tmp_path, monkeypatch):
    """As on an immutable (chattr +i) file: the rename fails; the file and its folder stay as they were."""
    import os
    path = tmp_path / "settings.json"
    path.write_text('{"env": {}}')

    def refuse(src, dst):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(SparkkitError, match="it is unchanged"):
        claude.write_settings(path, claude.settings_env("http://h:1", "m", 1, "sk-secret"))
    monkeypatch.undo()
    assert path.read_text() == '{"env": {}}'
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]


def test_the_env_table_hides_the_token_and_shows_the_context_numbers():
    from pathlib import Path
    w = claude.Wiring(claude.SettingsWrite(Path("/x"), None, [], [], []),
                      claude.settings_env("http://127.0.0.1:8080", "gpt-oss-120b", 131072, "sk-secret"), None, None,
                      None, "p")
    shown = dict(zip(w.env_table()["variable"], w.env_table()["value"]))
    assert shown["ANTHROPIC_AUTH_TOKEN"] == "***" and "sk-secret" not in str(shown)
    assert shown["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "131072" and shown["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "131072"
    assert shown["CLAUDE_CODE_MAX_RETRIES"] == str(claude.MAX_RETRIES)


def test_the_first_request_is_counted_in_the_served_models_tokens(tmp_path, monkeypatch):
    """gpt-oss's tokenizer: 13,822 (a 32k context holds it); sparkkit's generated models: ~37.7k of their own."""
    import pytest
    from sparkkit import records
    from sparkkit.errors import SparkkitError
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path))
    launch = {"model": str(tmp_path / "m.gguf"), "context": 32768, "slots": 4, "kv_unified": True}
    claude.check_context(launch)                                        # a real gpt-oss: fits
    records.update_state("model", {"model": "embedded", "path": launch["model"],
                                   "source": "generated (scripted tiny gpt-oss)"})
    with pytest.raises(SparkkitError, match=r"first request alone is 37,700 tokens: re-run 02-plan with -p context 65536"):
        claude.check_context(launch)
    claude.check_context({**launch, "model": str(tmp_path / "other.gguf")})   # another file than 03's: gpt-oss's count


def _fake_cli(tmp_path, body: str):
    cli = tmp_path / "claude"
    cli.write_text("#!/bin/sh\n" + body + "\n")
    cli.chmod(0o755)
    return cli


def test_ask_reports_each_tool_call_and_the_answer_while_the_cli_runs(tmp_path):
    """A transcript the real CLI 2.1.332 wrote (tests/replay/claude-stream-read.jsonl: `claude -p … --output-format
    stream-json --verbose` reading sparkkit's probe through the embedded llama.cpp), played back line by line."""
    from pathlib import Path
    recorded = Path(__file__).parent / "replay" / "claude-stream-read.jsonl"
    lines: list[str] = []
    run = claude.ask(_fake_cli(tmp_path, f"cat {recorded}"), "p", tmp_path, tmp_path, progress=lines.append)
    assert run.exit_code == 0 and run.turns == 2 and run.result == "Hello! This is tiny-gpt-oss speaking."
    assert [t["name"] for t in run.tool_uses] == ["Read"] and not run.tool_results[0]["is_error"]
    assert [line.split("] ", 1)[1].split("(")[0].split(":")[0] for line in lines] == [
        "Claude Code calls Read", "tool result", "answer after 2 turn"]


def test_ask_stops_a_cli_that_runs_past_its_timeout_in_one_sentence(tmp_path):
    import pytest
    from sparkkit.errors import SparkkitError
    with pytest.raises(SparkkitError, match=r"did not finish within 1 s; is the server answering"):
        claude.ask(_fake_cli(tmp_path, "exec sleep 30"), "p", tmp_path, tmp_path, timeout=1)
