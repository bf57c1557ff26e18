"""02's plan against the real engine: for generated gpt-oss GGUFs of several shapes, the KV cache and
compute buffer sizes the plan predicts match what the embedded llama.cpp (xllamacpp 2026.10.11549 =
llama.cpp b11549) logs at `-lv 4` while it loads — within 5 %, and in practice to the logged 0.01 MiB.

One server at a time (two llama.cpp servers on a 2-core box slow each other down), one thread each.
Run with `-s` to see the table of predicted vs logged sizes.
"""
from __future__ import annotations

import re

import pytest

from sparkkit import plan, records, serve
from sparkkit.engines.launch import Launch
from sparkkit.model import from_gguf
from sparkkit.tinymodel import TinySpec, generate

MIB = 2**20
BASE = dict(n_embd=256, n_layer=4, n_head=8, n_head_kv=4, head_dim=64, n_expert=8, n_expert_used=2, n_ff_exp=256,
            sliding_window=128)
# (shape changes, context, slots, unified KV, ubatch, KV type): window, layers, KV heads, slots, KV type vary
CASES = [
    ({}, 8192, 1, True, 512, "f16"),
    ({"sliding_window": 512, "n_layer": 6}, 16384, 1, True, 1024, "f16"),
    ({"n_head_kv": 8}, 8192, 4, True, 512, "q8_0"),
    ({"n_head_kv": 2}, 12288, 3, False, 2048, "f16"),
    ({"n_layer": 3, "n_head_kv": 2, "sliding_window": 64}, 4096, 1, True, 256, "q4_0"),
    ({"n_embd": 512, "n_head": 16, "head_dim": 32, "n_expert": 16, "n_expert_used": 4, "n_ff_exp": 512,
      "n_layer": 8}, 32768, 2, True, 2048, "bf16"),
]

KV_LINE = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells,\s+(\d+) layers,\s+(\d+)/(\d+) seqs\)")
COMPUTE_LINE = re.compile(r"sched_reserve:\s+CPU compute buffer size =\s+([\d.]+) MiB")
OUTPUT_LINE = re.compile(r"CPU\s+output buffer size =\s+([\d.]+) MiB")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import os
    old = os.environ.get("SPARKKIT_HOME")
    path = tmp_path_factory.mktemp("plan-vs-llamacpp")
    os.environ["SPARKKIT_HOME"] = str(path)
    yield path
    serve.stop()
    if old is None:
        os.environ.pop("SPARKKIT_HOME")
    else:
        os.environ["SPARKKIT_HOME"] = old


def logged(home, case_id, changes, context, slots, unified, ubatch, kv_type, qwen=False):
    """Generate the model, serve it with the embedded llama.cpp at -lv 4, return (arch, log text)."""
    if qwen:
        from sparkkit.tinyqwen import QwenSpec, generate as generate_qwen
        model = generate_qwen(home / f"qwen{case_id}.gguf", QwenSpec(**changes)).path
    else:
        model = generate(home / f"case{case_id}.gguf", TinySpec(**{**BASE, **changes})).path
    launch = Launch(model=str(model), alias="t", context=context, slots=slots, kv_unified=unified, kv_type=kv_type,
                    ubatch=ubatch, batch=max(ubatch, 2048), port=serve.free_port(), threads=1, log_verbosity=4)
    started = serve.start(launch, {"kind": "embedded"}, timeout=120)
    try:
        text = started.log.read_text(errors="replace")
    finally:
        serve.stop()
    assert records.load_state().get("server") is None
    return from_gguf(model), text


def close(pred_mib: float, log_mib: float) -> bool:
    # the log prints MiB with two decimals: allow that rounding, else 5 %
    return abs(pred_mib - log_mib) <= max(0.05 * log_mib, 0.0051)


def compare(shape: str, p, rows: dict[str, float], table: list[str], failures: list[str]) -> None:
    """One table line per buffer: the plan's size against the logged one; a line off by more goes to failures."""
    for name, log_mib in rows.items():
        pred = p.row(name) / MIB
        err = f"{(pred - log_mib) / log_mib * 100:+6.2f} %" if log_mib >= 0.1 else "(below the log's resolution)"
        table.append(f"{shape:58s} {name:18s} predicted {pred:9.2f} MiB  logged {log_mib:9.2f} MiB  {err}")
        if not close(pred, log_mib):
            failures.append(table[-1])


def test_plan_matches_what_llamacpp_allocates(home, capsys):
    table, failures = [], []
    for i, (changes, context, slots, unified, ubatch, kv_type) in enumerate(CASES):
        arch, text = logged(home, i, changes, context, slots, unified, ubatch, kv_type)
        kv = KV_LINE.findall(text)
        compute = COMPUTE_LINE.findall(text)
        output = OUTPUT_LINE.findall(text)
        assert len(kv) == 2 and len(compute) == 1 and len(output) == 1, text[-3000:]
        p = plan.plan_memory(arch, context, slots, kv_type, ubatch, usable_bytes=64 * 2**30, kv_unified=unified,
                             backend="cpu")
        from sparkkit.llamacpp_memory import kv_layout
        lay = kv_layout(arch, context, slots, ubatch, unified)
        (full_mib, full_cells, full_layers, _, streams), (swa_mib, swa_cells, swa_layers, _, _) = kv
        # the cell counts and layer split are exact, not approximately right
        assert (int(full_cells), int(swa_cells), int(streams)) == (lay.cells_full, lay.cells_swa, lay.n_stream)
        assert (int(full_layers), int(swa_layers)) == (arch.n_full_layers, arch.n_swa_layers)
        rows = {"KV full attention": float(full_mib), "KV sliding window": float(swa_mib),
                "compute buffer": float(compute[0]), "output buffer": float(output[0])}
        shape = (f"{arch.n_layer}L w{arch.sliding_window} kv{arch.n_head_kv}×{arch.head_dim} e{arch.n_embd} "
                 f"x{arch.n_expert}/{arch.n_expert_used} ctx{context} np{slots}{'' if unified else ' split'} "
                 f"ub{ubatch} {kv_type}")
        compare(shape, p, rows, table, failures)
    with capsys.disabled():
        print("\n" + "\n".join(table))
    assert not failures, "\n".join(failures)


# Qwen3-Coder's architecture (qwen3moe: every layer full attention, RMS-normed q/k, 8 of 128 experts at full
# scale): tinyqwen GGUFs of three shapes, the plan against the same log lines (one KV cache, no sliding window)
QWEN_CASES = [
    ({}, 8192, 1, True, 512, "f16"),
    ({"n_layer": 4, "n_head_kv": 4, "n_embd": 128, "n_ff_exp": 64}, 16384, 4, True, 2048, "q8_0"),
    ({"head_dim": 64, "n_head": 8, "n_head_kv": 2, "n_expert": 16, "n_expert_used": 8}, 12288, 3, False, 1024, "f16"),
]


def test_plan_matches_what_llamacpp_allocates_for_qwen3_coder(home, capsys):
    table, failures = [], []
    for i, (changes, context, slots, unified, ubatch, kv_type) in enumerate(QWEN_CASES):
        arch, text = logged(home, i, changes, context, slots, unified, ubatch, kv_type, qwen=True)
        assert arch.arch == "qwen3moe" and arch.n_swa_layers == 0
        kv, compute, output = KV_LINE.findall(text), COMPUTE_LINE.findall(text), OUTPUT_LINE.findall(text)
        assert len(kv) == 1 and len(compute) == 1 and len(output) == 1, text[-3000:]
        p = plan.plan_memory(arch, context, slots, kv_type, ubatch, usable_bytes=64 * 2**30, kv_unified=unified,
                             backend="cpu")
        from sparkkit.llamacpp_memory import kv_layout
        lay = kv_layout(arch, context, slots, ubatch, unified)
        (kv_mib, cells, layers, _, streams), = kv
        assert (int(cells), int(layers), int(streams)) == (lay.cells_full, arch.n_layer, lay.n_stream)
        rows = {"KV full attention": float(kv_mib), "compute buffer": float(compute[0]), "output buffer": float(output[0])}
        shape = (f"qwen3moe {arch.n_layer}L kv{arch.n_head_kv}×{arch.head_dim} e{arch.n_embd} x{arch.n_expert}/"
                 f"{arch.n_expert_used} ctx{context} np{slots}{'' if unified else ' split'} ub{ubatch} {kv_type}")
        compare(shape, p, rows, table, failures)
    with capsys.disabled():
        print("\n" + "\n".join(table))
    assert not failures, "\n".join(failures)
