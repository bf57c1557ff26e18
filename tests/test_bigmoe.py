"""Qwen3-235B-A22B-Instruct-2507 (Q4_K_M): the catalogue's model one GB10 cannot hold and a pair can.

One GB10's usable memory is what the code already says it is: cudaMemGetInfo's total on a GB10
(plan.GB10_TOTAL) less the headroom 01 keeps for the desktop and page cache (host.HEADROOM_BYTES); a
model needs its weights plus host.MODEL_MARGIN there (01's need)."""
import json
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from sparkkit import host, plan
from sparkkit import llamacpp_memory as lcm
from sparkkit.model import (CATALOGUE, GIB, MODEL_CHOICES, QWEN235_SHARD_BYTES, SERVABLE, _SPLIT, architecture,
                            from_gguf, from_hf_config, resolve)

ROOT = Path(__file__).resolve().parents[1]
SNAPS = ROOT / "tests/snapshots"
KEY = "qwen3-235b-a22b-2507"
ENTRY = CATALOGUE[KEY]
BIG = ENTRY.arch
ONE_GB10 = plan.GB10_TOTAL - host.HEADROOM_BYTES          # ~117.7 GiB

# Qwen/Qwen3-235B-A22B-Instruct-2507 config.json: the keys sparkkit reads (model.py quotes its sources)
CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_hidden_layers": 94, "hidden_size": 4096,
    "intermediate_size": 12288, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
    "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 1536, "max_position_embeddings": 262144,
    "rope_theta": 5000000, "vocab_size": 151936, "sliding_window": None, "use_sliding_window": False,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def half(arch):
    """What one box of a pair holds when llama.cpp splits the layers half-and-half."""
    from dataclasses import replace
    return replace(arch, n_layer=arch.n_layer // 2, weights_bytes=arch.weights_bytes // 2)


def test_the_entry_is_the_sourced_q4_k_m_set():
    assert BIG.arch == "qwen3moe" and ENTRY.servable and KEY in SERVABLE and KEY in MODEL_CHOICES
    assert BIG.weights_bytes == sum(QWEN235_SHARD_BYTES) == 142_646_905_312
    assert round(BIG.weights_bytes / GIB, 2) == 132.85
    assert ENTRY.hf_repo == "bartowski/Qwen_Qwen3-235B-A22B-Instruct-2507-GGUF"
    # four shards in the quant's folder, named as llama.cpp's split (any shard finds its siblings)
    assert len(ENTRY.hf_files) == 4 and len(set(ENTRY.hf_files)) == 4
    for i, name in enumerate(ENTRY.hf_files, 1):
        folder, file = name.split("/")
        assert folder == "Qwen_Qwen3-235B-A22B-Instruct-2507-Q4_K_M"
        m = _SPLIT.search(file)
        assert m and (int(m.group(1)), int(m.group(2))) == (i, 4)
    # every number carries a source naming where it comes from
    for field in ("n_layer", "n_head_kv", "head_dim", "n_ff_exp", "context_max", "n_vocab"):
        assert "Qwen3-235B-A22B-Instruct-2507 config.json" in ENTRY.sources[field]
    assert "142,646,905,312" in ENTRY.sources["weights_bytes"]
    assert resolve("auto", "gb10") == "gpt-oss-120b"                 # auto is unchanged: one box's model


def test_config_json_gives_the_catalogue_shapes(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    a = from_hf_config(tmp_path)
    assert (a.n_layer, a.n_head, a.n_head_kv, a.head_dim, a.n_embd, a.n_expert, a.n_expert_used, a.n_ff_exp,
            a.sliding_window, a.n_swa_layers, a.context_max, a.n_vocab, a.arch) == (
        BIG.n_layer, BIG.n_head, BIG.n_head_kv, BIG.head_dim, BIG.n_embd, BIG.n_expert, BIG.n_expert_used,
        BIG.n_ff_exp, BIG.sliding_window, BIG.n_swa_layers, BIG.context_max, BIG.n_vocab, BIG.arch)
    assert a.params_total == pytest.approx(BIG.params_total, rel=1e-4) == pytest.approx(235.09e9, rel=1e-4)
    # 22B activated (model card): k of n experts, attention and head
    assert a.params_active == pytest.approx(BIG.params_active, rel=0.02)


def test_weights_exceed_one_gb10_and_fit_half_and_half_on_two():
    assert BIG.weights_bytes > ONE_GB10                                   # the weights alone, let alone KV
    assert BIG.weights_bytes + host.MODEL_MARGIN > ONE_GB10
    assert BIG.weights_bytes / 2 + host.MODEL_MARGIN <= ONE_GB10          # each box of a pair holds its half
    assert 2 * ONE_GB10 - BIG.weights_bytes > 100 * GIB                   # room left on the pair for KV
    # 02 on one box: no context fits; each half of a pair fits with a useful context, 8 GiB prompt cache and all
    assert plan.plan_memory(BIG, 256, usable_bytes=ONE_GB10).verdict == "does not fit"
    assert plan.largest_context(BIG, usable_bytes=ONE_GB10) == 0
    each = half(BIG)
    p = plan.plan_memory(each, 131072, usable_bytes=ONE_GB10)
    assert p.verdict == "fits", p.table()
    assert plan.largest_context(each, usable_bytes=ONE_GB10) == 262144        # its full native context


def test_kv_per_token_is_the_configs():
    per_token = 2 * CONFIG["num_hidden_layers"] * CONFIG["num_key_value_heads"] * CONFIG["head_dim"] * 2   # K+V, f16
    assert per_token == 192_512                                               # 188 KiB
    assert plan.kv_per_token_all_layers(BIG, "f16") == per_token
    p = plan.plan_memory(BIG, 131072, usable_bytes=2 * ONE_GB10)
    assert p.row("KV full attention") == 131072 * per_token == 23.5 * GIB
    assert "KV sliding window" not in dict((n, b) for n, b, _ in p.rows)     # every layer full attention
    q8 = plan.plan_memory(BIG, 131072, kv_type="q8_0", usable_bytes=2 * ONE_GB10)
    assert q8.row("KV full attention") == 131072 * per_token * 17 // 32
    assert plan.plan_memory(half(BIG), 131072, usable_bytes=ONE_GB10).row("KV full attention") == 131072 * per_token // 2


@pytest.mark.parametrize("context,slots,kv,unified", [
    (32768, 1, "f16", True), (131072, 1, "f16", True), (262144, 1, "q8_0", True), (65536, 4, "f16", False)])
def test_llamacpp_memory_replays_its_compute_buffers(context, slots, kv, unified):
    cuda = lcm.compute_buffers(BIG, context, slots, 2048, kv, unified, backend="cuda")
    assert set(cuda) == {"CUDA0", "CUDA_Host"} and all(v > 0 for v in cuda.values())
    cpu = lcm.compute_buffers(BIG, context, slots, 2048, kv, unified, backend="cpu")
    assert cpu["CPU"] > 0
    assert BIG.head_dim in lcm.CUDA_FA_HEAD_DIMS                             # the CUDA replay applies


def test_compute_buffers_grow_by_the_mask_and_not_with_the_layers():
    small = lcm.compute_buffers(BIG, 32768, backend="cuda")
    big = lcm.compute_buffers(BIG, 131072, backend="cuda")
    assert big["CUDA0"] - small["CUDA0"] == (131072 - 32768) * 2048 * 2     # one f16 mask row per KV cell and token
    # the graph allocator reuses each layer's intermediates: half the layers, the same buffers
    assert lcm.compute_buffers(half(BIG), 32768, backend="cuda") == small
    assert 500 * 2**20 < small["CUDA0"] < 2 * GIB


def test_01_on_one_box_says_it_does_not_fit_and_names_the_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path))
    need = f"{KEY} needs ≥ {(BIG.weights_bytes + host.MODEL_MARGIN) / GIB:.1f} GiB"
    # the recorded FE (119.7 GiB MemTotal) and the GX10 with 32 GiB of swap: neither holds it, whatever is freed
    for snap in ("dgx-spark-fe-7.3.1", "asus-gx10-dgxos-7.6.0"):
        report, chosen = host.run(model=KEY, host=str(SNAPS / snap))
        assert chosen == KEY and report.is_gb10 and report.verdict == "fail"
        mem = next(c for c in report.checks if c.name == "usable memory")
        assert mem.status == "fail" and mem.value.endswith(need)
        assert mem.fix.startswith(f"one GB10 cannot hold it, swap or not: serve {KEY} on a pair of GB10s")
        assert "66.4 GiB of weights per box" in mem.fix and "drop_caches" not in mem.fix
        assert "use -p model gpt-oss-120b or gpt-oss-20b or qwen3-coder-30b-a3b here" in mem.fix
    # a box that is no GB10: the pair too, not "a GB10"
    mem = next(c for c in host.run(model=KEY, host=str(SNAPS / "x86-debian12-no-gpu"))[0].checks
               if c.name == "usable memory")
    assert "on a pair of GB10s" in mem.fix and "or a GB10" not in mem.fix
    # one box's models keep their own fixes
    mem = next(c for c in host.run(model="gpt-oss-120b", host=str(SNAPS / "x86-debian12-no-gpu"))[0].checks
               if c.name == "usable memory")
    assert mem.fix.endswith("or a GB10") and "pair" not in mem.fix
    n = host.need_for(KEY, "llamacpp")
    assert n.files == ENTRY.hf_files and n.weights_bytes == BIG.weights_bytes
    assert host.weights_for(KEY, "vllm") == (BIG.weights_bytes, "the GGUF's size: vLLM's is not in our sources")


def _write_shard(path: Path, i: int, metadata: bool) -> None:
    """A tiny split GGUF shard of qwen3moe with the catalogue's metadata (tensors a token's worth)."""
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_uint16("split.no", i - 1)
    w.add_uint16("split.count", 4)
    w.add_int32("split.tensors.count", 4)
    if metadata:
        w.add_name(BIG.name)
        w.add_block_count(BIG.n_layer)
        w.add_context_length(BIG.context_max)
        w.add_embedding_length(BIG.n_embd)
        w.add_head_count(BIG.n_head)
        w.add_head_count_kv(BIG.n_head_kv)
        w.add_key_length(BIG.head_dim)
        w.add_expert_count(BIG.n_expert)
        w.add_expert_used_count(BIG.n_expert_used)
        w.add_expert_feed_forward_length(BIG.n_ff_exp)
    w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(BIG.n_embd, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_03_places_the_four_shards_and_02_reads_them_back(tmp_path):
    """03's real download code against a local Hub holding the repo's four shard names (tiny GGUFs): the
    quant's folder is kept, so the shards stay siblings and the architecture is read from them."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hubserver import HubServer

    from sparkkit import download
    repo = tmp_path / "hub" / ENTRY.hf_repo
    for i, name in enumerate(ENTRY.hf_files, 1):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        _write_shard(repo / name, i, metadata=i == 1)
    with HubServer(tmp_path / "hub") as hub:
        placed = download.place_download(KEY, tmp_path / "models", endpoint=hub.endpoint, scan_roots={},
                                         out=lambda *a, **k: None)
    assert placed.verified and len(placed.files) == 4
    assert Path(placed.path) == tmp_path / "models" / KEY / ENTRY.hf_files[0]
    a = architecture(KEY, placed.path)
    assert a == from_gguf(Path(placed.path).with_name(Path(ENTRY.hf_files[2]).name))   # any shard finds the set
    assert (a.arch, a.n_layer, a.n_head, a.n_head_kv, a.head_dim, a.n_expert, a.n_expert_used, a.n_ff_exp,
            a.context_max) == ("qwen3moe", 94, 64, 4, 128, 128, 8, 1536, 262144)
    assert "+3 shards" in a.source
