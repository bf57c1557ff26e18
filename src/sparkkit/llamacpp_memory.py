"""The KV cache and compute buffers llama.cpp allocates, computed the way llama.cpp computes them.

KV cache: the cell counts of `llama_kv_cache_iswa` / `llama_kv_cache` (src/llama-kv-cache*.cpp):
the context is padded to 256; without `--kv-unified` each of the N slots gets its own stream of
`context / N` cells (padded to 256); the sliding-window cache of gpt-oss holds
`pad256(min(cells, window × (slots if unified else 1) + ubatch))` cells per stream.

Compute buffers: llama.cpp sizes them by building the worst-case graph (one micro-batch of
`min(context, ubatch)` tokens, one output per slot) and running ggml's graph allocator over it
(`ggml_gallocr` in ggml/src/ggml-alloc.c: tensors are placed best-fit into one growing buffer and
freed after their last use; some ops reuse their input in place). The high-water mark is the
buffer size it logs (`sched_reserve: CPU compute buffer size = …`). No formula captures that —
the peak moves between the attention masks, the MoE intermediates and the holes they leave — so
this module replays it: it rebuilds the gpt-oss graph of llama.cpp b11549 (the build inside the
pinned xllamacpp 2026.10.11549: src/models/openai-moe.cpp, src/llama-graph.cpp) tensor by tensor
in the same order, and runs the same allocator over it. tests/test_plan_vs_llamacpp.py checks the
result against what the embedded llama.cpp logs for several generated gpt-oss shapes.

Scope: the CPU backend (the embedded engine) is replayed exactly. For CUDA (the Spark), the same
graph is split the way ggml's scheduler splits it — token embeddings and graph inputs in pinned
host memory (`CUDA_Host`), everything else on the device (`CUDA0`), with copies of the inputs —
which is an approximation (CUDA's fusion passes and a different buffer alignment are not
replayed) which nevertheless matches, to the logged 0.01 MiB, the CUDA0/CUDA_Host buffers b11549 built
for CUDA logs on an H100 for gpt-oss-120b's widths (contexts 32768–131072, ubatch 512/2048, 1–4 slots,
unified or not, f16/q8_0) and those research/gpu-standin.md §4 logged with an older build (tests/test_plan.py).
It does not apply where CUDA has no flash-attention kernel for the head size (CUDA_FA_HEAD_DIMS).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .engines.embedded import LLAMA_CPP_RELEASE
from .model import Architecture

# ggml_row_size(type, n) / n for the KV cache types llama.cpp accepts (-ctk/-ctv): block formats
# of ggml (q8_0: 32 int8 + f16 scale = 34 bytes per 32 values; q4_0: 16 bytes + f16 scale = 18).
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
_BLOCK = {"q8_0": (32, 34), "q4_0": (32, 18)}
N_PAD = 256                   # llama.cpp pads the context and the KV cache to 256 cells
CPU_ALIGNMENT = 32            # TENSOR_ALIGNMENT, ggml-impl.h
CUDA_ALIGNMENT = 128          # ggml_backend_cuda_buffer_type_get_alignment


def _pad(n: int, to: int = N_PAD) -> int:
    return -(-n // to) * to


def row_bytes(kv_type: str, n: int) -> int:
    """ggml_row_size: bytes of n values of `kv_type`."""
    if kv_type in _BLOCK:
        blk, size = _BLOCK[kv_type]
        return n // blk * size
    return int(n * KV_TYPE_BYTES[kv_type])


@dataclass(frozen=True)
class KVLayout:
    """Cells of llama.cpp's KV caches for a context/slots/ubatch choice."""
    n_ctx: int          # context after llama.cpp's padding (and rounding to a multiple of slots)
    n_stream: int       # 1 with --kv-unified, else one stream per slot
    cells_full: int     # cells per stream, full-attention layers
    cells_swa: int      # cells per stream, sliding-window layers (0: the model has none)
    ubatch: int         # the micro-batch llama.cpp really uses (min(ubatch, context))


def kv_layout(arch: Architecture, context: int, slots: int = 1, ubatch: int = 2048, unified: bool = True,
              swa_full: bool = False, batch: int | None = None) -> KVLayout:
    n_ctx = _pad(context)                                  # llama_context: GGML_PAD(n_ctx, 256)
    if unified:
        per_stream = n_ctx
    else:
        per_stream = _pad(n_ctx // slots)
        n_ctx = per_stream * slots
    n_ubatch = min(ubatch, batch if batch is not None else max(ubatch, 2048))
    swa = 0
    if arch.n_swa_layers:
        swa = per_stream if swa_full else _pad(min(per_stream, arch.sliding_window * (slots if unified else 1)
                                                   + n_ubatch))
    return KVLayout(n_ctx, 1 if unified else slots, per_stream, swa, n_ubatch)


def kv_bytes(arch: Architecture, layout: KVLayout, kv_type: str) -> tuple[int, int]:
    """(full-attention bytes, sliding-window bytes) of K + V, as llama_kv_cache logs them."""
    per_cell = 2 * row_bytes(kv_type, arch.n_head_kv * arch.head_dim)
    full = arch.n_full_layers * layout.cells_full * layout.n_stream * per_cell
    swa = arch.n_swa_layers * layout.cells_swa * layout.n_stream * per_cell
    return full, swa


# ------------------------------------------------------------------------------------------------
# A minimal ggml: tensors with shapes, strides and sources; graph order as ggml_visit_parents_graph.

_TSIZE = {"f32": 4, "f16": 2, "i32": 4, "i64": 8}
# ggml_op_can_inplace (ggml-alloc.c), restricted to the ops these graphs use
_INPLACE = frozenset({"ADD", "ADD_ID", "MUL", "DIV", "SCALE", "CLAMP", "ROPE", "RMS_NORM", "SOFT_MAX", "UNARY"})


_LAYER = [-1]       # the layer _build is creating tensors for (-1: the input stage; n_layer: the output stage)


class _T:
    __slots__ = ("op", "typ", "ne", "nb", "src", "view_src", "view_offs", "external", "input", "output",
                 "nc", "nv", "alloc", "addr", "buf", "seen", "layer")

    def __init__(self, op: str, ne, typ: str = "f32", src=(), nb=None, view_of: _T | None = None, offs: int = 0):
        self.op, self.typ = op, typ
        ne = tuple(ne) + (1,) * (4 - len(ne))
        self.ne = ne
        if nb is None:
            ts = _TSIZE.get(typ, 2)
            nb = (ts, ts * ne[0], ts * ne[0] * ne[1], ts * ne[0] * ne[1] * ne[2])
        self.nb = tuple(nb)
        self.src = list(src)
        self.view_src, self.view_offs = None, 0
        if view_of is not None:
            self.view_src = view_of.view_src or view_of
            self.view_offs = view_of.view_offs + offs
        self.external = view_of.external if view_of is not None else False
        self.input = self.output = False
        self.nc = self.nv = 0
        self.alloc, self.addr, self.buf, self.seen = False, 0, 0, False
        self.layer = _LAYER[0]

    def nbytes(self) -> int:
        return _TSIZE.get(self.typ, 2) + sum((self.ne[i] - 1) * self.nb[i] for i in range(4))

    def contiguous(self) -> bool:
        exp = _TSIZE.get(self.typ, 2)
        for n, b in zip(self.ne, self.nb):
            if n != 1 and b != exp:
                return False
            exp *= n
        return True


def _weight(*ne, typ="f32") -> _T:
    t = _T("NONE", ne, typ)
    t.external = True
    return t


def _input(ne, typ) -> _T:
    t = _T("NONE", ne, typ)
    t.input = True
    return t


def _op(op: str, ne, *src, typ: str = "f32") -> _T:
    return _T(op, ne, typ, src)


def _view(a: _T, ne, nb=None, offs: int = 0, op: str = "VIEW") -> _T:
    if nb is None:                 # reshape: contiguous strides
        ts = _TSIZE.get(a.typ, 2)
        ne4 = tuple(ne) + (1,) * (4 - len(ne))
        nb = (ts, ts * ne4[0], ts * ne4[0] * ne4[1], ts * ne4[0] * ne4[1] * ne4[2])
    return _T(op, ne, a.typ, (a,), nb, view_of=a, offs=offs)


def _permute(a: _T, p) -> _T:
    ne, nb = [0] * 4, [0] * 4
    for i in range(4):
        ne[p[i]], nb[p[i]] = a.ne[i], a.nb[i]
    return _view(a, ne, nb, op="PERMUTE")


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[_T] = []
        self.leafs: list[_T] = []

    def expand(self, t: _T) -> None:
        stack = [(t, 0)]
        while stack:                       # iterative ggml_visit_parents_graph (left to right)
            node, i = stack.pop()
            if i == 0:
                if node.seen:
                    continue
                node.seen = True
            if i < len(node.src):
                stack.append((node, i + 1))
                s = node.src[i]
                if s is not None and not s.seen:
                    stack.append((s, 0))
                continue
            (self.leafs if node.op == "NONE" else self.nodes).append(node)


# ------------------------------------------------------------------------------------------------
# ggml-alloc.c: ggml_dyn_tallocr (best fit, the last block grows the buffer) and ggml_gallocr.

class _DynAlloc:
    def __init__(self, alignment: int) -> None:
        self.align = alignment
        self.blocks = [[0, 1 << 62]]
        self.max_size = 0

    def size(self, n: int) -> int:
        return -(-n // self.align) * self.align

    def alloc(self, n: int) -> int:
        n = self.size(n)
        blocks, best, best_size = self.blocks, -1, 1 << 63
        for i in range(len(blocks) - 1):          # best fit among all but the last block
            sz = blocks[i][1]
            if n <= sz <= best_size:
                best, best_size = i, sz
        if best == -1:
            best = len(blocks) - 1
        off = blocks[best][0]
        blocks[best][0] += n
        blocks[best][1] -= n
        if blocks[best][1] == 0:
            del blocks[best]
        if off + n > self.max_size:
            self.max_size = off + n
        return off

    def free(self, addr: int, n: int) -> None:
        n = self.size(n)
        b = self.blocks
        for i, blk in enumerate(b):
            if blk[0] + blk[1] == addr:
                blk[1] += n
                if i < len(b) - 1 and blk[0] + blk[1] == b[i + 1][0]:
                    blk[1] += b[i + 1][1]
                    del b[i + 1]
                return
            if addr + n == blk[0]:
                blk[0] = addr
                blk[1] += n
                if i > 0 and b[i - 1][0] + b[i - 1][1] == blk[0]:
                    b[i - 1][1] += blk[1]
                    del b[i]
                return
        j = 0
        while j < len(b) and b[j][0] < addr:
            j += 1
        b.insert(j, [addr, n])


def _same_layout(a: _T, b: _T) -> bool:
    return a.typ == b.typ and a.ne == b.ne and a.nb == b.nb


def _gallocr(nodes: list[_T], leafs: list[_T], allocs: list[_DynAlloc]) -> None:
    """ggml_gallocr_alloc_graph_impl: leafs first, then nodes in order, freeing after last use."""
    def place(t: _T, buf: int) -> None:
        if t.external or t.alloc or t.view_src is not None or t.op == "DEP":
            return
        t.alloc, t.buf = True, buf
        if t.op in _INPLACE:
            for p in t.src:
                if p is None or not p.alloc or p.output or (p.view_src is not None and p.view_src.output):
                    continue
                if not _same_layout(t, p) or p.nc != 1 or p.nv != 0:
                    continue
                if p.view_src is not None:
                    vs = p.view_src
                    if vs.nv == 1 and vs.nc == 0 and p.view_offs == 0 and vs.alloc:
                        t.addr, t.buf = vs.addr, vs.buf
                        p.alloc = vs.alloc = False
                        _free_extra(t, vs, allocs)
                        return
                else:
                    t.addr, t.buf = p.addr, p.buf
                    p.alloc = False
                    _free_extra(t, p, allocs)
                    return
        t.addr = allocs[buf].alloc(t.nbytes())

    def free(t: _T) -> None:
        if t.output:
            return
        allocs[t.buf].free(t.addr, t.nbytes())
        t.alloc = False

    for leaf in leafs:
        place(leaf, leaf.buf)
    for n in nodes:
        if n.view_src is not None and n.op != "DEP":
            n.view_src.nv += 1
        for s in n.src:
            if s is not None:
                s.nc += 1
    for n in nodes:
        for p in n.src:
            if p is not None:
                place(p, n.buf)
        place(n, n.buf)
        for p in n.src:
            if p is None:
                continue
            p.nc -= 1
            if p.nc == 0 and p.nv == 0:
                if p.view_src is not None:
                    vs = p.view_src
                    vs.nv -= 1
                    if vs.nv == 0 and vs.nc == 0 and vs.alloc:
                        free(vs)
                elif p.alloc:
                    free(p)


def _free_extra(node: _T, parent: _T, allocs: list[_DynAlloc]) -> None:
    a = allocs[parent.buf]
    extra = a.size(parent.nbytes()) - a.size(node.nbytes())
    if extra > 0:
        a.free(parent.addr + a.size(node.nbytes()), extra)


# ------------------------------------------------------------------------------------------------
# The graphs (llama.cpp b11549). Each builder returns the graph and the tensors that stay on the
# host under CUDA: the token-embedding rows and the graph inputs.

@dataclass(frozen=True)
class _Shape:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_expert: int
    n_expert_used: int
    n_ff: int
    swa: bool
    n_vocab: int


def _hadamard(cur: _T, rot: _T) -> _T:
    """llama_mul_mat_hadamard (src/llama-impl.h): the rotation applied for quantized KV types."""
    n = rot.ne[0]
    tot = cur.ne[0] * cur.ne[1] * cur.ne[2] * cur.ne[3]
    res = _view(cur, (n, tot // n), op="RESHAPE") if cur.contiguous() else _op("CONT", (n, tot // n), cur)
    res = _op("MUL_MAT", (n, tot // n), rot, res)
    return _view(res, cur.ne, op="RESHAPE")


def _rot_size(head_dim: int, kv_type: str) -> tuple[int, int]:
    """n_rot_k, n_rot_v of llama_kv_cache (attention rotation for quantized KV, head_dim % 64 == 0)."""
    if kv_type not in _BLOCK or head_dim % 64:
        return 0, 0
    n_rot_k = 64
    while head_dim % (2 * n_rot_k) == 0:
        n_rot_k *= 2
    return n_rot_k, 64


def _build(s: _Shape, lay: KVLayout, n_tokens: int, n_outputs: int, kv_type: str,
           mixed: bool = True) -> tuple[_Graph, set[int]]:
    g, host = _Graph(), set()
    _LAYER[0] = -1
    E, H, HKV, D, X, K, F = s.n_embd, s.n_head, s.n_head_kv, s.head_dim, s.n_expert, s.n_expert_used, s.n_ff
    n_stream = lay.n_stream
    tok_embd = _weight(E, s.n_vocab, typ="q8_0")
    # build_inp_embd: the token, raw-embedding and mixed paths, selected by ggml_build_forward_select
    tokens, embd_in = _input((n_tokens,), "i32"), _input((E, n_tokens), "f32")
    mixed_tokens = _input((n_tokens,), "i32") if mixed else None
    embd0 = _op("GET_ROWS", (E, n_tokens), tok_embd, tokens)
    g.expand(embd0)
    host.add(id(embd0))
    if mixed:       # the mixed token/embedding input path of 2026 builds; older builds lack it
        embd2 = _op("GET_ROWS", (E, n_tokens), tok_embd, mixed_tokens)
        g.expand(embd2)
        mixed_slots, mixed_embd = _input((n_tokens,), "i64"), _input((E, n_tokens), "f32")
        dup = _op("DUP", mixed_embd.ne, mixed_embd)
        set_rows = _view(dup, dup.ne, dup.nb, op="SET_ROWS")
        set_rows.src = [embd2, mixed_slots, dup]
        host.add(id(embd2))
        for t in (embd0, embd_in, set_rows, embd0):
            g.expand(t)
    else:
        for t in (embd0, embd_in, embd0):
            g.expand(t)
    inpL = embd0
    inp_pos = _input((n_tokens,), "i32")
    n_rot_k, n_rot_v = _rot_size(D, kv_type)

    def attn_inputs(cells):
        ki, vi = _input((n_tokens,), "i64"), _input((n_tokens,), "i64")
        mask = _input((cells, n_tokens // n_stream, 1, n_stream), "f16")    # flash attention: f16 mask
        return ki, vi, mask

    base = attn_inputs(lay.cells_full)
    swa_in = attn_inputs(lay.cells_swa) if s.swa else None
    def rot_inputs():     # attn_inp_k_rot / attn_inp_v_rot of each cache (quantized KV only)
        return (_input((n_rot_k, n_rot_k), "f32") if n_rot_k else None,
                _input((n_rot_v, n_rot_v), "f32") if n_rot_v else None)

    rots = rot_inputs()
    rots_swa = rot_inputs() if s.swa else None
    out_ids = _input((n_outputs,), "i32")

    def mm(k_in, n_out, x):
        return _op("MUL_MAT", (n_out, x.ne[1], x.ne[2], x.ne[3]), _weight(k_in, n_out), x)

    def norm(x, n):
        x = _op("RMS_NORM", x.ne, x)
        return _op("MUL", x.ne, x, _weight(n))

    for il in range(s.n_layer):
        _LAYER[0] = il
        is_swa = s.swa and il % 2 == 0                   # gpt-oss: swa pattern 2, even layers
        inpSA = inpL
        cur = norm(inpL, E)
        gpt = s.arch == "gpt-oss"
        Q = mm(E, H * D, cur)
        if gpt:
            Q = _op("ADD", Q.ne, Q, _weight(H * D))
        Kc = mm(E, HKV * D, cur)
        if gpt:
            Kc = _op("ADD", Kc.ne, Kc, _weight(HKV * D))
        Vc = mm(E, HKV * D, cur)
        if gpt:
            Vc = _op("ADD", Vc.ne, Vc, _weight(HKV * D))
        Q = _view(Q, (D, H, n_tokens), op="RESHAPE")
        Kc = _view(Kc, (D, HKV, n_tokens), op="RESHAPE")
        Vc = _view(Vc, (D, HKV, n_tokens), op="RESHAPE")
        if not gpt:                                      # qwen3moe: q/k norms before RoPE
            Q = norm(Q, D)
        Q = _op("ROPE", Q.ne, Q, inp_pos)
        if not gpt:
            Kc = norm(Kc, D)
        Kc = _op("ROPE", Kc.ne, Kc, inp_pos)
        k_rot, v_rot = rots_swa if is_swa else rots
        if k_rot is not None:
            Q, Kc = _hadamard(Q, k_rot), _hadamard(Kc, k_rot)
        if v_rot is not None:
            Vc = _hadamard(Vc, v_rot)
        for t in ((Q, Kc, Vc) if s.swa else (Q, Vc, Kc)):   # iswa build_attn: q, k, v; plain: q, v, k
            g.expand(t)
        cells = lay.cells_swa if is_swa else lay.cells_full
        ki, vi, mask = swa_in if is_swa else base
        cache_k = _weight(HKV * D, cells, n_stream, typ=kv_type)
        cache_v = _weight(HKV * D, cells, n_stream, typ=kv_type)
        for cur_t, idx, cache in ((Kc, ki, cache_k), (Vc, vi, cache_v)):
            v2 = _view(cur_t, (HKV * D, n_tokens), (4, cur_t.nb[2], cur_t.nb[2] * n_tokens, cur_t.nb[2] * n_tokens))
            dst = cache if n_stream == 1 else _view(cache, (HKV * D, cells * n_stream), op="RESHAPE")
            st = _view(dst, dst.ne, dst.nb, op="SET_ROWS")
            st.src = [v2, idx, dst]
            g.expand(st)
        kview = _view(cache_k, (D, HKV, cells, n_stream), (2, 2 * D, 2 * D * HKV, 2 * D * HKV * cells))
        vview = _view(cache_v, (D, HKV, cells, n_stream), (2, 2 * D, 2 * D * HKV, 2 * D * HKV * cells))
        q = _view(Q, (Q.ne[0], Q.ne[1], Q.ne[2] // n_stream, n_stream),
                  (Q.nb[0], Q.nb[1], Q.nb[2], Q.nb[2] * (Q.ne[2] // n_stream)))
        q = _permute(q, (0, 2, 1, 3))
        kp, vp = _permute(kview, (0, 2, 1, 3)), _permute(vview, (0, 2, 1, 3))
        srcs = [q, kp, vp, mask] + ([_weight(H)] if gpt else [])        # attention sinks (gpt-oss)
        fa = _op("FLASH_ATTN", (vp.ne[0], q.ne[2], q.ne[1], q.ne[3]), *srcs)
        cur = _view(fa, (fa.ne[0] * fa.ne[1], fa.ne[2] * fa.ne[3]), op="RESHAPE")
        g.expand(cur)
        if v_rot is not None:
            cur = _hadamard(cur, v_rot)
        cur = mm(H * D, E, cur)
        if gpt:
            cur = _op("ADD", cur.ne, cur, _weight(E))
        if il == s.n_layer - 1:
            cur = _op("GET_ROWS", (E, n_outputs), cur, out_ids)
            inpSA = _op("GET_ROWS", (E, n_outputs), inpSA, out_ids)
        ffn_inp = _op("ADD", cur.ne, cur, inpSA)
        cur = norm(ffn_inp, E)
        cur = _moe(g, cur, X, K, F, gpt)
        cur = _op("ADD", cur.ne, cur, ffn_inp)
        inpL = cur
    _LAYER[0] = s.n_layer
    inpL.output = True                                   # t_h_nextn
    cur = norm(inpL, E)
    cur.output = True                                    # t_embd
    cur = mm(E, s.n_vocab, cur)
    cur.output = True                                    # t_logits
    g.expand(cur)
    _LAYER[0] = -1
    return g, host


def _moe(g: _Graph, cur: _T, X: int, K: int, F: int, gpt: bool) -> _T:
    """build_moe_ffn: gpt-oss (biases, softmax over the selected weights, swiglu_oai) or qwen3moe
    (softmax gating, normalized weights, swiglu)."""
    E, nt = cur.ne[0], cur.ne[1]
    logits = _op("MUL_MAT", (X, nt), _weight(E, X), cur)
    if gpt:
        logits = _op("ADD", logits.ne, logits, _weight(X))
        probs = logits
    else:
        probs = _op("SOFT_MAX", logits.ne, logits)
    srt = _op("ARGSORT", probs.ne, probs, typ="i32")
    sel = _view(srt, (K, nt), (4, srt.nb[1], srt.nb[2], srt.nb[3]))
    p3 = _view(probs, (1, X, nt), op="RESHAPE")
    w = _op("GET_ROWS", (1, K, nt), p3, sel)
    if gpt:
        w = _view(w, (K, nt), op="RESHAPE")
        w = _op("SOFT_MAX", w.ne, w)
        w = _view(w, (1, K, nt), op="RESHAPE")
    else:
        w2 = _view(w, (K, nt), op="RESHAPE")
        ws = _op("SUM_ROWS", (1, nt), w2)
        ws = _op("CLAMP", ws.ne, ws)
        w2 = _op("DIV", w2.ne, w2, ws)
        w = _view(w2, (1, K, nt), op="RESHAPE")
    g.expand(w)
    c3 = _view(cur, (E, 1, nt), op="RESHAPE")
    up = _op("MUL_MAT_ID", (F, K, nt), _weight(E, F, X), c3, sel)
    if gpt:
        up = _op("ADD_ID", up.ne, up, _weight(F, X), sel)
    gate = _op("MUL_MAT_ID", (F, K, nt), _weight(E, F, X), c3, sel)
    if gpt:
        gate = _op("ADD_ID", gate.ne, gate, _weight(F, X), sel)
    act = _op("GLU", gate.ne, gate, up)
    ex = _op("MUL_MAT_ID", (E, K, nt), _weight(F, E, X), act, sel)
    if gpt:
        ex = _op("ADD_ID", ex.ne, ex, _weight(E, X), sel)
    ex = _op("MUL", ex.ne, ex, w)
    g.expand(ex)
    views = []
    for i in range(K):
        v = _view(ex, (E, nt), (4, ex.nb[2], ex.nb[2] * nt, ex.nb[2] * nt), offs=i * ex.nb[1])
        views.append(v)
        g.expand(v)
    out = views[0]
    for v in views[1:]:
        out = _op("ADD", (E, nt), out, v)
        g.expand(out)
    if K == 1:
        out = _op("CONT", (E, nt), out)
    return out


# Head sizes CUDA's flash-attention kernels take (ggml-cuda/fattn.cu, K = V); for any other the op
# falls back to the CPU, the graph splits per layer and the CUDA replay below no longer applies.
CUDA_FA_HEAD_DIMS = (40, 64, 72, 80, 96, 112, 128, 256)

SUPPORTED_ARCHS = ("gpt-oss", "qwen3moe")
VERIFIED_ARCHS = ("gpt-oss",)     # replay checked against the engine's log (tests/test_plan_vs_llamacpp.py)


def _shape(arch: Architecture) -> _Shape:
    return _Shape(arch.arch, arch.n_embd, arch.n_layer, arch.n_head, arch.n_head_kv, arch.head_dim, arch.n_expert,
                  arch.n_expert_used, arch.n_ff_exp, bool(arch.n_swa_layers), max(arch.n_vocab, 1))


# llama.cpp builds whose graph is replayed: b11549 (the pinned xllamacpp; 2026-10) and 0c1e57098,
# the tree research/gpu-standin.md measured on CUDA (before the mixed token/embedding input path).
BUILDS = ("b11549", "0c1e57098")
# The default follows the one pin (engines.embedded.PINNED_XLLAMACPP): a new pin whose graph is not
# replayed here fails loudly below instead of planning with an older build's graph.
DEFAULT_BUILD = LLAMA_CPP_RELEASE


def compute_buffers(arch: Architecture, context: int, slots: int = 1, ubatch: int = 2048, kv_type: str = "f16",
                    unified: bool = True, backend: str = "cpu", swa_full: bool = False,
                    build: str = DEFAULT_BUILD) -> dict[str, int]:
    """The compute buffers llama.cpp reserves: {"CPU": bytes} for the CPU backend, {"CUDA0": …,
    "CUDA_Host": …} for a CUDA build with every layer on the GPU (flash attention on)."""
    if arch.arch not in SUPPORTED_ARCHS:
        raise ValueError(f"no llama.cpp graph for architecture {arch.arch!r} (known: {', '.join(SUPPORTED_ARCHS)})")
    if build not in BUILDS:
        raise ValueError(f"build {build!r}: replayed builds are {', '.join(BUILDS)} (a new xllamacpp pin needs its "
                         "llama.cpp graph checked against the engine's log and added to llamacpp_memory.BUILDS)")
    lay = kv_layout(arch, context, slots, ubatch, unified, swa_full)
    return dict(_compute(_shape(arch), lay, slots, kv_type, backend, build == "b11549"))


@lru_cache(maxsize=512)
def _compute(s: _Shape, lay: KVLayout, slots: int, kv_type: str, backend: str,
             mixed: bool) -> tuple[tuple[str, int], ...]:
    # sched_reserve: the prompt graph (n_tokens = min(n_ctx, n_ubatch), rounded up to a multiple of the
    # slots, one output per slot) bounds the token-generation graph in every tensor, so it sets the size.
    n_tokens = min(lay.n_ctx, lay.ubatch)
    n_tokens = -(-n_tokens // slots) * slots
    g, host = _build(s, lay, n_tokens, min(n_tokens, slots), kv_type, mixed)
    if backend == "cpu":
        a = _DynAlloc(CPU_ALIGNMENT)
        _gallocr(g.nodes, g.leafs, [a])
        return (("CPU", a.max_size),)
    if backend != "cuda":
        raise ValueError(f"backend {backend!r}: expected 'cpu' or 'cuda'")
    return _cuda(g, host)


def _cuda(g: _Graph, host: set[int]) -> tuple[tuple[str, int], ...]:
    """ggml_backend_sched with CUDA0 + CPU (ggml-backend.cpp, split_graph): the graph inputs and the
    GET_ROWS on the host-resident token embeddings run on the CPU (buffer `CUDA_Host`); every other
    node on the device (`CUDA0`), in one split whose inputs are copied to the device where the split
    starts (an input_dep + input_cpy pair per input, as in the scheduler's graph copy)."""
    dev, hst = _DynAlloc(CUDA_ALIGNMENT), _DynAlloc(CPU_ALIGNMENT)
    for leaf in g.leafs:
        leaf.buf = 1
    head = [n for n in g.nodes if id(n) in host]
    body = [n for n in g.nodes if id(n) not in host]
    for n in head:
        n.buf = 1
    prologue: list[_T] = []
    copies: dict[int, _T] = {}
    for n in body:
        n.buf = 0
        for j, s in enumerate(n.src):
            if s is None or s.external or s.buf == 0:
                continue
            c = copies.get(id(s))
            if c is None:
                c = _T("NONE", s.ne, s.typ)            # ggml_dup_tensor_layout, a node of the copy
                c.buf = 0
                dep = _T("DEP", s.ne, s.typ, (s,))      # ggml_view_tensor with src[0] = input (op NONE)
                dep.buf = 1
                prologue += [dep, c]
                copies[id(s)] = c
            n.src[j] = c
    _gallocr(head + prologue + body, g.leafs, [dev, hst])
    return (("CUDA0", dev.max_size), ("CUDA_Host", hst.max_size))


# ------------------------------------------------------------------------------------------------
# Two boxes: llama.cpp's layer split over devices (a pair over RPC), with pipeline parallelism.

SCHED_MAX_COPIES = 4     # GGML_SCHED_MAX_COPIES: the input copies a pipeline-parallel scheduler keeps


def compute_buffers_split(arch: Architecture, context: int, slots: int, ubatch: int, kv_type: str, unified: bool,
                          swa_full: bool, devices: tuple[int, ...], aligns: tuple[int, ...],
                          pipeline: bool = True, build: str = DEFAULT_BUILD) -> tuple[int, ...]:
    """The compute buffer of each device and then of the host, for a model split by layers: `devices[il]` is the
    device of layer il (n_layer + 1 entries, the last the output layer), `aligns` each device's alignment.
    ggml_backend_sched as b11549 runs it (ggml-backend.cpp): each node runs on its layer's device (a layer's
    first norm included: assigning it by "expand down" to the previous layer's device gave one 22.5 MiB tensor
    per copy too many against the H200 pair's log); a split's inputs from another buffer are copied to it once
    per device; with pipeline parallelism (llama_context: more than one device, every layer offloaded, all
    devices async) every graph input and every split input is kept in SCHED_MAX_COPIES copies that are
    allocated first and never reused. Checked against llama-server's log of gpt-oss-120b split 19/18 over RPC
    on two H200s: RPC0 2727.84, CUDA0 2525.28 and CPU 2313.41 MiB, each to the logged 0.01 MiB (records/pair)."""
    if arch.arch not in SUPPORTED_ARCHS:
        raise ValueError(f"no llama.cpp graph for architecture {arch.arch!r} (known: {', '.join(SUPPORTED_ARCHS)})")
    lay = kv_layout(arch, context, slots, ubatch, unified, swa_full)
    n_tokens = min(lay.n_ctx, lay.ubatch)
    n_tokens = -(-n_tokens // slots) * slots
    g, host = _build(_shape(arch), lay, n_tokens, min(n_tokens, slots), kv_type, build == "b11549")
    n_dev = len(aligns)
    copies = SCHED_MAX_COPIES if pipeline and n_dev > 1 else 1
    H = n_dev
    allocs = [_DynAlloc(a) for a in aligns] + [_DynAlloc(CPU_ALIGNMENT)]
    for leaf in g.leafs:
        leaf.buf = H
    head = [n for n in g.nodes if id(n) in host]
    for n in head:
        n.buf = H
    body = [n for n in g.nodes if id(n) not in host]
    for n in body:            # each node on its layer's device; the input stage's on the first layer's
        n.buf = devices[min(max(n.layer, 0), len(devices) - 1)]
    made: dict[tuple[int, int], _T] = {}
    split_inputs: list[_T] = []
    nodes: list[_T] = list(head)
    i = 0
    while i < len(body):                             # one split per run of nodes on the same device
        j = i
        while j < len(body) and body[j].buf == body[i].buf:
            j += 1
        prologue: list[_T] = []
        for n in body[i:j]:
            for k, p in enumerate(n.src):
                if p is None or p.external or p.buf == n.buf:
                    continue
                c = made.get((id(p), n.buf))
                if c is None:
                    group = []
                    for _ in range(copies):
                        t = _T("NONE", p.ne, p.typ)
                        t.buf = n.buf
                        if copies > 1:
                            t.input = t.output = True
                        group.append(t)
                    c = group[0]
                    made[(id(p), n.buf)] = c
                    split_inputs += group[1:] if copies > 1 else []
                    if copies > 1:
                        split_inputs.insert(len(split_inputs) - (copies - 1), c)
                    dep = _T("DEP", p.ne, p.typ, (p,))
                    dep.buf = p.buf
                    prologue += [dep, c]
                n.src[k] = c
        nodes += prologue + body[i:j]
        i = j
    leafs = list(g.leafs)
    if copies > 1:
        graph_inputs = [x for x in g.leafs if x.input]
        extra = []
        for x in graph_inputs:
            x.output = True
            extra.append(x)
            for _ in range(copies - 1):
                t = _T("NONE", x.ne, x.typ)
                t.buf, t.input, t.output = H, True, True
                extra.append(t)
        leafs = extra + split_inputs + [x for x in g.leafs if not x.input]
    _gallocr(nodes, leafs, allocs)
    return tuple(a.max_size for a in allocs)
