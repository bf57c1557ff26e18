"""The full-scale device script, dry: tools/fullscale/run.sh on this machine with the embedded tiny model
under gpt-oss-120b's names (FULLSCALE_TINY=1), so the script the GPU call runs cannot rot unseen."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

from sparkkit.serve import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_full_scale_script_runs_dry_on_a_machine_without_a_gpu(tmp_path):
    res = tmp_path / "res"
    env = {**os.environ, "PYTHON": sys.executable, "SKIP_WHEELS": "1", "FULLSCALE_TINY": "1",
           "FULLSCALE_MODEL": "gpt-oss-120b", "MODEL_DIR": str(tmp_path / "models"), "HUB_ROOT": str(tmp_path / "hub"),
           "GEN_DIR": str(tmp_path / "gen"), "RES": str(res), "OUT": str(tmp_path / "out"), "WAIT": "400",
           "HUB_PORT": str(free_port())}
    out = subprocess.run(["bash", "tools/fullscale/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    phases = [line.split("\t")[0] for line in (res / "phases.tsv").read_text().splitlines()]
    assert phases == ["setup", "placement", "hub: generate", "hub: 3 file(s)", "hub: ready", "rates",
                      "download killed with SIGKILL", "sparkkit run", "total"], phases
    shards = sorted(p.name for p in (tmp_path / "hub" / "ggml-org" / "gpt-oss-120b-GGUF").glob("*.gguf"))
    assert shards == [f"gpt-oss-120b-mxfp4-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    run_log = (res / "logs" / "sparkkit-run.txt").read_text()
    # the owner's command ran, with the owner's choices; on a CPU box 01 refuses the 120b, as it should
    assert run_log.startswith("$ sparkkit run --model gpt-oss-120b --hf-endpoint http://127.0.0.1:")
    assert re.search(r"^01-preflight +fail ", run_log, re.M), run_log[-2000:]       # the summary's row for 01
    assert json.loads((res / "logs" / "hub-after.json").read_text())       # the Hub's counters came back
    assert (tmp_path / "out" / "fullscale.tgz").stat().st_size > 0
