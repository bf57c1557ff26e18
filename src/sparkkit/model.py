"""What a model is, as far as memory and speed are concerned: its architecture and files.

The architecture comes from the model itself when it is on disk (GGUF metadata read with the
`gguf` package), else from the catalogue below, whose numbers carry their sources.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ParameterError, SparkkitError

GIB = 1024**3


@dataclass(frozen=True)
class Architecture:
    name: str
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_embd: int
    sliding_window: int          # 0 = no sliding-window layers
    n_swa_layers: int            # gpt-oss: every other layer is sliding-window
    n_expert: int
    n_expert_used: int
    context_max: int
    n_vocab: int
    weights_bytes: int           # what the engine loads (GGUF size)
    params_total: float
    params_active: float
    active_bytes_per_token: float  # weights read per decoded token (MXFP4 experts, 8-bit attention)

    @property
    def n_full_layers(self) -> int:
        return self.n_layer - self.n_swa_layers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CatalogueEntry:
    arch: Architecture
    hf_repo: str | None            # where 03 downloads the GGUF from
    hf_files: tuple[str, ...]      # shards; the first is what -m points at
    sources: str


CATALOGUE: dict[str, CatalogueEntry] = {
    # Shapes: openai/gpt-oss-120b config.json; size: ggml-org/gpt-oss-120b-GGUF (59.02 GiB,
    # 116.83 B params, llama.cpp benches/dgx-spark.md); active bytes: 3.594 GB/token measured
    # from tensor sizes in research/gpu-standin.md §6 (attention Q8_0 + 4 experts MXFP4 + head).
    "gpt-oss-120b": CatalogueEntry(
        Architecture("gpt-oss-120b", n_layer=36, n_head=64, n_head_kv=8, head_dim=64, n_embd=2880,
                     sliding_window=128, n_swa_layers=18, n_expert=128, n_expert_used=4, context_max=131072,
                     n_vocab=201088, weights_bytes=int(59.02 * GIB), params_total=116.83e9, params_active=5.1e9,
                     active_bytes_per_token=3.594e9),
        "ggml-org/gpt-oss-120b-GGUF",
        ("gpt-oss-120b-mxfp4-00001-of-00003.gguf", "gpt-oss-120b-mxfp4-00002-of-00003.gguf",
         "gpt-oss-120b-mxfp4-00003-of-00003.gguf"),
        "HF openai/gpt-oss-120b config.json; ggml-org/gpt-oss-120b-GGUF; research/gpu-standin.md §6"),
    # openai/gpt-oss-20b config.json (24 layers, 32 experts); ggml-org/gpt-oss-20b-GGUF 11.27 GiB, 20.91 B.
    "gpt-oss-20b": CatalogueEntry(
        Architecture("gpt-oss-20b", n_layer=24, n_head=64, n_head_kv=8, head_dim=64, n_embd=2880,
                     sliding_window=128, n_swa_layers=12, n_expert=32, n_expert_used=4, context_max=131072,
                     n_vocab=201088, weights_bytes=int(11.27 * GIB), params_total=20.91e9, params_active=3.6e9,
                     active_bytes_per_token=2.575e9),
        "ggml-org/gpt-oss-20b-GGUF", ("gpt-oss-20b-mxfp4.gguf",),
        "HF openai/gpt-oss-20b config.json; ggml-org/gpt-oss-20b-GGUF; research/gpu-standin.md §6"),
}

MODEL_CHOICES = ("auto", "embedded", *CATALOGUE)


def _meta(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.contents()
    return value


def from_gguf(path: str | Path) -> Architecture:
    """Read the architecture from a GGUF file's metadata (split files: pass the first shard)."""
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # gguf raises ValueError/struct errors on non-GGUF input
        raise ParameterError("model", str(path), f"a GGUF file (reading it failed: {e})") from e
    arch = _meta(reader, "general.architecture")
    if not arch:
        raise ParameterError("model", str(path), "a GGUF file with general.architecture")

    def k(name: str, default=None):
        v = _meta(reader, f"{arch}.{name}")
        return default if v is None else v

    n_layer = int(k("block_count"))
    window = int(k("attention.sliding_window", 0) or 0)
    n_expert = int(k("expert_count", 0) or 0)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else 0
    params = sum(int(t.n_elements) for t in reader.tensors)
    size = sum(p.stat().st_size for p in _shards(path))
    head_dim = int(k("attention.key_length", 0) or int(k("embedding_length")) // int(k("attention.head_count")))
    active_fraction = (int(k("expert_used_count", 0) or 0) / n_expert) if n_expert else 1.0
    expert_bytes = sum(int(t.n_bytes) for t in reader.tensors if "_exps." in t.name)
    return Architecture(
        name=str(_meta(reader, "general.name") or path.stem), n_layer=n_layer,
        n_head=int(k("attention.head_count")), n_head_kv=int(k("attention.head_count_kv")),
        head_dim=head_dim, n_embd=int(k("embedding_length")), sliding_window=window,
        # gpt-oss alternates sliding/full attention (llama.cpp: set_swa_pattern(2))
        n_swa_layers=n_layer // 2 if (window and arch == "gpt-oss") else 0,
        n_expert=n_expert, n_expert_used=int(k("expert_used_count", 0) or 0),
        context_max=int(k("context_length")), n_vocab=n_vocab, weights_bytes=size,
        params_total=float(params), params_active=float(params) * (active_fraction if n_expert else 1.0),
        active_bytes_per_token=float(size - expert_bytes + expert_bytes * active_fraction),
    )


def _shards(first: Path) -> list[Path]:
    """All shards of a split GGUF (name-00001-of-0000N.gguf), or just the file."""
    name = first.name
    if "-00001-of-" in name:
        total = name.split("-of-")[1].split(".")[0]
        return [first.with_name(name.replace("-00001-of-", f"-{i:05d}-of-")) for i in range(1, int(total) + 1)
                if first.with_name(name.replace("-00001-of-", f"-{i:05d}-of-")).exists()]
    return [first]


def architecture(model: str, path: str | Path | None = None) -> Architecture:
    """The model's architecture: from its file when present, else from the catalogue."""
    if path and Path(path).exists():
        return from_gguf(path)
    if model in CATALOGUE:
        return CATALOGUE[model].arch
    if model == "embedded":
        from .tinymodel import TinySpec
        return embedded_architecture(TinySpec())
    raise SparkkitError(f"no architecture known for {model!r} and no model file at {path}")


def embedded_architecture(spec) -> Architecture:
    """The embedded tiny model's shapes, known before 03 generates it (sizes are approximate)."""
    approx_bytes = 220 * 1024
    return Architecture(
        name="tiny-gpt-oss", n_layer=spec.n_layer, n_head=spec.n_head, n_head_kv=spec.n_head_kv,
        head_dim=spec.head_dim, n_embd=spec.n_embd, sliding_window=spec.sliding_window,
        n_swa_layers=spec.n_layer // 2, n_expert=spec.n_expert, n_expert_used=spec.n_expert_used,
        context_max=spec.context_length, n_vocab=350, weights_bytes=approx_bytes, params_total=1e5,
        params_active=5e4, active_bytes_per_token=approx_bytes / 2)


def resolve(model: str, target: str) -> str:
    """`auto` → gpt-oss-120b on a GB10 box, the embedded tiny model elsewhere."""
    from .errors import check_choice
    check_choice("model", model, MODEL_CHOICES)
    if model == "auto":
        return "gpt-oss-120b" if target == "gb10" else "embedded"
    return model


def with_size(arch: Architecture, weights_bytes: int) -> Architecture:
    return replace(arch, weights_bytes=weights_bytes)
