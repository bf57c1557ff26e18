"""Copy one stand-in run's records into the repo (small): records/gpu-standin/<name>/.

    python tools/gpu_standin/collect.py /work/.device/N/standin.tgz records/gpu-standin/<name>

Keeps summary.txt, results.json, llama-bench.json, every runbook's JSON record, the executed
notebooks with their images dropped (the numbers stay in the text outputs), and the log excerpts.
"""
from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import nbformat


def write_without_images(src: Path, dest: Path) -> None:
    """An executed notebook with its images and widget views dropped (the numbers stay in the text outputs)."""
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            for k in [k for k in data if k.startswith("image/") or k == "application/vnd.jupyter.widget-view+json"]:
                del data[k]
    nbformat.write(nb, dest)


def main(src: str, dest: str) -> int:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(src) as tar:
            tar.extractall(tmp, filter="data")
        root = next(Path(tmp).iterdir())
        for name in ("summary.txt", "results.json", "llama-bench.json"):
            if (root / name).exists():
                shutil.copy(root / name, out / name)
        (out / "runs").mkdir(exist_ok=True)
        for p in sorted((root / "runs").glob("*.json")):
            shutil.copy(p, out / "runs" / p.name)
        for p in sorted((root / "runs").glob("*.ipynb")):
            write_without_images(p, out / "runs" / p.name)
        (out / "logs").mkdir(exist_ok=True)
        for p in sorted((root / "logs").glob("*")):
            if p.suffix in (".txt", ".err"):
                shutil.copy(p, out / "logs" / p.name)
    print(f"{out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
