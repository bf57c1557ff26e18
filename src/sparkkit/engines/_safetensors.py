"""03 for the engines that load the maker's safetensors (SGLang, vLLM): the root of the Hub repo, no
`original/` (the unconverted checkpoint) and no `metal/` (Apple's) — about 65 GB for gpt-oss-120b
instead of 130 — resumable and verified by sparkkit.download."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ParameterError


def place(engine: str, model: str, model_dir: str, hf_endpoint: str = "", revision: str = "main",
          scan_roots: dict[str, Any] | None = None, **_: Any):
    from .. import records
    from ..download import DEFAULT_EXCLUDE, Placed, download_files
    from ..model import WEIGHTS_SOURCES
    repo = WEIGHTS_SOURCES.get(model, {}).get("safetensors")
    if not repo:
        raise ParameterError("model", model, f"a catalogue model with safetensors ({', '.join(WEIGHTS_SOURCES)}) "
                                             f"for {engine}")
    dest = Path(model_dir or records.home() / "models").expanduser() / repo.replace("/", "--")
    got = download_files(repo, None, dest, endpoint=hf_endpoint or None, revision=revision, exclude=DEFAULT_EXCLUDE,
                         family=model, copies_in=dest.parent, scan_roots=scan_roots)
    verified = all(f.get("verified") for f in got.files) if got.files else None
    return Placed(model, str(dest), got.size_bytes, f"Hub {repo} (safetensors, without original/ and metal/)",
                  got.seconds, repo=repo, revision=got.revision, files=got.files, fetched_bytes=got.fetched_bytes,
                  resumed_bytes=got.resumed_bytes, mb_per_s=got.mb_per_s, verified=verified,
                  notes=list(got.notes), other_copies=list(got.other_copies))
