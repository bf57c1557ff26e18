"""Put the model on disk (runbook 03): generate the embedded one, or download a GGUF, or generate
a full-scale stand-in (`source="generate"`: the catalogue model's exact shapes and tensor types,
scripted weights, so every endpoint answers valid harmony; for GPUs without the real weights).

Downloads go through huggingface_hub, which writes each file as `*.incomplete` and renames it
only once complete, so an interrupted download never looks like a finished one; re-running
resumes. `endpoint` points huggingface_hub at another Hub (a mirror, or a local test server).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import records
from .errors import ParameterError, SparkkitError
from .model import CATALOGUE


@dataclass
class Placed:
    model: str
    path: str          # what the engine's -m gets (first shard)
    size_bytes: int
    source: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def record(self) -> tuple[str, str, dict[str, Any]]:
        return "pass", f"{self.model}: {self.size_bytes / 2**20:.2f} MiB at {self.path} ({self.source})", self.to_dict()


def embedded_spec():
    """The embedded model: scripted to call `Read` on the probe file when tools are offered."""
    from .tinymodel import TinySpec, common_words
    return TinySpec(tool_name="Read", tool_args=json.dumps({"file_path": str(records.probe_file())}),
                    vocab_words=common_words())


def place_embedded(model_dir: Path) -> Placed:
    from .tinymodel import generate
    t0 = time.monotonic()
    g = generate(Path(model_dir) / "tiny-gpt-oss.gguf", embedded_spec())
    return Placed("embedded", str(g.path), g.size_bytes, "generated (scripted tiny gpt-oss)", time.monotonic() - t0)


SOURCES = ("auto", "hub", "generate")


def place_generated(model: str, model_dir: Path, chat_template: str = "") -> Placed:
    """`model`'s real shapes and tensor types with scripted weights (tinymodel.gpt_oss_spec), streamed
    to `model_dir`; scripted to call `Read` on the probe file when tools are offered, like the
    embedded model."""
    from .tinymodel import GPT_OSS_SHAPES, common_words, generate, gpt_oss_spec
    if model not in GPT_OSS_SHAPES:
        raise ParameterError("source", "generate", f"'hub' for {model} (generate knows {', '.join(GPT_OSS_SHAPES)})")
    template = None
    if chat_template:
        p = Path(chat_template).expanduser()
        if not p.is_file():
            raise ParameterError("chat_template", chat_template, "the path of a Jinja file, or empty")
        template = p.read_text(encoding="utf-8")
    spec = gpt_oss_spec(model, tool_name="Read", tool_args=json.dumps({"file_path": str(records.probe_file())}),
                        vocab_words=common_words(), chat_template=template)
    t0 = time.monotonic()
    g = generate(Path(model_dir) / f"{model}-scripted.gguf", spec)
    how = f"generated: {model} shapes, scripted weights, {g.size_bytes / (time.monotonic() - t0) / 1e9:.2f} GB/s"
    return Placed(model, str(g.path), g.size_bytes, how + (f", template {Path(chat_template).name}" if template else ""),
                  time.monotonic() - t0)


def place_download(model: str, model_dir: Path, endpoint: str | None = None, token: str | None = None) -> Placed:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    entry = CATALOGUE[model]
    target = Path(model_dir) / model
    t0 = time.monotonic()
    paths = []
    for name in entry.hf_files:
        try:   # shows a progress bar per file; resumes a partial download
            paths.append(Path(hf_hub_download(entry.hf_repo, name, local_dir=target, endpoint=endpoint, token=token)))
        except (HfHubHTTPError, OSError) as e:
            raise SparkkitError(f"downloading {entry.hf_repo}/{name} failed: {e}. Re-run 03 to resume; "
                                "check the network and disk space (01-preflight)") from e
    return Placed(model, str(paths[0]), sum(p.stat().st_size for p in paths), f"hf://{entry.hf_repo}",
                  time.monotonic() - t0)


def place(model: str, model_dir: str = "", endpoint: str | None = None, source: str = "auto",
          chat_template: str = "") -> Placed:
    from .errors import check_choice
    check_choice("source", source, SOURCES)
    directory = Path(model_dir).expanduser() if model_dir else records.home() / "models"
    if directory.exists() and not directory.is_dir():
        raise ParameterError("model_dir", model_dir, "a directory (it is a file)")
    directory.mkdir(parents=True, exist_ok=True)
    if model == "embedded":
        return place_embedded(directory)
    if model in CATALOGUE and source == "generate":
        return place_generated(model, directory, chat_template)
    if model in CATALOGUE:
        return place_download(model, directory, endpoint)
    raise ParameterError("model", model, ", ".join(["embedded", *CATALOGUE]))


def run(model_dir: str = "", hf_endpoint: str = "", source: str = "auto", chat_template: str = "") -> Placed:
    """Runbook 03: place the model 01 chose (default: what `auto` means on this host)."""
    from . import host

    state = records.load_state()
    if "choice" not in state:
        host.run()
        state = records.load_state()
    choice = state["choice"]
    placed = place(choice["model"], model_dir or choice.get("model_dir", ""), hf_endpoint or None, source,
                   chat_template)
    alias = "tiny-gpt-oss" if placed.model == "embedded" else placed.model
    records.update_state("model", {**placed.to_dict(), "alias": alias, "placed_at": records.now()})
    return placed
