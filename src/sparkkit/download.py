"""Put the model on disk (runbook 03): generate the embedded one, or download a GGUF.

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


def place(model: str, model_dir: str = "", endpoint: str | None = None) -> Placed:
    directory = Path(model_dir).expanduser() if model_dir else records.home() / "models"
    if directory.exists() and not directory.is_dir():
        raise ParameterError("model_dir", model_dir, "a directory (it is a file)")
    directory.mkdir(parents=True, exist_ok=True)
    if model == "embedded":
        return place_embedded(directory)
    if model in CATALOGUE:
        return place_download(model, directory, endpoint)
    raise ParameterError("model", model, ", ".join(["embedded", *CATALOGUE]))


def run(model_dir: str = "", hf_endpoint: str = "") -> Placed:
    """Runbook 03: place the model 01 chose (default: what `auto` means on this host)."""
    from . import host

    state = records.load_state()
    if "choice" not in state:
        host.run()
        state = records.load_state()
    choice = state["choice"]
    placed = place(choice["model"], model_dir or choice.get("model_dir", ""), hf_endpoint or None)
    alias = "tiny-gpt-oss" if placed.model == "embedded" else placed.model
    records.update_state("model", {**placed.to_dict(), "alias": alias, "placed_at": records.now()})
    return placed
