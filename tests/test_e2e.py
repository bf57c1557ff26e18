"""End to end on real parts: the embedded llama.cpp serves, 06's probes pass, and the real
Claude Code CLI completes a tool-use turn (Read) through it."""
import json

import pytest

from claude_turn import read_turn
from sparkkit import bench, claude, records, serve, verify
from sparkkit.download import place_embedded
from sparkkit.engines.launch import Launch
from sparkkit.tinymodel import REPLY_TEXT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARKKIT_HOME", str(home))
        model = place_embedded(home / "models").path
        launch = Launch(model=model, alias="gpt-oss-120b", context=131072, port=serve.free_port(), threads=2)
        started = serve.start(launch, {"kind": "embedded"})
        yield started, launch, home
        serve.stop()


def test_agent_probes_pass_against_the_real_server(server):
    started, _launch, _home = server
    with verify.client(started.base_url) as c:
        probes = verify.verify(c, records.probe_file())
    assert [p.name for p in probes if not p.ok] == [], verify.table(probes).to_string()


def test_bench_reads_the_engines_own_timings_at_depth(server):
    started, _launch, _home = server
    with verify.client(started.base_url) as c:
        runs = bench.measure(c, verify.served_model(c), pp_tokens=256, tg_tokens=16, depths=[0, 1024], repeats=1,
                             progress=False)
    assert set(runs["source"]) == {"engine timings"}
    tg, pp = runs[runs["kind"] == "tg"], runs[runs["kind"] == "pp"]
    assert (tg["generated"] == 16).all() and (tg["tok/s"] > 0).all()   # ignore_eos: exactly tg_tokens
    assert pp["new prompt tokens"].between(0.8 * 256, 1.3 * 256).all()   # only the new tokens were processed
    deep = runs[(runs["depth"] == 1024) & (runs["kind"] != "context")]
    assert (deep["cached"] >= 1024).all(), deep                        # the real cache held the context
    assert (runs["TTFT (s)"] > 0).all()


def test_claude_code_reads_a_file_through_the_server(server):
    started, launch, home = server
    probe = records.probe_file()
    written = claude.write_settings(claude.settings_path("sandbox"),
                                    claude.settings_env(started.base_url, launch.alias, launch.context))
    assert written.path.is_relative_to(home)          # never the user's ~/.claude
    read_turn(REPLY_TEXT, probe)


def test_the_launcher_wires_one_process_and_touches_no_settings_file(server, tmp_path):
    """`sparkkit claude …`: the real CLI reaches the local server with no settings file written or read."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    started, _launch, home = server
    probe = records.probe_file()
    owner = tmp_path / "owner"
    (owner / ".claude").mkdir(parents=True)
    before = sorted(p.name for p in (owner / ".claude").iterdir())
    env = {**os.environ, "HOME": str(owner), "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1"}
    env.pop("ANTHROPIC_BASE_URL", None)
    out = subprocess.run([str(Path(sys.executable).parent / "sparkkit"), "claude", "-p",
                          f"Use the Read tool to read {probe} and tell me what it says.",
                          "--output-format", "stream-json", "--verbose"],
                         cwd=probe.parent, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    uses = [b for e in events if isinstance(e.get("message"), dict)
            for b in (e["message"].get("content") or []) if isinstance(b, dict) and b.get("type") == "tool_use"]
    assert [u["name"] for u in uses] == ["Read"]
    assert sorted(p.name for p in (owner / ".claude").iterdir() if p.name.startswith("settings")) == \
        [n for n in before if n.startswith("settings")] == []                          # nothing written there
    assert not list((home / "claude-launcher").glob("*.json"))                          # its 0600 file is gone
    assert not claude.settings_path("sandbox").is_relative_to(owner)


def test_07_s_launcher_scope_proves_the_local_session_and_writes_no_file(server, tmp_path, monkeypatch):
    """07 with scope launcher (a GB10's default): the real CLI's Read turn as `sparkkit claude` runs it, and not
    one settings file written or changed — the record says so, for whom."""
    _started, _launch, home = server
    monkeypatch.setenv("HOME", str(tmp_path / "owner"))
    sandbox = claude.settings_path("sandbox")
    before = sandbox.read_bytes() if sandbox.exists() else None
    w = claude.run("launcher")
    assert w.settings is None and w.run.exit_code == 0, w.run.stderr_tail
    assert [t["name"] for t in w.run.tool_uses] == ["Read"] and w.run.result == REPLY_TEXT
    verdict, _headline, results = w.record()
    assert verdict == "pass" and results["scope"] == "launcher" and results["settings"] is None
    assert results["for_whom"].startswith("nothing was written")
    assert (sandbox.read_bytes() if sandbox.exists() else None) == before
    assert not (tmp_path / "owner").exists()                                            # the owner's home untouched
    assert not list((home / "claude-launcher").glob("*.json"))                          # its 0600 file is gone


def test_count_tokens_answers_so_claude_codes_context_shows_the_servers_count(server):
    started, _launch, _home = server
    with verify.client(started.base_url) as c:
        ok, detail = verify.count_tokens(c, verify.served_model(c))
    assert ok and "input_tokens=" in detail


class _Cloud:
    """Anthropic's cloud as the owner's other sessions reach it: records each request, answers 401 (so the
    CLI stops at once instead of retrying), never a model."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        seen = self.paths = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self):
                seen.append(self.path)
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                body = json.dumps({"type": "error", "error": {"type": "authentication_error",
                                                              "message": "invalid x-api-key"}}).encode()
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def _prompt_tokens(base_url):
    import httpx
    text = httpx.get(f"{base_url}/metrics").text
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("llamacpp:prompt_tokens_total")))


def test_project_scope_sends_only_that_projects_sessions_to_the_local_server(server, tmp_path, monkeypatch):
    from sparkkit import wiring
    started, _launch, _home = server
    user_home, project, elsewhere = tmp_path / "home", tmp_path / "project", tmp_path / "elsewhere"
    for d in (user_home, project, elsewhere):
        d.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    cloud = _Cloud()
    user_settings = user_home / ".claude" / "settings.json"      # the owner's own: another endpoint, a key
    user_settings.parent.mkdir()
    user_settings.write_text(json.dumps({"env": {"ANTHROPIC_BASE_URL": cloud.url, "ANTHROPIC_API_KEY": "sk-owner"},
                                         "theme": "dark"}, indent=1))
    before_user = user_settings.read_bytes()
    wiring_ = claude.run(scope="project", project_dir=str(project))
    assert wiring_.settings.path == project / ".claude" / "settings.local.json"
    assert wiring_.run.exit_code == 0 and [t["name"] for t in wiring_.run.tool_uses] == ["Read"]
    assert user_settings.read_bytes() == before_user and not cloud.paths      # the project's session went local
    local_before = _prompt_tokens(started.base_url)
    other = claude.ask(claude.ensure_cli(), "Say hi.", user_home, elsewhere, timeout=300)
    assert any(p.startswith("/v1/messages") for p in cloud.paths)                  # elsewhere: the owner's endpoint
    assert _prompt_tokens(started.base_url) == local_before and other.exit_code != 0
    rows = {r["scope"]: r for r in wiring.wired()}
    assert rows[f"project {project}"]["points at"] == started.base_url
    assert rows["user"]["points at"] == cloud.url and rows["user"]["wired by sparkkit"] == "no"
    assert "removed" in wiring.unwire("project", str(project))                     # none was there before
    assert not (project / ".claude" / "settings.local.json").exists() and user_settings.read_bytes() == before_user
    cloud.httpd.shutdown()
