"""The GPU stand-in run (tools/gpu_standin): its parsers and comparisons, and the bad-input paths of
04 (a build that fails) and 05 (a model the card cannot hold), which must leave a record saying
which step failed and why."""
import json
import os
import stat
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "gpu_standin"))
import decode_gap  # noqa: E402
import fakes  # noqa: E402
import standin  # noqa: E402

# What llama.cpp (0c1e57098) logs at -lv 4 for gpt-oss-120b, -c 32768 -ub 2048 (gpu-standin.md §4).
LOG = """\
load_tensors: offloaded 37/37 layers to GPU
load_tensors:        CUDA0 model buffer size = 59851.68 MiB
load_tensors:    CUDA_Host model buffer size =   586.82 MiB
llama_context:  CUDA_Host  output buffer size =     0.77 MiB
llama_kv_cache_iswa: creating non-SWA KV cache, size = 32768 cells
llama_kv_cache:      CUDA0 KV buffer size =  1152.00 MiB
llama_kv_cache: size = 1152.00 MiB ( 32768 cells,  18 layers,  1/1 seqs), K (f16):  576.00 MiB, V (f16):  576.00 MiB
llama_kv_cache_iswa: creating     SWA KV cache, size = 2304 cells
llama_kv_cache:      CUDA0 KV buffer size =    81.00 MiB
sched_reserve:      CUDA0 compute buffer size =   400.00 MiB
sched_reserve:      CUDA0 compute buffer size =   484.07 MiB
sched_reserve:  CUDA_Host compute buffer size =   182.08 MiB
"""
MIB = 2**20


def test_buffers_parse_into_plan_components():
    b = standin.parse_buffers(LOG)
    assert b == {"model CUDA0": 59851.68, "model CUDA_Host": 586.82, "output CUDA_Host": 0.77,
                 "kv full CUDA0": 1152.0, "kv swa CUDA0": 81.0, "compute CUDA0": 484.07, "compute CUDA_Host": 182.08}
    c = standin.logged_components(b)
    assert c["weights"] == pytest.approx(60438.5) and c["compute buffers"] == pytest.approx(666.15)
    assert c["host (pinned) buffers"] == pytest.approx(586.82 + 0.77 + 182.08)
    rows = standin.compare_plan([{"component": "weights", "bytes": int(60438.5 * MIB * 1.01)},
                                 {"component": "KV full attention", "bytes": 1152 * MIB},
                                 {"component": "compute buffers", "bytes": int(666.15 * MIB * 1.2)},
                                 {"component": "host prompt cache", "bytes": 8 << 30}], c)
    assert [(r["component"], r["within 5 %"]) for r in rows] == [
        ("weights", True), ("KV full attention", True), ("compute buffers", False)]
    assert rows[0]["plan − logged %"] == pytest.approx(1.0, abs=0.01)
    split = standin.compare_plan([{"component": "compute buffer (GPU)", "bytes": int(484.07 * MIB)},
                                  {"component": "compute buffer (host)", "bytes": int(182.08 * MIB)}], c)
    assert [r["component"] for r in split] == ["compute buffer (GPU)", "compute buffer (host)", "compute buffers"]
    assert all(r["within 5 %"] for r in split)


def test_flags_are_replaced_added_and_the_guide_line_is_made_runnable():
    argv = ["srv", "-m", "m", "-c", "131072", "--ubatch-size", "2048", "--port", "8080"]
    out = standin.replace_flag(standin.replace_flag(argv, "-ub", "512", ("--ubatch-size",)), "-lv", "4")
    assert out == ["srv", "-m", "m", "-c", "131072", "-ub", "512", "--port", "8080", "-lv", "4"]
    verbatim, runnable, change = standin.guide_argv("srv", "m.gguf", 9000, fakes.HELP)
    assert "--no-mmap" in verbatim and "--no-mmap" not in runnable
    assert runnable[runnable.index("-lm") + 1] == "none" and "-lm none" in change
    same = standin.guide_argv("srv", "m.gguf", 9000, "--no-mmap  do not memory-map model\n")
    assert same[0] == same[1]


def test_06_is_compared_with_llama_bench_test_by_test_for_each_launch():
    bench = standin.bench_rows([
        {"n_prompt": 2048, "n_gen": 0, "n_depth": 0, "avg_ts": 6000.0, "stddev_ts": 50.0,
         "samples_ts": [4000.0, 6100.0, 6100.0]},                       # a slow first sample: the median is used
        {"n_prompt": 0, "n_gen": 32, "n_depth": 0, "avg_ts": 200.0, "stddev_ts": 2.0},
        {"n_prompt": 2048, "n_gen": 0, "n_depth": 8192, "avg_ts": 5000.0, "stddev_ts": 50.0},
        {"n_prompt": 0, "n_gen": 32, "n_depth": 8192, "avg_ts": 180.0, "stddev_ts": 2.0}])
    runs = [{"test": "context d8192", "kind": "context", "tok/s": 1.0}]
    for rate in (5500.0, 5600.0, 5700.0):
        runs += [{"test": "pp2048 @ d0", "kind": "pp", "tok/s": rate},
                 {"test": "tg32 @ d0", "kind": "tg", "tok/s": rate / 30},
                 {"test": "pp2048 @ d8192", "kind": "pp", "tok/s": 4900.0},
                 {"test": "tg32 @ d8192", "kind": "tg", "tok/s": None}]
    meds = standin.medians_by_test(runs)
    assert meds == {"pp2048@d0": 5600.0, "tg32@d0": pytest.approx(186.67, abs=0.01), "pp2048@d8192": 4900.0}
    rows = {r["test"]: r for r in standin.compare_bench({"05": meds, "eq": {"pp2048@d0": 6000.0}}, bench)}
    assert rows["pp2048@d0"]["llama-bench median tok/s"] == 6100.0
    assert rows["pp2048@d0"]["Δ % · 05"] == pytest.approx(-8.2, abs=0.05) and not rows["pp2048@d0"]["within 5 % · 05"]
    assert rows["pp2048@d0"]["within 5 % · eq"] and rows["pp2048@d8192"]["within 5 % · 05"]
    assert rows["tg32@d8192"]["06 · 05"] is None and not rows["tg32@d8192"]["within 5 % · 05"]
    assert "| test |" in standin.table(list(rows.values()))


def test_the_engine_equivalent_launch_only_drops_context_checkpoints():
    served = ["srv", "-m", "m", "--port", "8080", "-ub", "2048", "--jinja"]
    argv = standin.engine_equivalent_argv(served, 9001)
    assert argv == ["srv", "-m", "m", "--port", "9001", "-ub", "2048", "--jinja", "--ctx-checkpoints", "0"]
    assert served[4] == "8080"                                                     # the 05 argv is untouched
    again = standin.engine_equivalent_argv(["srv", "-ctxcp", "8", "--port", "1"], 2)
    assert again == ["srv", "--ctx-checkpoints", "0", "--port", "2"]


def test_a_variant_sets_valued_flags_and_adds_bare_ones_once():
    label, flags = decode_gap.variant_flags("swa-full=--swa-full --ctx-checkpoints 0 -ub 512")
    assert label == "swa-full" and flags == ["--swa-full", "--ctx-checkpoints", "0", "-ub", "512"]
    served = ["srv", "-m", "m", "-ub", "2048", "--swa-full", "--jinja"]
    argv = standin.with_flags(served, flags)
    assert argv == ["srv", "-m", "m", "-ub", "512", "--swa-full", "--jinja", "--ctx-checkpoints", "0"]
    assert standin.with_flags(["srv"], ["--temp", "-1"]) == ["srv", "--temp", "-1"]
    with pytest.raises(ValueError, match="LABEL=FLAGS"):
        decode_gap.variant_flags("--swa-full")


def test_the_servers_own_timers_and_batched_bench_rows_are_read():
    log = ("srv update_slots: avg t_decode      = 9.000000 ms\n"
           "srv update_slots: avg t_pre_decode  = 0.011092 ms\n"
           "srv update_slots: avg t_decode      = 4.682206 ms\n"
           "srv update_slots: avg t_post_decode = 0.635198 ms\n"
           "srv update_slots: avg t_sampl       = nan ms\n")
    timers = decode_gap.parse_timers(log)
    assert timers["t_decode"] == 4.682206 and timers["t_pre_decode"] == 0.011092   # the last report wins
    rows = decode_gap.split_rows(timers, 5.9, 4.68)
    assert [r["ms/token"] for r in rows][:3] == [0.011, 4.682, 0.635] and rows[-1]["ms/token"] == 4.68
    out = ('main: n_kv_max = 4096\n{"n_kv_max": 4096, "pp": 512, "tg": 32, "pl": 1, "n_kv": 544, '
           '"speed_pp": 32094.2, "speed_tg": 327.3}\n')
    assert decode_gap.parse_batched_bench(out) == [{"n_kv_max": 4096, "pp": 512, "tg": 32, "pl": 1, "n_kv": 544,
                                                    "speed_pp": 32094.2, "speed_tg": 327.3}]
    argv = decode_gap.batched_bench_argv("bb", "m.gguf", ["srv", "-c", "131072", "-ub", "2048", "--kv-unified"],
                                         [2048, 8192], [32, 128])
    assert argv[argv.index("-c") + 1] == "131072" and argv[argv.index("-ub") + 1] == "2048"
    assert argv[argv.index("-npp") + 1] == "2048,8192" and argv[-1] == "-kvu"


def test_agent_rows_compare_under_the_tests_name():
    runs = [{"test": "tg32 @ d0 as an agent", "kind": "tg agent", "tok/s": 150.0},
            {"test": "tg32 @ d0", "kind": "tg", "tok/s": 200.0}]
    assert standin.medians_by_test(runs) == {"tg32@d0": 200.0}
    assert standin.medians_by_test(runs, ("tg agent",)) == {"tg32@d0": 150.0}


def test_a_hung_runbook_leaves_its_stacks(tmp_path):
    run = standin.Run(tmp_path / "res", 60)
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
    with pytest.raises(standin.subprocess.TimeoutExpired):
        run._run_or_dump([sys.executable, "-c", code], 3, "sleeper")
    dumps = list((tmp_path / "res" / "logs").glob("hang-sleeper-*.txt"))
    assert dumps and '"<string>", line 3' in dumps[0].read_text()            # where it sat: the sleep
    assert "stacks of hang-sleeper-" in (tmp_path / "res" / "summary.txt").read_text()


def test_bytes_per_token_count_one_embedding_row_and_the_used_experts():
    parts = standin.active_bytes([("token_embd.weight", 600), ("output.weight", 600), ("blk.0.attn_q.weight", 100),
                                  ("blk.0.ffn_up_exps.weight", 1280), ("blk.0.ffn_gate_inp.weight", 10),
                                  ("blk.0.attn_norm.weight", 4)], n_expert=128, n_used=4)
    assert parts == {"attention": 100, "experts": 40, "router": 10, "output head": 600, "other": 4, "total": 754}
    assert standin.kv_read_bytes(8192, 18, 18, 128, 8, 64) == 2048 * (18 * 8192 + 18 * 128)


# ----------------------------------------------------------------------------- bad input: 04 and 05

def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    return tmp_path


def test_a_failing_build_names_the_step_and_keeps_the_tail(home, monkeypatch):
    from sparkkit.engines import llamacpp
    monkeypatch.setattr(llamacpp.shutil, "which", lambda name: "/usr/bin/" + name)   # "nvcc is there"
    with pytest.raises(llamacpp.BuildFailed) as e:
        llamacpp.build(["true", "echo 'nvcc fatal   : Unsupported gpu architecture compute_999'; exit 2"],
                       home / "build.log")
    assert e.value.step == 2 and "Unsupported gpu architecture" in e.value.tail[-1]
    assert "build step 2 failed: exit code 2" in str(e.value)


def test_offline_tree_renders_no_clone_no_git_stamp_no_ui_download():
    from sparkkit.engines import llamacpp
    cmds = llamacpp.build_commands("/src/llama.cpp", "90", jobs=16, offline=True, build_dir="/tmp/lb", generator="Ninja")
    assert len(cmds) == 2 and cmds[0].startswith("GIT_DIR=/nonexistent cmake -S /src/llama.cpp -B /tmp/lb -G Ninja")
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in cmds[0] and "-DLLAMA_USE_PREBUILT_UI=OFF" in cmds[0]
    assert cmds[1] == "cmake --build /tmp/lb --config Release --target llama-server llama-bench ggml-rpc-server -j 16"
    assert llamacpp.server_binary("/src", "/tmp/lb") == Path("/tmp/lb/bin/llama-server")
    assert llamacpp.cuda_arch_for("NVIDIA H100 80GB HBM3") == "90"


def test_a_vendored_tree_with_a_dangling_gitlink_is_built_offline(tmp_path):
    from sparkkit.engines import llamacpp
    (tmp_path / ".git").write_text("gitdir: ../../.git/modules/vendor/llama.cpp\n")   # as in the sdist
    assert not llamacpp.is_git_checkout(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / ".git").write_text("gitdir: real\n")
    assert llamacpp.is_git_checkout(tmp_path)


def test_04_writes_a_fail_record_for_a_tree_without_the_ui_templates(home):
    src = home / "llama.cpp"
    (src / "tools" / "ui").mkdir(parents=True)
    (src / "CMakeLists.txt").write_text("project(x)\n")
    (src / "tools" / "ui" / "CMakeLists.txt").write_text("\n")
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(ROOT / "runbooks" / "04-engine.ipynb"), str(home / "out.ipynb"), kernel_name="python3",
                            parameters={"src_dir": str(src), "build_now": True, "run_dir": str(home / "run")},
                            progress_bar=False)
    assert e.value.ename == "StepFailed"
    rec = json.loads((home / "run" / "04-engine.json").read_text())
    assert rec["verdict"] == "fail" and "ui.h.in" in rec["headline"]
    assert rec["results"]["build_failure"]["step"] == 0


def test_05_writes_a_fail_record_with_the_log_tail_when_the_model_does_not_fit(home):
    from sparkkit import download, host, plan, records
    os.environ["SPARKKIT_HOME"] = str(home / "home")
    host.run()
    download.run()
    plan.run(context=4096)
    oom = _script(home / "llama-server", "#!/bin/sh\ncase \"$1\" in --help) echo '-lm, --load-mode'; exit 0;;\n"
                  "--version) echo 'version: 0 (test)'; exit 0;; esac\n"
                  "echo 'ggml_backend_cuda_buffer_type_alloc_buffer: allocating 60438.50 MiB on device 0: "
                  "cudaMalloc failed: out of memory'\necho 'llama_model_load: error loading model'\nexit 1\n")
    records.update_state("engine", {"engine": "llamacpp", "runtime": {"kind": "binary", "path": str(oom)}})
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(ROOT / "runbooks" / "05-serve.ipynb"), str(home / "out.ipynb"), kernel_name="python3",
                            parameters={"port": 18089, "run_dir": str(home / "run")}, progress_bar=False)
    assert e.value.ename == "StepFailed"
    rec = json.loads((home / "run" / "05-serve.json").read_text())
    assert rec["verdict"] == "fail" and "exited with code 1" in rec["headline"]
    assert "cudaMalloc failed: out of memory" in rec["results"]["error"]


def test_runbooks_stay_glue_with_stripped_outputs():
    for name in ("03-place-model", "04-engine", "05-serve"):
        nb = nbformat.read(ROOT / "runbooks" / f"{name}.ipynb", as_version=4)
        assert all(not c.get("outputs") or "NBVAL_CHECK_OUTPUT" in c.source for c in nb.cells if c.cell_type == "code")


# ----------------------------------------------------------------------------- the whole run, dry

def test_the_whole_run_on_stand_in_binaries(tmp_path, monkeypatch):
    """standin.py end to end on this machine, as run.sh starts it on the GPU one: the real runbooks
    under papermill, llama.cpp's own server (the embedded engine behind a llama-server command line)
    and a llama-bench that prints made-up speeds. What this catches costs nothing; on the device it
    costs a ten-minute call."""
    from sparkkit.download import place_embedded
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, kind in (("llama-server", "server"), ("llama-bench", "bench")):
        # A Python script, not a shell wrapper that execs: 05 records the server's command line as the
        # kernel shows it right after the start, and `sparkkit stop` signals only that process.
        _script(bin_dir / name, f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT / 'tools' / 'gpu_standin')!r})\n"
                                f"import fakes\nsys.exit(fakes.{kind}(sys.argv[1:]))\n")
    env = {**os.environ, "SPARKKIT_HOME": str(tmp_path / "home"), "SPARKKIT_RUNS": str(tmp_path / "res" / "runs"),
           "PYTHONPATH": str(ROOT / "src")}
    monkeypatch.setenv("SPARKKIT_HOME", env["SPARKKIT_HOME"])   # the model is scripted to Read this home's probe file
    model = place_embedded(tmp_path / "models").path
    argv = [sys.executable, str(ROOT / "tools" / "gpu_standin" / "standin.py"), "--res", str(tmp_path / "res"),
            "--budget", "600", "--binary", str(bin_dir / "llama-server"), "--placed", str(model), "--model", "embedded",
            "--model-dir", str(tmp_path / "models"), "--port", str(standin.free_port()), "--plan-checks", "4096,512", "--depths", "0,1024",
            "--pp", "256", "--tg", "8", "--tg-long", "16", "--repeats", "1", "--bench-reps", "2"]
    try:
        p = standin.subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    finally:   # a server this test started and the run failed to stop: ours (its model is in tmp_path)
        for pid in standin.descendants(1):
            try:
                if str(tmp_path) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                    os.kill(pid, standin.signal.SIGTERM)
            except OSError:
                pass
    summary = (tmp_path / "res" / "summary.txt").read_text()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    phases = results["phases"]
    for name in ("01-preflight", "05-serve", "06-verify", "llama-bench", "06 on an engine-equivalent launch",
                 "plan check c=4096 ub=512", "compare guide flags", "compare llama-server defaults"):
        assert phases[name]["status"] == "ok", (name, phases[name], summary[-3000:])
    assert {r["test"] for r in results["bench_vs_06"]} == {"pp256@d0", "pp256@d1024", "tg8@d0", "tg8@d1024",
                                                           "tg16@d0", "tg16@d1024"}
    eq = results["engine_equivalent"]
    assert "--ctx-checkpoints" in eq["argv"] and {"tg16@d0", "pp256@d1024"} <= set(eq["medians"])
    assert [r["launch"] for r in results["compare_table"]] == ["sparkkit", "guide", "defaults"]
    assert results["compare"]["guide verbatim"]["exit"] != 0                 # --no-mmap: not on this build
    check = results["plan_vs_logged"][0]
    assert {r["component"]: r["within 5 %"] for r in check["rows"]}["KV full attention"]
    assert (tmp_path / "res" / "runs" / "06-verify.json").is_file()
    assert not list((tmp_path / "res" / "logs").glob("hang-*.txt"))          # nothing hung, no stack files
