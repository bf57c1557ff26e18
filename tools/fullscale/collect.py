"""Copy a full-scale run's records into the repo: records/fullscale/<name>/.

    python tools/fullscale/collect.py /work/.device/N/fullscale.tgz records/fullscale/<name> [more.tgz …]

Keeps phases.tsv, facts.txt, the log excerpts, every runbook's JSON record and the executed notebooks
with their images dropped (the numbers stay in the text outputs). Later tarballs (a re-run) add theirs.
"""
from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu_standin"))
from collect import write_without_images  # noqa: E402  (the GPU stand-in's, one way to drop images)


def main(dest: str, *tarballs: str) -> int:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for src in tarballs:
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(src) as tar:
            tar.extractall(tmp, filter="data")
            root = Path(tmp)
            for p in root.rglob("*"):
                if not p.is_file():
                    continue
                rel = p.relative_to(root)
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                if p.suffix == ".ipynb":
                    write_without_images(p, out / rel)
                else:
                    shutil.copy(p, out / rel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[2], sys.argv[1], *sys.argv[3:]) if len(sys.argv) >= 3 else 2)
