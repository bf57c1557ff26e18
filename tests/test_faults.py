"""Faults and bad input on the owner's path: one sentence naming the step or parameter, never a traceback
from deep inside, nothing lost. (Issue 11's fault suite grows here.)"""
import json

import pytest

from sparkkit import records, serve
from sparkkit.engines.launch import Launch
from sparkkit.errors import SparkkitError, StateError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPARKKIT_RUNS", str(tmp_path / "runs"))
    return tmp_path / "home"


def _state(home, **sections):
    home.mkdir(parents=True, exist_ok=True)
    (home / "state.json").write_text(json.dumps({"schema": records.STATE_SCHEMA, **sections}))


@pytest.mark.parametrize("sections, sentence", [
    ({"model": {"model": "embedded", "path": "{model}", "alias": "tiny"}, "plan": {"for_model": "embedded"},
      "engine": {"runtime": {"kind": "embedded"}}},
     "state.json's `plan` section lacks `context`, `slots`, `kv_type`, `ubatch`, `verdict` (written by an older or "
     "interrupted 02-plan): re-run 02-plan"),
    ({"model": {"model": "embedded", "path": "{model}", "alias": "tiny"},
      "plan": {"for_model": "embedded", "context": 4096, "slots": 1, "kv_type": "f16", "ubatch": 512,
               "verdict": "fits"}, "engine": {"engine": "llamacpp"}},
     "state.json's `engine` section lacks `runtime` (written by an older or interrupted 04-engine): re-run 04-engine"),
    ({"model": {"path": "{model}"}},
     "state.json's `model` section lacks `model`, `alias` (written by an older or interrupted 03-place-model)"),
])
def test_05_on_partial_state_names_the_step_to_run(home, tmp_path, sections, sentence):
    from sparkkit.download import place_embedded
    model = place_embedded(tmp_path / "m").path                        # a whole model: only the state is partial
    text = json.dumps(sections).replace("{model}", str(model))
    _state(home, **json.loads(text))
    with pytest.raises(StateError) as e:
        serve.run()
    assert str(e.value) == sentence or str(e.value).startswith(sentence)


def test_03_and_04_on_partial_state_name_the_step(home):
    from sparkkit import download
    from sparkkit.engines import llamacpp
    _state(home, choice={"engine": "llamacpp"}, host={"checks": []})
    with pytest.raises(StateError, match="`choice` section lacks `model`.*re-run 01-preflight"):
        download.run()
    with pytest.raises(StateError, match="`host` section lacks `target`.*re-run 01-preflight"):
        llamacpp.run()


def test_ipv6_loopback_is_a_url_not_an_invalid_url():
    assert Launch(model="m", host="::1", port=8080).base_url == "http://[::1]:8080"
    assert Launch(model="m", host="127.0.0.1", port=8080).base_url == "http://127.0.0.1:8080"


def test_corrupt_state_is_one_sentence_for_every_cli_verb(home, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    _state(home)
    (home / "state.json").write_text("{half a file")
    env = {"SPARKKIT_HOME": str(home), "PATH": "/usr/bin:/bin"}
    for verb in ("status", "stop"):
        out = subprocess.run([str(Path(sys.executable).parent / "sparkkit"), verb], capture_output=True, text=True,
                             env=env, timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert (home / "state.json").read_text() == "{half a file"          # nothing overwritten
    assert issubclass(StateError, SparkkitError)


def test_06_with_a_dead_or_malformed_base_url_is_one_sentence(home):
    from sparkkit import verify
    from sparkkit.errors import ParameterError
    port = serve.free_port()                                  # nothing listens there
    with pytest.raises(ParameterError, match=rf"parameter `base_url`: got 'http://127.0.0.1:{port}'; accepted: a "
                                             r"server that answers — nothing answers there \(ConnectError\)"):
        verify.run(f"http://127.0.0.1:{port}")
    with pytest.raises(ParameterError, match="parameter `base_url`: got 'localhost-8080'; accepted: a URL such as"):
        verify.run("localhost-8080")


def test_06_and_07_without_a_server_say_what_each_accepts(home):
    from sparkkit import claude, verify
    with pytest.raises(StateError, match=r"run 05-serve first \(or pass -p base_url\)"):
        verify.run()
    with pytest.raises(StateError) as e:
        claude.run("sandbox", "", False, "")
    assert str(e.value) == "no sparkkit server is running: run 05-serve first"   # 07 has no base_url to offer


def test_05_refuses_a_cut_or_foreign_gguf_before_anything_starts(home, tmp_path):
    from sparkkit.download import place_embedded
    from sparkkit.errors import ServeError
    good = place_embedded(tmp_path / "m").path
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(open(good, "rb").read()[: -4096])                 # a copy that stopped early
    _state(home, model={"model": "embedded", "path": str(cut), "alias": "tiny-gpt-oss"})
    with pytest.raises(ServeError, match=r"will not serve .*cut.gguf: .*tensors need .* bytes but the file holds"):
        serve.run()
    _state(home, model={"model": "gpt-oss-120b", "path": good, "alias": "gpt-oss-120b"})
    # the tiny model is gpt-oss too: the architecture matches; a foreign one would not
    from sparkkit import model as model_mod
    import sparkkit.serve as s
    orig = model_mod.from_gguf
    try:
        model_mod.from_gguf = lambda p: type("A", (), {"arch": "qwen3moe"})()
        with pytest.raises(ServeError, match="it is a qwen3moe model, but 03 placed gpt-oss-120b"):
            s.check_served_model({"model": "gpt-oss-120b", "path": good})
    finally:
        model_mod.from_gguf = orig
    assert "server" not in json.loads((home / "state.json").read_text())


def test_07_refuses_a_context_claude_code_cannot_fit_in_one_sentence(home, tmp_path):
    """Found with `sparkkit run --context 8192`: the CLI answered 'Prompt is too long' after the wiring."""
    from sparkkit import claude
    from sparkkit.download import place_embedded
    from sparkkit.errors import SparkkitError
    model = place_embedded(tmp_path / "m").path
    started = serve.start(Launch(model=model, alias="tiny", context=8192, port=serve.free_port(), threads=1),
                          {"kind": "embedded"})
    try:
        with pytest.raises(SparkkitError, match=r"context is 8192 tokens, but Claude Code .*first request alone is "
                                                r"13,822 tokens: re-run 02-plan with -p context 32768"):
            claude.run("sandbox", "", True, "")
        assert not claude.settings_path("sandbox").exists()          # nothing wired for a turn that cannot run
    finally:
        serve.stop()
    assert started.pid


def test_a_lan_key_is_in_no_file_sparkkit_wrote_but_its_0600_key_file(home, tmp_path):
    """05 run as an owner types it, with a key: grep every file sparkkit wrote (state, records, the executed
    notebook, logs, launch specs) for the key."""
    import os
    import stat
    import subprocess
    import sys
    from pathlib import Path
    secret = "sk-lan-9f3c1e0d7b"
    key = tmp_path / "owner-key"
    key.write_text(secret + "\n")
    key.chmod(0o600)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SPARKKIT_HOME": str(home), "SPARKKIT_RUNS": str(tmp_path / "runs")}
    pm = Path(sys.executable).parent / "papermill"
    out = subprocess.run([str(pm), "runbooks/03-place-model.ipynb", str(tmp_path / "03.ipynb")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    port = serve.free_port()
    out = subprocess.run([str(pm), "runbooks/05-serve.ipynb", str(tmp_path / "05.ipynb"), "-p", "port", str(port),
                          "-p", "api_key_file", str(key)], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    try:
        assert out.returncode == 0, out.stderr[-2000:]
        import httpx
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401          # the key is in force
        holders = sorted({p for p in tmp_path.rglob("*")                   # home and runs lie below tmp_path
                          if p.is_file() and p != key and secret.encode() in p.read_bytes()})
        assert [p.relative_to(home) for p in holders if p.is_relative_to(home)] == [Path("server/api-key")]
        assert all(p.is_relative_to(home) for p in holders), holders
        assert stat.S_IMODE((home / "server" / "api-key").stat().st_mode) == 0o600
    finally:
        serve.stop()                                     # the fixture's SPARKKIT_HOME is this run's home


def test_the_launcher_without_a_server_is_one_sentence(home, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    out = subprocess.run([str(Path(sys.executable).parent / "sparkkit"), "claude", "-p", "hi"], capture_output=True,
                         text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=60)
    assert out.returncode == 2 and out.stderr.strip() == \
        "sparkkit claude: no sparkkit server is running: run 05-serve first"
    assert not (tmp_path / ".claude").exists()
