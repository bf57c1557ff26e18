"""The guide's coding alternative end to end, on real parts: `sparkkit use embedded-qwen3-coder` runs 01–07 for
the tiny Qwen3-Coder (a real llama.cpp serves it; 07's real Claude Code CLI does a Read turn through its XML
tool calls), a second `use` of the same model only re-wires (07), and `use cloud` undoes the wiring."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


def sparkkit(env, *args, timeout=1200):
    return subprocess.run([str(Path(sys.executable).parent / "sparkkit"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_use_serves_verifies_and_wires_qwen3_coder_then_switches_back(tmp_path):
    env = {**os.environ, "SPARKKIT_HOME": str(tmp_path / "home"), "HOME": str(tmp_path / "owner"),
           "SPARKKIT_CLAUDE_DIR": os.environ.get("SPARKKIT_CLAUDE_DIR") or str(ROOT / ".sparkkit" / "claude-code")}
    (tmp_path / "owner").mkdir()
    try:
        first = sparkkit(env, "use", "embedded-qwen3-coder", "--scope", "sandbox", "--run-dir", str(tmp_path / "r1"))
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        assert first.stdout.startswith("no sparkkit server answers")
        records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "r1").glob("0*.json")}
        assert sorted(records) == ["01-preflight", "02-plan", "03-place-model", "04-engine", "05-serve", "06-verify",
                                   "07-wire-claude"]
        assert all(r["verdict"] in ("pass", "warn") for r in records.values()), {k: r["headline"] for k, r in records.items()}
        smoke = next(p for p in records["06-verify"]["results"]["probes"] if p["name"].startswith("the guide's smoke"))
        assert smoke["ok"] and "fibonacci()" in smoke["detail"]
        wired = records["07-wire-claude"]["headline"]
        assert "tools used: Read" in wired and "tiny-qwen3-coder speaking" in wired, wired
        state = json.loads((tmp_path / "home" / "state.json").read_text())
        assert state["server"]["launch"]["alias"] == "tiny-qwen3-coder"

        again = sparkkit(env, "use", "embedded-qwen3-coder", "--run-dir", str(tmp_path / "r2"))
        assert again.returncode == 0, again.stdout[-4000:]
        assert "served already" in again.stdout
        assert sorted(p.stem for p in (tmp_path / "r2").glob("0*.json")) == ["07-wire-claude"]   # only re-wired

        back = sparkkit(env, "use", "cloud")
        assert back.returncode == 0 and "there was none before sparkkit wired" in back.stdout, back.stdout
        assert not list((tmp_path / "home" / "claude-wiring").glob("*.json"))       # nothing left wired
    finally:
        sparkkit(env, "stop", timeout=120)
