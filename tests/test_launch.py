"""One launch description → the Spark's llama-server argv and the embedded server's params."""
import pytest

from sparkkit.engines.launch import Launch, ServerFlags, command_line, to_argv
from sparkkit.errors import ParameterError

# Excerpts of real `llama-server --help` output: a 2026 build (llama.cpp @0c1e57098, vendored by
# llama-cpp-python 0.3.36, research/gpu-standin.md §4: no --no-mmap, only -lm) and a 2025 build
# that still had --no-mmap (research/engines.md flag table).
HELP_2026 = """
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
-lm,   --load-mode {auto,none,mmap,mlock,mmap+mlock,dio}
-kvu,  --kv-unified                     use single unified KV buffer shared across all sequences
--jinja, --no-jinja                     whether to use jinja template engine for chat (default: enabled)
--api-key-file FNAME                    path to file containing API keys (default: none)
"""
HELP_2025 = """
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
--no-mmap                               do not memory-map model (slower load but may reduce pageouts if not using mlock)
-kvu,  --kv-unified                     use single unified KV buffer shared across all sequences
--jinja                                 use jinja template for chat (default: disabled)
--api-key-file FNAME                    path to file containing API keys (default: none)
"""


def spark_launch(**kw):
    base = dict(model="/models/gpt-oss-120b-mxfp4-00001-of-00003.gguf", alias="gpt-oss-120b", context=131072)
    return Launch(**{**base, **kw})


def test_spark_argv_has_the_guides_flags_in_the_2026_spelling():
    argv = to_argv(spark_launch(), "llama-server", ServerFlags.from_help(HELP_2026))
    line = command_line(argv)
    assert line == ("llama-server -m /models/gpt-oss-120b-mxfp4-00001-of-00003.gguf --alias gpt-oss-120b "
                    "--host 127.0.0.1 --port 8080 -c 131072 -np 1 -ngl 999 -fa on -lm none -ub 2048 -b 2048 "
                    "--kv-unified --jinja --metrics")


def test_no_mmap_is_spelled_as_the_build_spells_it():
    old = to_argv(spark_launch(), "llama-server", ServerFlags.from_help(HELP_2025))
    new = to_argv(spark_launch(), "llama-server", ServerFlags.from_help(HELP_2026))
    assert "--no-mmap" in old and "-lm" not in old
    assert new[new.index("-lm") + 1] == "none" and "--no-mmap" not in new


def test_flags_detection_reads_help():
    f = ServerFlags.from_help(HELP_2025)
    assert f.no_mmap and not f.load_mode and f.kv_unified and f.jinja and f.api_key_file


def test_kv_type_and_slots_render():
    argv = to_argv(spark_launch(kv_type="q8_0", slots=4, context=65536))
    assert argv[argv.index("-ctk") + 1] == "q8_0" and argv[argv.index("-ctv") + 1] == "q8_0"
    assert argv[argv.index("-np") + 1] == "4"


def test_lan_bind_needs_a_key():
    with pytest.raises(ParameterError, match="parameter `host`.*API key"):
        spark_launch(host="0.0.0.0")
    launch = spark_launch(host="0.0.0.0", api_key_file="/run/key")
    argv = to_argv(launch)
    assert argv[argv.index("--api-key-file") + 1] == "/run/key"
    assert launch.base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("field,value,needle", [
    ("kv_type", "q3", "f16, bf16, q8_0"), ("flash_attn", "yes", "on, off, auto"),
    ("port", 70000, "1 to 65535"), ("context", 10, ">= 256"), ("slots", 0, "1 to 256")])
def test_bad_launch_fields_name_the_parameter(field, value, needle):
    with pytest.raises(ParameterError) as e:
        spark_launch(**{field: value})
    assert f"parameter `{field}`" in str(e.value) and needle in str(e.value)


def test_launch_round_trips_through_json_dict():
    launch = spark_launch(extra=("--reasoning-format", "auto"))
    assert Launch.from_dict(launch.to_dict()) == launch


def test_embedded_params_carry_the_same_launch(tmp_path):
    from sparkkit.engines.embedded import to_params
    import xllamacpp as xlc

    key = tmp_path / "key"
    key.write_text("sk-secret\n")
    p = to_params(spark_launch(context=4096, slots=2, kv_type="q8_0", ubatch=512, port=18555,
                               host="0.0.0.0", api_key_file=str(key)))
    assert (p.model.path, p.n_ctx, p.n_parallel, p.n_ubatch, p.port) == (
        "/models/gpt-oss-120b-mxfp4-00001-of-00003.gguf", 4096, 2, 512, 18555)
    assert p.model_alias == {"gpt-oss-120b"} and p.hostnames == ["0.0.0.0"] and p.api_keys == ["sk-secret"]
    assert p.cache_type_k == xlc.ggml_type.GGML_TYPE_Q8_0 and p.cache_type_v == xlc.ggml_type.GGML_TYPE_Q8_0
    assert p.load_mode == xlc.llama_load_mode.LLAMA_LOAD_MODE_NONE
    assert p.flash_attn_type == xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert p.n_gpu_layers == -1 and p.kv_unified and p.use_jinja and not p.fit_params
