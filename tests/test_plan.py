"""02's plan: the gpt-oss numbers research/spark.md §7 and gpu-standin.md §4 publish, per engine."""
import pytest

from sparkkit import llamacpp_memory as lcm
from sparkkit import plan, records
from sparkkit.errors import ParameterError
from sparkkit.model import ARCH_FIELDS, CATALOGUE, ENGINE_WEIGHTS, GIB

MIB = 2**20
G120 = CATALOGUE["gpt-oss-120b"].arch
G20 = CATALOGUE["gpt-oss-20b"].arch
QWEN = CATALOGUE["qwen3-coder-30b-a3b"].arch


def row(p, name):
    return p.row(name)


def test_full_attention_kv_is_36_kib_per_token_for_120b():
    p = plan.plan_memory(G120, 131072, usable_bytes=120 * GIB)
    assert row(p, "KV full attention") == 131072 * 36 * 1024 == int(4.5 * GIB)
    assert row(plan.plan_memory(G20, 131072, usable_bytes=120 * GIB), "KV full attention") == 3 * GIB


def test_kv_matches_llamacpp_log_at_32k():
    # gpu-standin.md §4: non-SWA 1152.00 MiB (120b) / 768.00 MiB (20b); SWA 81.00 / 54.00 MiB at ub 2048
    for arch, full, swa in ((G120, 1152.0, 81.0), (G20, 768.0, 54.0)):
        p = plan.plan_memory(arch, 32768, ubatch=2048, usable_bytes=120 * GIB)
        assert row(p, "KV full attention") / MIB == full
        assert row(p, "KV sliding window") / MIB == swa
    p = plan.plan_memory(G120, 32768, ubatch=512, usable_bytes=120 * GIB)
    assert row(p, "KV sliding window") / MIB == 27.0


def test_compute_buffers_reproduce_the_cuda_log_of_both_models():
    # gpu-standin.md §4, llama.cpp 0c1e57098 on a GPU, -c 32768 -np 1 -fa on: CUDA0 / CUDA_Host compute
    # buffer 119.52 / 44.02 MiB at ub 512 and 484.07 / 182.08 MiB at ub 2048, for 20b and 120b alike.
    for arch in (G120, G20):
        for ub, dev, host in ((512, 119.52, 44.02), (2048, 484.07, 182.08)):
            got = lcm.compute_buffers(arch, 32768, 1, ub, backend="cuda", build="0c1e57098")
            assert round(got["CUDA0"] / MIB, 2) == dev and round(got["CUDA_Host"] / MIB, 2) == host
    # b11549 adds the mixed token/embedding inputs (~3 × n_embd × ubatch floats); the masks grow with context
    p32 = plan.plan_memory(G120, 32768, usable_bytes=120 * GIB)
    p128 = plan.plan_memory(G120, 131072, usable_bytes=120 * GIB)
    assert 484 * MIB < row(p32, "compute buffer (GPU)") < 520 * MIB
    grew = row(p128, "compute buffer (GPU)") - row(p32, "compute buffer (GPU)")
    assert grew == (131072 - 32768) * 2048 * 2     # one f16 mask row per KV cell and token of the micro-batch


# llama.cpp b11549 (the tree in the xllamacpp 2026.10.11549 sdist) built for CUDA, -fa on -ngl 999, on an
# H100, serving a generated GGUF with gpt-oss-120b's widths and 36 layers but 4 experts (the compute
# buffers do not depend on the expert count): (context, slots, unified, ubatch, KV type) -> logged MiB of
# KV full, KV sliding, CUDA0 compute, CUDA_Host compute. nvidia-smi showed 597–600 MiB over the buffers.
CUDA_B11549 = [
    ((32768, 1, True, 512, "f16"), (1152.00, 27.00, 122.77, 55.28)),
    ((32768, 1, True, 2048, "f16"), (1152.00, 81.00, 497.09, 227.10)),
    ((131072, 1, True, 2048, "f16"), (4608.00, 81.00, 881.09, 611.10)),
    ((65536, 4, True, 2048, "q8_0"), (1224.00, 47.81, 626.15, 356.16)),
    ((32768, 2, False, 2048, "f16"), (1152.00, 162.00, 433.09, 163.10)),
]


@pytest.mark.parametrize("setting,logged", CUDA_B11549, ids=lambda v: str(v))
def test_plan_matches_the_cuda_build_of_the_pinned_llamacpp(setting, logged):
    context, slots, unified, ubatch, kv = setting
    p = plan.plan_memory(G120, context, slots, kv, ubatch, usable_bytes=120 * GIB, kv_unified=unified)
    got = [row(p, n) / MIB for n in ("KV full attention", "KV sliding window", "compute buffer (GPU)",
                                     "compute buffer (host)")]
    assert got == pytest.approx(list(logged), abs=0.006)
    assert row(p, "CUDA runtime") / MIB == pytest.approx(598.5, abs=2)


def test_slots_share_a_unified_pool_and_split_without_it():
    one = plan.plan_memory(G120, 65536, 1, usable_bytes=120 * GIB)
    four = plan.plan_memory(G120, 65536, 4, usable_bytes=120 * GIB)
    split = plan.plan_memory(G120, 65536, 4, usable_bytes=120 * GIB, kv_unified=False)
    assert row(four, "KV full attention") == row(one, "KV full attention")          # -c is the whole pool
    assert row(four, "KV sliding window") / MIB == 18 * 2 * 1024 * 2560 / MIB        # pad(128 × 4 + 2048)
    assert row(split, "KV full attention") == row(one, "KV full attention")          # 4 streams × c/4
    assert row(split, "KV sliding window") == 4 * row(one, "KV sliding window")      # a window per stream
    assert row(four, "output buffer") == 4 * row(one, "output buffer")
    assert row(four, "context checkpoints") == 4 * row(one, "context checkpoints")


def test_q8_halves_kv_and_swa_full_doubles_it():
    f16 = plan.plan_memory(G120, 65536, usable_bytes=120 * GIB)
    q8 = plan.plan_memory(G120, 65536, kv_type="q8_0", usable_bytes=120 * GIB)
    full = plan.plan_memory(G120, 65536, usable_bytes=120 * GIB, swa_full=True)
    assert row(q8, "KV full attention") == pytest.approx(row(f16, "KV full attention") * 17 / 32)
    assert row(full, "KV full attention") == 2 * row(f16, "KV full attention")


def test_the_server_reserves_are_in_the_plan():
    p = plan.plan_memory(G120, 131072, usable_bytes=120 * GIB)
    assert row(p, "host prompt cache") == 8 * GIB                 # --cache-ram 8192 MiB default
    # up to 32 checkpoints of the 18 sliding layers' (128 + 2048) cells, 2 KiB each
    assert row(p, "context checkpoints") == 32 * 18 * 2176 * 2048
    assert "CUDA runtime" in dict((n, b) for n, b, _ in p.rows)
    cpu = plan.plan_memory(G120, 131072, usable_bytes=120 * GIB, backend="cpu")
    assert "CUDA runtime" not in dict((n, b) for n, b, _ in cpu.rows)
    gpu = plan.plan_memory(G120, 131072, usable_bytes=70 * GIB, discrete_gpu=True)
    assert "host prompt cache" in dict((n, b) for n, b, _ in gpu.aside)   # host RAM, not GPU memory
    assert gpu.total_bytes < p.total_bytes


def test_verdicts_and_largest_context():
    assert plan.plan_memory(G120, 131072, usable_bytes=110 * GIB).verdict == "fits"
    assert plan.plan_memory(G120, 131072, usable_bytes=60 * GIB).verdict == "does not fit"
    usable = 72 * GIB
    best = plan.largest_context(G120, usable_bytes=usable)
    assert 0 < best < 131072 and best % 256 == 0
    assert plan.plan_memory(G120, best, usable_bytes=usable).verdict != "does not fit"
    assert plan.plan_memory(G120, best + 256, usable_bytes=usable).verdict == "does not fit"
    assert plan.largest_context(G120, usable_bytes=10 * GIB) == 0
    assert plan.largest_context(G120, usable_bytes=120 * GIB) == 131072


def test_vllm_and_sglang_hold_kv_for_every_layer_in_a_fixed_fraction():
    # peers.md §4 / hf-mem#60: vLLM accounts 73,728 B/token for gpt-oss-120b (all 36 layers)
    assert plan.kv_per_token_all_layers(G120, "f16") == 73728
    v = plan.plan_memory(G120, 131072, usable_bytes=115 * GIB, engine="vllm")
    assert row(v, "KV all layers") == 9 * GIB
    # it takes its fraction, whatever the context: 0.80 on the Spark (above ~0.87 fails before vLLM 0.24)
    assert v.total_bytes == int(0.80 * plan.GB10_TOTAL) and v.serving.mem_fraction == 0.80
    s = plan.plan_memory(G120, 131072, usable_bytes=115 * GIB, engine="sglang")
    assert s.total_bytes == int(0.75 * plan.GB10_TOTAL) and s.serving.mem_fraction == 0.75
    # a fraction too small for the context: the engine refuses, and the plan says so
    small = plan.plan_memory(G120, 131072, slots=8, usable_bytes=115 * GIB, engine="sglang", mem_fraction=0.6)
    assert small.verdict == "does not fit" and "would refuse" in small.refusal
    best = plan.largest_context(G120, 8, "f16", usable_bytes=115 * GIB, engine="sglang", mem_fraction=0.6)
    assert best * 8 * 73728 <= 0.6 * plan.GB10_TOTAL - 65e9 < (best + 256) * 8 * 73728
    fp8 = plan.plan_memory(G120, 131072, kv_type="fp8", usable_bytes=115 * GIB, engine="vllm")
    assert row(fp8, "KV all layers") == 4.5 * GIB


def test_ollama_default_context_and_its_sliding_layers():
    assert plan.ollama_default_context(G120, 121 * GIB) == 131072      # 256k tier, clamped to the model
    assert plan.ollama_default_context(G120, 30 * GIB) == 32768
    assert plan.ollama_default_context(G120, 16 * GIB) == 4096
    o = plan.plan_memory(G120, 8192, usable_bytes=115 * GIB, engine="ollama")
    assert row(o, "KV sliding window") == 18 * (4096 + 512) * 2048
    assert any("OLLAMA_CONTEXT_LENGTH=8192" in n for n in o.notes)


def test_qwen3_coder_has_no_sliding_layers_so_every_layer_holds_the_context():
    p = plan.plan_memory(QWEN, 131072, usable_bytes=115 * GIB)
    assert row(p, "KV full attention") == 48 * 2 * 4 * 128 * 2 * 131072 == 12 * GIB
    assert "KV sliding window" not in dict((n, b) for n, b, _ in p.rows)
    assert "context checkpoints" not in dict((n, b) for n, b, _ in p.rows)
    with pytest.raises(ParameterError, match="parameter `context`.*256 to 262144"):
        plan.plan_memory(QWEN, 300000, usable_bytes=GIB)


def test_decode_forecast_reproduces_the_published_spark_figures():
    fc = plan.forecast(G120, [0, 32768]).set_index("depth")
    # 0.77 × 273 GB/s ÷ 3.594 GB/token ≈ 58.5 tok/s; llama.cpp measured 59.02 (d0), 41.35 (d32768)
    assert fc.loc[0, "decode forecast (tok/s)"] == pytest.approx(59.02, rel=0.05)
    assert fc.loc[32768, "decode forecast (tok/s)"] == pytest.approx(41.35, rel=0.10)
    assert fc.loc[0, "published decode (tok/s)"] == 59.02
    for key, arch in (("gpt-oss-120b", G120), ("gpt-oss-20b", G20), ("qwen3-coder-30b-a3b", QWEN)):
        depths = sorted(plan.PUBLISHED_SPARK[key])
        fc = plan.forecast(arch, depths).set_index("depth")
        for d in depths:
            assert fc.loc[d, "decode forecast (tok/s)"] == pytest.approx(plan.PUBLISHED_SPARK[key][d][1], rel=0.10)
    # prefill: calibrated on 120b at depth 0 and 32768; its falloff in between stays within 10 %
    fc = plan.forecast(G120, [4096, 8192, 16384]).set_index("depth")
    for d in (4096, 8192, 16384):
        published = plan.PUBLISHED_SPARK["gpt-oss-120b"][d][0]
        assert fc.loc[d, "prefill forecast (tok/s)"] == pytest.approx(published, rel=0.10)
    assert {"Ollama v0.12.6", "vLLM, tuned MXFP4 build"} <= set(plan.published("gpt-oss-120b")["engine"])


@pytest.mark.parametrize("kw,param,accepted", [
    ({"context": 200000}, "context", "from 256 to 131072"),
    ({"context": 100}, "context", "from 256 to 131072"),
    ({"slots": 0}, "slots", "from 1 to 256"),
    ({"slots": -2}, "slots", "from 1 to 256"),
    ({"kv_type": "q5"}, "kv_type", "f16, bf16, q8_0, q4_0, f32"),
    ({"context": 1024, "slots": 8}, "slots", "1 to 4 for context 1024"),
    ({"engine": "tgi"}, "engine", "llamacpp, ollama, sglang, vllm"),
    ({"engine": "vllm", "kv_type": "q8_0"}, "kv_type", "f16, bf16, fp8"),
])
def test_bad_plan_parameters_name_the_parameter_and_the_valid_range(kw, param, accepted):
    args = {"context": 4096, "slots": 1, "kv_type": "f16", "engine": "llamacpp", **kw}
    with pytest.raises(ParameterError, match=f"parameter `{param}`") as e:
        plan.plan_memory(G120, args["context"], args["slots"], args["kv_type"], usable_bytes=GIB, engine=args["engine"])
    assert accepted in str(e.value)


def test_every_catalogue_number_has_a_source():
    numbers = set(ARCH_FIELDS) - {"name", "arch", "source"}
    for key, entry in CATALOGUE.items():
        missing = numbers - {k for k, v in entry.sources.items() if v}
        assert not missing, (key, missing)
    assert ENGINE_WEIGHTS.keys() == CATALOGUE.keys()


# ------------------------------------------------------------------------------------ runbook 02 and the tuner

@pytest.fixture
def state(tmp_path, monkeypatch):
    """A host 01 has checked (no GB10: the embedded default) with the embedded model chosen."""
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path))
    records.update_state("host", {"is_gb10": False, "target": "embedded", "usable_bytes": 20 * GIB})
    records.update_state("choice", {"model": "embedded", "engine": "llamacpp", "model_dir": str(tmp_path)})
    return tmp_path


def test_run_writes_the_plan_05_serves(state):
    view = plan.run(context=0, slots=2, kv_type="bf16", ubatch=512)
    p = records.load_state()["plan"]
    for key in ("context", "slots", "kv_type", "ubatch", "verdict", "total_bytes", "usable_bytes", "for_model"):
        assert key in p, key
    assert (p["context"], p["slots"], p["kv_type"], p["ubatch"], p["for_model"]) == (
        view.largest, 2, "bf16", 512, "embedded")
    assert p["verdict"] == view.plan.verdict and view.plan.backend == "cpu"


def test_run_plans_other_engines_and_models_for_comparison_only(state):
    plan.run(context=8192)
    before = records.load_state()["plan"]
    v = plan.run(context=131072, engine="vllm", model="gpt-oss-120b")
    assert v.plan.engine == "vllm" and not v.setting.adoptable
    q = plan.run(context=65536, model="qwen3-coder-30b-a3b")
    assert q.plan.arch.arch == "qwen3moe"
    assert records.load_state()["plan"] == before             # 05's plan is untouched
    with pytest.raises(ParameterError, match="parameter `context`: got 300000; accepted: 0 .* to 131072"):
        plan.run(context=300000)
    with pytest.raises(ParameterError, match="parameter `model`"):
        plan.run(model="llama-3")


def test_tuner_callbacks_redraw_the_same_plan_without_a_browser(state):
    from sparkkit.tuner import ContextTuner

    t = ContextTuner(G120, 100 * GIB, 131072)
    assert t.view.plan.context == 131072 and t.view.plan.verdict == "fits"
    assert t.adopt_button.disabled                      # no runbook setting: nothing to hand to 05
    t.context.value = 32768
    assert t.view.plan.context == 32768
    assert t.view.plan.kv_bytes() == plan.plan_memory(G120, 32768, usable_bytes=100 * GIB).kv_bytes()
    t.kv_type.value = "q8_0"
    assert t.view.plan.kv_type == "q8_0" and "fits" in t.status.value
    t.context.value = 1024
    t.slots.value = 8                                    # 128 tokens per slot: refused, shown, no crash
    assert t.error and "parameter `slots`" in t.error and t.adopt_button.disabled


def test_tuner_button_hands_the_tuned_values_to_05(state):
    from sparkkit.tuner import ContextTuner

    view = plan.run(context=4096)
    t = ContextTuner.for_view(view)
    assert not t.adopt_button.disabled
    assert t.view is view and t.draws == 0 and "move a control" in t.out.outputs[0]["text"]   # not drawn twice
    t.context.value = 16384
    assert t.draws == 1                                                     # a change draws the new plan
    t.slots.value = 2
    assert "q4_0" not in t.kv_type.options                    # head size 16: llama.cpp refuses q4_0/q8_0 here
    t.kv_type.value = "bf16"
    t.adopt_button.click()
    p = records.load_state()["plan"]
    assert (p["context"], p["slots"], p["kv_type"], p["for_model"]) == (16384, 2, "bf16", "embedded")
    assert "05-serve will launch context 16384" in t.status.value
    other = ContextTuner.for_view(plan.run(context=65536, engine="sglang", model="gpt-oss-20b"))
    assert other.adopt_button.disabled and "comparison" in other.adopt_button.tooltip


def test_plan_and_launch_agree_on_the_host_prompt_cache_sized_for_the_model():
    """02 charged llama.cpp's 8 GiB prompt cache to a 1.6 MiB model while 05 never passed --cache-ram."""
    from sparkkit.engines.launch import Launch, to_argv
    from sparkkit.model import architecture
    tiny = plan.plan_memory(architecture("embedded"), 131072, usable_bytes=4 * GIB, backend="cpu")
    assert tiny.verdict == "fits" and row(tiny, "host prompt cache") == 256 * 2**20   # the embedded default, 4 GiB
    big = plan.plan_memory(G120, 131072, usable_bytes=120 * GIB)
    assert big.to_dict()["cache_ram_mib"] == 8192 and row(big, "host prompt cache") == 8 * GIB
    argv = to_argv(Launch(model="m.gguf", cache_ram_mib=tiny.to_dict()["cache_ram_mib"]))
    assert argv[argv.index("--cache-ram") + 1] == "256"


def test_a_kv_type_llama_cpp_refuses_for_the_head_size_is_refused_by_the_plan():
    from sparkkit.model import architecture
    tiny = architecture("embedded")                                   # head size 16: q8_0's 32-value blocks do not fit
    with pytest.raises(ParameterError, match="parameter `kv_type`: got 'q8_0'; accepted: f16, bf16, f32 for"):
        plan.plan_memory(tiny, 4096, kv_type="q8_0", usable_bytes=4 * GIB, backend="cpu")
    assert plan.plan_memory(G120, 4096, kv_type="q8_0", usable_bytes=120 * GIB).verdict == "fits"   # 64: fine
