"""02 for a pair: llama.cpp's layer split (sparkkit.split) and each box's share of the plan, and the launch that
renders the same split (`--rpc`, `-ts`)."""
import numpy as np
import pytest

from sparkkit import plan as P
from sparkkit import split as sp
from sparkkit.engines.launch import Launch, to_argv
from sparkkit.errors import ParameterError
from sparkkit.model import CATALOGUE, from_gguf

GIB = 2**30
OSS = CATALOGUE["gpt-oss-120b"].arch


def pair_for(arch, head=115 * GIB, peer=115 * GIB, path=None, split=(), rpc=("192.168.100.11:50052",)):
    return P.PairSpec("spark-b", head, peer, rpc, sp.layer_bytes(arch, path), split)


def reference_devices(n_layer, split):
    """llama_model::load_tensors, written out as C++ does it: cumulative float points, std::upper_bound."""
    points, acc = [], np.float32(0)
    for x in split:
        acc = np.float32(acc + np.float32(x))
        points.append(acc)
    points = [np.float32(p / acc) for p in points]
    act = n_layer + 1
    out = []
    for il in range(act):
        x = np.float32(np.float32(il) / np.float32(act))
        out.append(next((i for i, p in enumerate(points) if p > x), len(points)))
    return out


@pytest.mark.parametrize("k", range(1, 37))
def test_integer_layer_counts_give_exactly_those_layers(k):
    where = sp.device_of_layers(36, (k, 37 - k))
    assert where == reference_devices(36, (k, 37 - k))
    assert where.count(0) == k and where.count(1) == 37 - k
    assert where == sorted(where)                          # contiguous: the peer first, the head last


def test_a_free_memory_split_rounds_as_llamacpp_does():
    for split in ((119.3, 112.8), (1.0, 3.0), (5.0, 5.0, 2.0)):
        assert sp.device_of_layers(36, split) == reference_devices(36, split)


def test_layer_bytes_from_a_real_gguf_add_up_to_its_tensors(tmp_path):
    from sparkkit.download import place_embedded
    path = place_embedded(tmp_path / "models").path
    arch = from_gguf(path)
    lb = sp.layer_bytes(arch, path)
    assert lb.exact and len(lb.layers) == arch.n_layer
    assert lb.input + sum(lb.layers) + lb.output == arch.weights_bytes
    assert lb.input > 0 and lb.output > 0


def test_each_box_holds_its_layers_and_the_head_its_own_reserves():
    one = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB)
    two = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB, pair=pair_for(OSS))
    peer, head = two.boxes
    assert peer.device == "RPC0[192.168.100.11:50052]" and head.device == "CUDA0"
    assert len(peer.layers) + len(head.layers) == OSS.n_layer and head.output and not peer.output
    assert two.serving.split == (len(peer.layers), len(head.layers) + 1)
    assert two.serving.rpc == ("192.168.100.11:50052",)
    # the KV of both boxes is the one box's KV; the weights are the model's
    assert two.kv_bytes() == pytest.approx(one.kv_bytes(), abs=64)
    lb = sp.layer_bytes(OSS)
    weights = sum(b.rows[0][1] for b in two.boxes) + head.rows[1][1]
    assert weights == lb.input + sum(lb.layers) + lb.output
    names = {n for n, _, _ in head.rows}
    assert {"host prompt cache", "context checkpoints", "token embeddings"} <= names
    assert not {"host prompt cache", "context checkpoints", "token embeddings"} & {n for n, _, _ in peer.rows}
    assert two.total_bytes == peer.total_bytes + head.total_bytes
    assert two.usable_bytes == 230 * GIB


def test_the_split_leaves_both_boxes_the_same_share_free():
    two = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB, pair=pair_for(OSS))
    shares = [b.total_bytes / b.usable_bytes for b in two.boxes]
    per_layer = max(sp.layer_bytes(OSS).layers) / (115 * GIB)
    assert abs(shares[0] - shares[1]) <= 2 * per_layer      # within a layer or two of even
    smaller_peer = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB, pair=pair_for(OSS, peer=60 * GIB))
    assert len(smaller_peer.boxes[0].layers) < len(two.boxes[0].layers)


def test_the_verdict_is_the_fullest_box():
    tight_peer = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB,
                               pair=pair_for(OSS, peer=20 * GIB, split=(30, 7)))
    assert tight_peer.boxes[0].verdict == "does not fit" and tight_peer.verdict == "does not fit"
    assert tight_peer.total_bytes < tight_peer.usable_bytes          # the sum alone would have said "fits"


def test_a_split_that_does_not_cover_the_model_names_the_parameter():
    with pytest.raises(ParameterError, match="split.*summing to 37"):
        P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB, pair=pair_for(OSS, split=(10, 10)))


def test_two_boxes_buy_slots_at_full_context_and_name_the_link():
    gain = P.pair_gain(OSS, 4, "f16", 2048, 115 * GIB, link_mbps=200_000, pair=pair_for(OSS))
    rows = {r[""]: r for r in gain.to_dict("records")}
    slots = rows["most slots at full context (131072)"]
    assert slots["two boxes"] > slots["one box"] >= 1
    key = "the pair's cost per decoded token (µs): RPC + link"
    link = rows[key]["two boxes"]
    assert link > 0
    assert rows["decode forecast at depth 0 (tok/s)"]["two boxes"] < rows["decode forecast at depth 0 (tok/s)"]["one box"]
    slow = P.pair_gain(OSS, 4, "f16", 2048, 115 * GIB, link_mbps=10_000, pair=pair_for(OSS))
    assert {r[""]: r for r in slow.to_dict("records")}[key]["two boxes"] > link


def test_the_launch_renders_the_plans_split_and_endpoints():
    two = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB, pair=pair_for(OSS))
    argv = to_argv(Launch.from_serving(two.serving, "m.gguf", "gpt-oss-120b"))
    assert argv[argv.index("--rpc") + 1] == "192.168.100.11:50052"
    assert argv[argv.index("-ts") + 1] == ",".join(map(str, two.serving.split))
    # the plan as 05 reads it back from the state file
    from sparkkit.engines.serving import Serving
    import json
    back = Serving.from_dict(json.loads(json.dumps(two.serving.to_dict())))
    assert back == two.serving
    single = to_argv(Launch.from_serving(P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB).serving, "m.gguf",
                                         "gpt-oss-120b"))
    assert "--rpc" not in single and "-ts" not in single


def test_a_cpu_head_serves_its_own_layers_through_an_rpc_server_on_loopback():
    from sparkkit.model import architecture
    tiny = architecture("embedded")
    two = P.plan_memory(tiny, 4096, 2, "f16", 512, 16 * GIB, backend="cpu",
                        pair=pair_for(tiny, rpc=("127.0.0.1:50052", "127.0.0.1:50053")))
    # each rpc-server's first device: llama.cpp names both buffers RPC0[endpoint]
    assert [b.device for b in two.boxes] == ["RPC0[127.0.0.1:50052]", "RPC0[127.0.0.1:50053]"]
    assert all(len(b.layers) + b.output >= 1 for b in two.boxes)       # both boxes hold a layer


# ----------------------------------------------------------------------------- against llama.cpp's own logs
RECORDS = __import__("pathlib").Path(__file__).resolve().parents[1] / "records" / "pair"
MIB = 2**20


def test_the_split_graph_replay_is_the_h200_pairs_logged_compute_buffers():
    """gpt-oss-120b over RPC on two H200s (tools/pair_standin, b11549 with CUDA): llama-server logged each
    device's compute buffer and the host's at -lv 4; the replay of the split graph gives the same to 0.01 MiB."""
    import json
    from sparkkit import llamacpp_memory as lcm
    rec = json.loads((RECORDS / "h200x2-pair-and-two-local-gpus" / "results.json").read_text())
    logged = rec["logged_pair"]
    split = tuple(rec["plan_pair"]["serving"]["split"])
    where = sp.device_of_layers(OSS.n_layer, split)
    peer, head, host = lcm.compute_buffers_split(OSS, 131072, 4, 2048, "f16", True, False, tuple(where), (128, 128))
    assert round(peer / MIB, 2) == logged["compute RPC0[127.0.0.1:50052]"]
    assert round(head / MIB, 2) == logged["compute CUDA0"]
    assert round(host / MIB, 2) == logged["compute CPU"]
    # without pipeline parallelism (one device) the same replay is the single-GPU one
    one = lcm.compute_buffers(OSS, 131072, 4, 2048, "f16", True, "cuda")
    assert lcm.compute_buffers_split(OSS, 131072, 4, 2048, "f16", True, False, (0,) * 37, (128,),
                                     pipeline=False) == (one["CUDA0"], one["CUDA_Host"])


def test_each_box_of_the_h200_pair_was_planned_as_llamacpp_allocated_it():
    """02's per-box plan, as the runbook recorded it on the device (weights from the GGUF's tensor infos), against
    every buffer llama.cpp logged for that box: the issue asks for 5 %; each buffer is within 0.02 MiB (rounding)."""
    import json
    import sys
    sys.path.insert(0, str(RECORDS.parents[1] / "tools" / "pair_standin"))
    import pair as stand_in
    rec = json.loads((RECORDS / "h200x2-pair-and-two-local-gpus" / "results.json").read_text())
    rows = stand_in.per_box_check(rec["plan_pair"], rec["logged_pair"])
    totals = [r for r in rows if r["component"] == "all logged buffers"]
    assert len(totals) == 2 and all(r["within 5 %"] for r in totals)
    assert all(abs(r["planned MiB"] - r["logged MiB"]) < 0.025 for r in rows if r["logged MiB"] is not None)


def test_the_cpu_pairs_plan_is_its_log():
    """The same on this machine's CPU (records/pair/cpu-tiny-b11549: two real rpc-servers and a real llama-server
    of the pinned tree built with RPC, the embedded tiny model; each box's rpc-server is a CPU device, so llama.cpp
    names both buffers RPC0[endpoint]): 02's plan today, from the architecture that run recorded, against what
    that llama-server logged for each box (compute and KV; the weights depend on the generated file)."""
    import json
    from sparkkit.model import Architecture
    run = RECORDS / "cpu-tiny-b11549"
    plan_rec = json.loads((run / "runs" / "02-plan-pair-lv4.json").read_text())["results"]
    logged = json.loads((run / "results.json").read_text())["logged_pair"]
    arch = Architecture(**plan_rec["arch"])
    rpc = tuple(plan_rec["serving"]["rpc"])
    spec = P.PairSpec("box B", 16 * GIB, 16 * GIB, rpc, sp.layer_bytes(arch), tuple(plan_rec["serving"]["split"]))
    two = P.plan_memory(arch, plan_rec["context"], plan_rec["slots"], plan_rec["kv_type"], plan_rec["ubatch"],
                        16 * GIB, backend="cpu", pair=spec)
    for box in two.boxes:
        rows = {n: b / MIB for n, b, _ in box.rows}
        assert round(rows["compute buffer"], 2) == logged[f"compute {box.device}"]
        for comp, key in (("KV full attention", "kv full"), ("KV sliding window", "kv swa")):
            assert round(rows.get(comp, 0), 2) == logged.get(f"{key} {box.device}", 0)
    head = {n: b / MIB for n, b, _ in two.boxes[-1].rows}
    assert round(head["compute buffer (host)"], 2) == logged["compute CPU"]


def test_vllm_over_two_boxes_holds_half_of_everything_on_each():
    """Tensor parallel 2 (NVIDIA's two-Spark recipe): half the weights and half the KV heads on each box, and each
    box takes its own memory fraction of its own memory."""
    one = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB, engine="vllm")
    two = P.plan_memory(OSS, 131072, 4, "f16", 2048, 115 * GIB, engine="vllm", pair=pair_for(OSS, rpc=()))
    w1 = next(b for n, b, _ in one.rows if n == "weights")
    kv1 = next(b for n, b, _ in one.rows if n == "KV all layers")
    for box in two.boxes:
        rows = {n: b for n, b, _ in box.rows}
        assert rows["weights"] == w1 // 2 and rows["KV all layers"] == kv1 // 2
        assert box.layer_text == "every layer, half of each"
    assert two.serving.split == () and two.serving.rpc == ()
    # sequences the one box's pool refuses fit the pair's two pools
    assert P.plan_memory(OSS, 131072, 8, "f16", 2048, 115 * GIB, engine="vllm").refusal
    assert not P.plan_memory(OSS, 131072, 8, "f16", 2048, 115 * GIB, engine="vllm", pair=pair_for(OSS, rpc=())).refusal
