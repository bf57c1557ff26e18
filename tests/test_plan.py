"""02's plan: the gpt-oss numbers research/spark.md §7 and gpu-standin.md §4 publish."""
import pytest

from sparkkit import plan
from sparkkit.errors import ParameterError
from sparkkit.model import CATALOGUE, GIB

MIB = 2**20
G120 = CATALOGUE["gpt-oss-120b"].arch
G20 = CATALOGUE["gpt-oss-20b"].arch


def row(p, name):
    return next(b for n, b, _ in p.rows if n == name)


def test_full_attention_kv_is_36_kib_per_token_for_120b():
    p = plan.plan_memory(G120, 131072, usable_bytes=120 * GIB)
    assert row(p, "KV full attention") == 131072 * 36 * 1024 == int(4.5 * GIB)


def test_kv_matches_llamacpp_log_at_32k():
    # gpu-standin.md §4: non-SWA 1152.00 MiB (120b) / 768.00 MiB (20b); SWA 81.00 / 54.00 MiB at ub 2048
    for arch, full, swa in ((G120, 1152.0, 81.0), (G20, 768.0, 54.0)):
        p = plan.plan_memory(arch, 32768, ubatch=2048, usable_bytes=120 * GIB)
        assert row(p, "KV full attention") / MIB == full
        assert row(p, "KV sliding window") / MIB == swa
    p = plan.plan_memory(G120, 32768, ubatch=512, usable_bytes=120 * GIB)
    assert row(p, "KV sliding window") / MIB == 27.0


def test_q8_halves_kv_and_swa_full_doubles_it():
    f16 = plan.plan_memory(G120, 65536, usable_bytes=120 * GIB)
    q8 = plan.plan_memory(G120, 65536, kv_type="q8_0", usable_bytes=120 * GIB)
    full = plan.plan_memory(G120, 65536, usable_bytes=120 * GIB, swa_full=True)
    assert row(q8, "KV full attention") == pytest.approx(row(f16, "KV full attention") * 17 / 32)
    assert row(full, "KV full attention") == 2 * row(f16, "KV full attention")


def test_verdicts_and_largest_context():
    assert plan.plan_memory(G120, 131072, usable_bytes=110 * GIB).verdict == "fits"
    assert plan.plan_memory(G120, 131072, usable_bytes=60 * GIB).verdict == "does not fit"
    usable = 64 * GIB
    best = plan.largest_context(G120, usable_bytes=usable)
    assert 0 < best < 131072
    assert plan.plan_memory(G120, best, usable_bytes=usable).verdict != "does not fit"
    assert plan.plan_memory(G120, best + 512, usable_bytes=usable).verdict == "does not fit"
    assert plan.largest_context(G120, usable_bytes=10 * GIB) == 0


def test_decode_forecast_reproduces_the_published_spark_figure():
    fc = plan.forecast(G120, [0, 32768]).set_index("depth")
    # 0.77 × 273 GB/s ÷ 3.594 GB/token ≈ 58.5 tok/s; llama.cpp measured 59.0 (d0), 41.35 (d32768)
    assert fc.loc[0, "decode forecast (tok/s)"] == pytest.approx(59.0, rel=0.05)
    assert fc.loc[32768, "decode forecast (tok/s)"] == pytest.approx(41.35, rel=0.10)
    assert fc.loc[0, "published decode (tok/s)"] == 59.0


@pytest.mark.parametrize("kw,param", [({"context": 200000}, "context"), ({"slots": 0}, "slots"),
                                      ({"kv_type": "q5"}, "kv_type"), ({"context": 1024, "slots": 8}, "slots")])
def test_bad_plan_parameters_name_the_parameter(kw, param):
    args = {"context": 4096, "slots": 1, "kv_type": "f16", **kw}
    with pytest.raises(ParameterError, match=f"parameter `{param}`"):
        plan.plan_memory(G120, args["context"], args["slots"], args["kv_type"], usable_bytes=GIB)


def test_tuner_callbacks_redraw_the_same_plan_without_a_browser():
    from sparkkit.tuner import ContextTuner

    t = ContextTuner(G120, 100 * GIB, 131072)
    assert t.view.plan.context == 131072 and t.view.plan.verdict == "fits"
    t.context.value = 32768
    assert t.view.plan.context == 32768
    assert t.view.plan.kv_bytes() == plan.plan_memory(G120, 32768, usable_bytes=100 * GIB).kv_bytes()
    t.kv_type.value = "q8_0"
    assert t.view.plan.kv_type == "q8_0"
    t.context.value = 1024
    t.slots.value = 8                      # 128 tokens per slot: refused, shown, no crash
    assert t.error and "parameter `slots`" in t.error
