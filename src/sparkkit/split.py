"""How llama.cpp splits one model across two boxes (its RPC backend): which layers each box holds.

llama.cpp b11549 (`llama_model::load_tensors`, `llama_model_load_from_file_impl`):
- devices are ordered RPC servers first, then local GPUs ("to minimize network transfers"); a box
  whose accelerator is the CPU serves its layers through an `rpc-server` of its own, because CPU
  memory is not a layer device;
- `-ts a,b` (or free memory, when no split is given) becomes cumulative split points; layer `il` of
  the `n_layer + 1` (the output layer counts as one) goes to the first device whose point is above
  `il / (n_layer + 1)`. Integer layer counts as `-ts` therefore give exactly those counts;
- the input layer (token embeddings) always stays on the head's CPU; the output layer (norm + head)
  follows the last layer's device.

`Split.layers` is in llama.cpp's device order, so 02's per-box plan and 05's `-ts` are one tuple.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .model import Architecture


@dataclass(frozen=True)
class LayerBytes:
    """A model's tensor bytes by where llama.cpp puts them."""
    input: int                   # token_embd: the head's CPU
    layers: tuple[int, ...]      # blk.N: per repeating layer
    output: int                  # everything else (output_norm, output): the last layer's device
    exact: bool                  # read from the GGUF's tensor infos (else estimated from the catalogue)
    source: str


def layer_bytes(arch: Architecture, path: str | Path | None = None) -> LayerBytes:
    """From the GGUF's tensor infos when `path` is a placed file, else estimated: the repeating layers share
    the weights not in the embedding table and the output head."""
    if path and Path(path).is_file():
        from .model import _SPLIT, _shards, read_gguf_header
        first = Path(path)
        m = _SPLIT.search(first.name)
        if m and m.group(1) != "00001":
            first = first.with_name(_SPLIT.sub(f"-00001-of-{m.group(2)}.gguf", first.name))
        per = [0] * arch.n_layer
        inp = out = 0
        for shard in _shards(first):
            for name, _n, nbytes in read_gguf_header(shard).tensor_infos:
                if name.startswith("blk."):
                    per[int(name.split(".")[1])] += nbytes
                elif name.startswith("token_embd."):
                    inp += nbytes
                else:
                    out += nbytes
        return LayerBytes(inp, tuple(per), out, True, f"tensor infos of {first.name}")
    per_param = arch.weights_bytes / max(arch.params_total, 1.0)
    # released quants keep the embedding table and the output head at 8 bits or more (ggml-org's gpt-oss: Q8_0)
    table = int(arch.n_vocab * arch.n_embd * max(per_param, 34 / 32))
    block = (arch.weights_bytes - 2 * table) // arch.n_layer
    rest = arch.weights_bytes - 2 * table - block * arch.n_layer
    return LayerBytes(table, (block,) * arch.n_layer, table + rest, False,
                      f"estimated from {arch.source or 'the catalogue'}: equal layers, the embedding table and the output "
                      f"head at Q8_0's 1.0625 bytes per parameter (or the file's {per_param:.3f} if more)")


def device_of_layers(n_layer: int, split: tuple[int, ...]) -> list[int]:
    """The device index of each of llama.cpp's n_layer + 1 layers (the last is the output layer) for
    `-ts split` with every layer offloaded (-ngl 999), as load_tensors computes it in float."""
    import numpy as np
    points = np.cumsum(np.asarray(split, dtype=np.float32))
    points = points / np.float32(points[-1])
    act = n_layer + 1
    out = []
    for il in range(act):
        x = np.float32(il) / np.float32(act)
        out.append(int(np.searchsorted(points, x, side="right")))      # std::upper_bound
    return out


def split_for(n_layer: int, room: tuple[int, ...], fixed: tuple[int, ...], per_layer: int) -> tuple[int, ...]:
    """Layer counts (llama.cpp's device order, summing to n_layer + 1) that leave every box the same share of
    its room: box i holds fixed[i] bytes whatever the split (the head: embeddings, host buffers, prompt cache)
    plus per_layer bytes for each layer. The largest-remainder rounding of the balanced shares."""
    total = n_layer + 1
    need = sum(fixed) + total * per_layer                       # what the pair holds, whatever the split
    want = [max(0.0, (r * need / max(sum(room), 1) - f) / max(per_layer, 1)) for r, f in zip(room, fixed)]
    want = [w * total / max(sum(want), 1e-9) for w in want]
    counts = [int(w) for w in want]
    for i in sorted(range(len(room)), key=lambda i: want[i] - counts[i], reverse=True)[:total - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):            # every box holds at least one layer: a box with none is not a pair
        while counts[i] < 1 and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
            counts[i] += 1
    return tuple(counts)
